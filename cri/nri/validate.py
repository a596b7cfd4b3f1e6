"""ValidateContainerAdjustment: plugins subscribed to it (validators, such as NRI's
default-validator) see what all plugins together asked for a container being created, and
which plugin asked for what, and may reject it; a rejection fails the CreateContainer. They
are asked at once, after every plugin has adjusted the container. A validator that does not
answer fails the creation too: an unchecked adjustment must not slip through."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from cri.nri.api import api_pb2 as nri
from cri.nri.owners import Owners
from cri.nri.plugin import Plugin, PluginError

# Owners' field names (cri/nri/adjust.py, cri/nri/resources.py) as NRI's Field enum: one
# owner per field, or one per key of a compound field.
_SIMPLE = {
    "args": "Args", "oom_score_adj": "OomScoreAdj", "memory limit": "MemLimit",
    "memory reservation": "MemReservation", "memory swap": "MemSwapLimit",
    "memory kernel": "MemKernelLimit", "memory kernel_tcp": "MemTCPLimit",
    "memory swappiness": "MemSwappiness", "memory disable_oom_killer": "MemDisableOomKiller",
    "memory use_hierarchy": "MemUseHierarchy", "cpu shares": "CPUShares",
    "cpu quota": "CPUQuota", "cpu period": "CPUPeriod",
    "cpu realtime_runtime": "CPURealtimeRuntime", "cpu realtime_period": "CPURealtimePeriod",
    "cpuset cpus": "CPUSetCPUs", "cpuset mems": "CPUSetMems", "pids limit": "PidsLimit",
    "blockio class": "BlockioClass", "rdt class": "RdtClass",
}
_COMPOUND = {
    "annotation": "Annotations", "mount": "Mounts", "env": "Env", "device": "Devices",
    "rlimit": "Rlimits", "hugepage limit": "HugepageLimits",
    "unified cgroup resource": "CgroupsUnified",
}


def owning_plugins(owners: Owners) -> nri.OwningPlugins:
    out = nri.OwningPlugins()
    for ctr_id, field, key, plugin in owners.claims():
        fo = out.owners[ctr_id]
        if field in _COMPOUND:
            fo.compound[nri.Field.Value(_COMPOUND[field])].owners[key] = plugin
        elif field in _SIMPLE:
            fo.simple[nri.Field.Value(_SIMPLE[field])] = plugin
    for ctr_id, plugins in owners.hooks.items():
        out.owners[ctr_id].simple[nri.OciHooks] = ",".join(plugins)
    return out


async def validate(validators: Sequence[Plugin], request: nri.ValidateContainerAdjustmentRequest
                   ) -> None:
    """PluginError naming the validator unless all of ``validators`` accept ``request``."""
    replies = await asyncio.gather(*(
        v.call("ValidateContainerAdjustment", request, nri.ValidateContainerAdjustmentResponse)
        for v in validators))
    for v, reply in zip(validators, replies, strict=True):
        if reply is None:
            raise PluginError(f"NRI validator {v.full_name} did not answer")
        if reply.reject:
            raise PluginError(f"NRI validator {v.full_name} rejected the adjustments of "
                              f"container {request.container.name!r}: "
                              f"{reply.reason or 'no reason given'}")
