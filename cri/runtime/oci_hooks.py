"""OCI hooks from [pycri.runtime] hooks_dir into a container's OCI spec (sandbox/oci/hooks.py
reads and matches the files).

Containers only, never a pod's infra container: CRI-O injects hooks in CreateContainer alone.
The infra is pycri's own pause process in an empty rootfs; hooks are written for workloads
(devices, systemd, mounts), and an "always" hook would otherwise run twice per pod and more.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from cri.api import api_pb2
from sandbox.oci.hook_dirs import HookDirs
from sandbox.oci.hooks import inject, matching
from sandbox.oci.spec import Spec

log = logging.getLogger(__name__)


def add_hooks(dirs: HookDirs, spec: Spec, pod_annotations: Mapping[str, str],
              mounts: Sequence[api_pb2.Mount], name: str) -> list[str]:
    """Append the matching hooks to ``spec`` (the final one: after NRI plugins adjusted it,
    so ``when`` sees the args and annotations runc will get); returns their file names.

    Annotations are the spec's over the pod's, as CRI-O matches the pod's and the
    container's: the kubelet hands pod annotations to RunPodSandbox only, and they are how
    a user asks for a hook, even where the handler keeps them out of the spec. Bind mounts
    are those the CRI request asks for from the host (CRI-O: any mount in the request)."""
    annotations = {**pod_annotations, **(spec.get("annotations") or {})}
    has_bind_mounts = any(m.host_path for m in mounts)
    chosen = matching(dirs.hooks(), spec, annotations, has_bind_mounts)
    if chosen:
        inject(spec, chosen)
        log.debug("container %s: OCI hooks %s", name, ", ".join(h.name for h in chosen))
    return [h.name for h in chosen]
