"""Status: RuntimeReady and NetworkReady conditions, runtime handlers and features."""

from __future__ import annotations

import json

from cri.api import api_pb2
from cri.runtime.daemon import Runtime


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
    resp = api_pb2.StatusResponse(
        status=api_pb2.RuntimeStatus(conditions=conditions),
        runtime_handlers=handlers(rt),
        features=api_pb2.RuntimeFeatures(supplemental_groups_policy=True),
    )
    if verbose:
        resp.info["config"] = json.dumps({
            "cgroupDriver": rt.config.runtime.cgroup_driver,
            "cniConfDir": rt.config.network.conf_dir,
            "cniPluginDirs": rt.config.network.plugin_dirs,
            "cniNetwork": net.network,
            "podCIDR": rt.network.pod_cidr,
            "defaultRuntime": rt.handlers.default,
            "runtimeHandlers": {h.name: {
                "runtimePath": h.config.runtime_path, "runtimeRoot": h.config.runtime_root,
                "monitorPath": h.config.monitor_path,
                "allowedAnnotations": h.config.allowed_annotations,
                "privilegedWithoutHostDevices": h.config.privileged_without_host_devices,
            } for h in rt.handlers},
        })
    return resp


def handlers(rt: Runtime) -> list[api_pb2.RuntimeHandler]:
    """Each configured handler by name, and the default once more as "" (the kubelet's name
    for it), each with the features of its own runtime."""
    out = []
    for h in rt.handlers:
        # User namespaces stay off: runc 1.1 has no idmapped mounts to give a pod's files
        # the mapped owners.
        features = api_pb2.RuntimeHandlerFeatures(
            recursive_read_only_mounts=h.rro_supported, user_namespaces=False)
        if h.name == rt.handlers.default:
            out.append(api_pb2.RuntimeHandler(name="", features=features))
        out.append(api_pb2.RuntimeHandler(name=h.name, features=features))
    return out
