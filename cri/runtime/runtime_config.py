"""RuntimeConfig (the cgroup driver the kubelet must match) and UpdateRuntimeConfig."""

from __future__ import annotations

import logging

from cri.api import api_pb2
from cri.runtime.daemon import Runtime

log = logging.getLogger(__name__)


def runtime_config(rt: Runtime) -> api_pb2.RuntimeConfigResponse:
    driver = api_pb2.CgroupDriver.SYSTEMD if rt.cgroups.systemd_cgroup else \
        api_pb2.CgroupDriver.CGROUPFS
    return api_pb2.RuntimeConfigResponse(
        linux=api_pb2.LinuxRuntimeConfiguration(cgroup_driver=driver))


def update_runtime_config(rt: Runtime, cfg: api_pb2.RuntimeConfig) -> None:
    cidr = cfg.network_config.pod_cidr
    if cidr and cidr != rt.network.pod_cidr:
        # The CNI config owns the pod subnet; the kubelet's CIDR is recorded for operators.
        log.info("pod CIDR from the kubelet: %s", cidr)
        rt.network.pod_cidr = cidr
