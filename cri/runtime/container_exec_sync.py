"""ExecSync: a command in a running container's namespaces and cgroup, with the container's own
process settings; stdout/stderr capped at 16 MiB each; at the timeout DEADLINE_EXCEEDED, and the
exec'd process tree is killed (sandbox/oci/exec_sync.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from cri.api import api_pb2
from cri.errors import DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument
from cri.runtime.daemon import Runtime
from cri.store.container import Container
from sandbox.oci.errors import OCINotFound, OCINotRunning, OCIRuntimeError
from sandbox.oci.exec_sync import exec_sync

log = logging.getLogger(__name__)


def _process(ctr: Container) -> dict[str, Any]:
    spec = json.loads((ctr.bundle / "config.json").read_bytes())
    process = spec.get("process")
    if not isinstance(process, dict):
        raise Internal(f"container {ctr.id}: its spec has no process")
    return process


async def exec_sync_rpc(rt: Runtime, ctr_id: str, cmd: list[str], timeout: int  # noqa: ASYNC109
                        ) -> api_pb2.ExecSyncResponse:
    if not cmd:
        raise InvalidArgument("ExecSync needs a command")
    if timeout < 0:
        raise InvalidArgument("ExecSync timeout must not be negative")
    ctr = rt.containers.lookup(ctr_id)
    if not ctr.running:
        raise FailedPrecondition(f"container {ctr.id} is {ctr.status.state.value}, not running")
    process = await asyncio.to_thread(_process, ctr)
    await asyncio.to_thread(rt.exec_dir.mkdir, mode=0o700, parents=True, exist_ok=True)
    oci = rt.oci(ctr.meta.handler)
    try:
        res = await exec_sync(oci.runtime_path, oci.runtime_root, ctr.id, cmd,
                              container_process=process, timeout=timeout or None,
                              scratch_dir=rt.exec_dir)
    except (OCINotFound, OCINotRunning) as exc:
        raise FailedPrecondition(f"container {ctr.id} is not running: {exc}") from exc
    except OCIRuntimeError as exc:
        raise Internal(f"exec in container {ctr.id} failed: {exc}") from exc
    if res.timed_out:
        raise DeadlineExceeded(f"command {cmd[0]!r} in container {ctr.id} timed out after "
                               f"{timeout}s; it was killed")
    return api_pb2.ExecSyncResponse(stdout=res.stdout, stderr=res.stderr, exit_code=res.exit_code)
