"""The CDI devices a CreateContainer asks for, resolved before anything is made.

A container names devices in ``CDI_devices`` (the CRI field the kubelet fills from device
plugins and DRA drivers) and in ``cdi.k8s.io/*`` annotations (the older way, still sent by
plugins), both as containerd and CRI-O read them. Container annotations come from the kubelet;
pod annotations are anyone's who may create a pod, so a pod's ``cdi.k8s.io/*`` annotations count
only where its RuntimeClass handler lets them in (``allowed_annotations``), as any pod
annotation reaches a spec. A device that cannot be resolved, or whose host node is missing,
refuses the request naming it.
"""

from __future__ import annotations

from collections.abc import Mapping

from cri.api import api_pb2
from cri.errors import InvalidArgument
from sandbox.cdi.inject import DeviceNodeError, Injection, realize
from sandbox.cdi.names import InvalidName, from_annotations
from sandbox.cdi.registry import Registry, Unresolvable


def requested(config: api_pb2.ContainerConfig, pod_annotations: Mapping[str, str]) -> list[str]:
    """The device names of the request, each once: the field's, then the annotations'."""
    names = [d.name for d in config.CDI_devices]
    try:
        names += from_annotations(pod_annotations)
        names += from_annotations(config.annotations)
    except InvalidName as exc:
        raise InvalidArgument(f"CDI device annotation: {exc}") from None
    return list(dict.fromkeys(names))


def resolve(registry: Registry, names: list[str]) -> Injection | None:
    """What the devices add to the OCI spec (None: none requested). Blocking: reads files."""
    if not names:
        return None
    try:
        return realize(registry.resolve(names))
    except Unresolvable as exc:
        raise InvalidArgument(f"unresolvable CDI devices: {exc}") from None
    except DeviceNodeError as exc:
        raise InvalidArgument(str(exc)) from None
