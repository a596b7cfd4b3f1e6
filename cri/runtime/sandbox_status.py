"""PodSandboxStatus: answered from memory; verbose adds a JSON "info" map."""

from __future__ import annotations

import json

from cri.api import api_pb2
from cri.runtime.daemon import Runtime
from cri.store.sandbox import Sandbox, SandboxState


def state_value(pod: Sandbox) -> api_pb2.PodSandboxState.ValueType:
    if pod.status.state is SandboxState.READY:
        return api_pb2.PodSandboxState.SANDBOX_READY
    return api_pb2.PodSandboxState.SANDBOX_NOTREADY


def pod_sandbox_status(rt: Runtime, pod_id: str, verbose: bool
                       ) -> api_pb2.PodSandboxStatusResponse:
    pod = rt.sandboxes.lookup(pod_id)
    cfg = pod.config
    ips = pod.status.ips if pod.status.network_ready else []
    status = api_pb2.PodSandboxStatus(
        id=pod.id,
        metadata=cfg.metadata,
        state=state_value(pod),
        created_at=pod.meta.created_at,
        network=api_pb2.PodSandboxNetworkStatus(
            ip=ips[0] if ips else "",
            additional_ips=[api_pb2.PodIP(ip=ip) for ip in ips[1:]],
        ),
        linux=api_pb2.LinuxPodSandboxStatus(
            namespaces=api_pb2.Namespace(options=cfg.linux.security_context.namespace_options)
        ),
        labels=cfg.labels,
        annotations=cfg.annotations,
        runtime_handler=pod.meta.runtime_handler,
    )
    resp = api_pb2.PodSandboxStatusResponse(status=status)
    if verbose:
        resp.info["info"] = json.dumps(info(rt, pod))
    return resp


def info(rt: Runtime, pod: Sandbox) -> dict[str, object]:
    return {
        "pid": pod.status.pid,
        "netNamespacePath": pod.meta.netns_path,
        "hostNetwork": not pod.meta.netns_path,
        "cgroupParent": pod.meta.cgroup_parent,
        "hostname": pod.meta.hostname,
        "runDir": pod.meta.run_dir,
        "infraExitCode": pod.status.infra_exit_code,
        "cniResult": rt.network.cached_result(pod),
        "runtimeHandler": pod.meta.handler,
    }
