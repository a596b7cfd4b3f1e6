"""Status: RuntimeReady and NetworkReady conditions, runtime handlers and features."""

from __future__ import annotations

import json

from cri.api import api_pb2
from cri.runtime.daemon import Runtime

HANDLERS = ("", "runc")


def status(rt: Runtime, verbose: bool) -> api_pb2.StatusResponse:
    net = rt.network.readiness()
    conditions = [
        api_pb2.RuntimeCondition(type="RuntimeReady", status=True),
        api_pb2.RuntimeCondition(
            type="NetworkReady",
            status=net.ready,
            reason="" if net.ready else "NetworkPluginNotReady",
            message=net.message,
        ),
    ]
    # User namespaces stay off: runc 1.1 has no idmapped mounts to give a pod's files the
    # mapped owners.
    features = api_pb2.RuntimeHandlerFeatures(
        recursive_read_only_mounts="rro" in rt.mount_options, user_namespaces=False)
    resp = api_pb2.StatusResponse(
        status=api_pb2.RuntimeStatus(conditions=conditions),
        runtime_handlers=[api_pb2.RuntimeHandler(name=h, features=features) for h in HANDLERS],
        features=api_pb2.RuntimeFeatures(supplemental_groups_policy=True),
    )
    if verbose:
        resp.info["config"] = json.dumps({
            "cgroupDriver": rt.config.runtime.cgroup_driver,
            "cniConfDir": rt.config.network.conf_dir,
            "cniPluginDirs": rt.config.network.plugin_dirs,
            "cniNetwork": net.network,
            "podCIDR": rt.network.pod_cidr,
        })
    return resp
