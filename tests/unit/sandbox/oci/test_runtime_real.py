"""Real containers: runc + conmon + catatonit, as root. Skipped elsewhere.

Every test cleans up after itself even when it fails: runc state (delete --force), conmon
processes, the cgroup tree under a per-test "/pycri-test-<rand>" parent and any netns.
Waits are bounded by generous timeouts and never asserted on as timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox import cgroups
from sandbox.errors import CgroupError
from sandbox.oci.errors import OCINotFound, OCINotRunning, OCIRuntimeError, OCITimeout
from sandbox.oci.exits import ExitWatcher
from sandbox.oci.runtime import OCIRuntime
from sandbox.oci.spec import infra_spec, write_bundle
from tests.unit.sandbox.oci.cgroup_cleanup import remove_cgroup_tree

RUNC = shutil.which("runc")
CONMON = shutil.which("conmon")
CATATONIT = shutil.which("catatonit")
REPO = Path(__file__).resolve().parents[4]
CGROUP_ROOT = Path("/sys/fs/cgroup")
WAIT = 30.0  # generous bound on waits; never a timing assertion

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not (RUNC and CONMON and CATATONIT),
    reason="needs root, runc, conmon and catatonit",
)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


Gone = Callable[[int], bool]
WaitExit = Callable[[int], Coroutine[Any, Any, None]]


def ns_link(pid: int | str, ns: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{ns}")


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)




@dataclass
class Env:
    tmp: Path
    runtime: OCIRuntime
    cgroup_parent: str
    ids: list[str] = field(default_factory=list)

    def new_id(self) -> str:
        ctr_id = secrets.token_hex(16)
        self.ids.append(ctr_id)
        return ctr_id

    def bundle(self, ctr_id: str, **overrides: Any) -> Path:
        kwargs: dict[str, Any] = {
            "hostname": f"pod-{ctr_id[:8]}",
            "netns_path": None,
            "host_uts": False,
            "host_ipc": False,
            "host_pid": False,
            "share_pid": False,
            "cgroups_path": f"{self.cgroup_parent}/{ctr_id}",
            "pause_binary": Path(str(CATATONIT)),
            "annotations": {"io.pycri.test": ctr_id},
        }
        kwargs.update(overrides)
        bundle = self.tmp / "bundles" / ctr_id
        write_bundle(bundle, infra_spec(**kwargs))
        return bundle

    async def create(self, ctr_id: str, bundle: Path, create_timeout: float = WAIT) -> int:
        pid = await self.runtime.create(
            ctr_id, bundle, log_path=self.tmp / "logs" / f"{ctr_id}.log",
            pidfile=bundle / "pidfile", attach_socket_dir=self.tmp / "attach",
            timeout=create_timeout,
        )
        return int(pid)


@pytest.fixture
def env(tmp_path: Path, is_gone: Gone) -> Iterator[Env]:
    for d in ("logs", "attach"):
        (tmp_path / d).mkdir()
    runtime = OCIRuntime(
        Path(str(RUNC)), Path(str(CONMON)), tmp_path / "runc",
        tmp_path / "exits", tmp_path / "persist",
    )
    e = Env(tmp_path, runtime, f"/pycri-test-{secrets.token_hex(4)}")
    try:
        yield e
    finally:
        for ctr_id in e.ids:
            subprocess.run(
                [str(RUNC), "--root", str(runtime.runtime_root), "delete", "--force", ctr_id],
                capture_output=True, check=False, timeout=WAIT,
            )
            conmon = runtime.conmon_pid(ctr_id)
            if conmon is not None and not is_gone(conmon):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(conmon, signal.SIGKILL)
        remove_cgroup_tree(e.cgroup_parent)


@pytest.fixture
def netns() -> Iterator[Path]:
    name = f"pycri-ocitest-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield Path("/var/run/netns") / name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def check_created_infra(pid: int, env: Env, ctr_id: str, netns: Path) -> None:
    for ns in ("pid", "ipc", "uts", "mnt"):
        assert ns_link(pid, ns) != ns_link("self", ns), ns
    assert ns_link(pid, "net") == f"net:[{netns.stat().st_ino}]"
    status = proc_status(pid)  # runc init waits for `start` already unprivileged
    assert status["Uid"].split()[:2] == ["65535", "65535"]
    assert status["Gid"].split()[:2] == ["65535", "65535"]
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    memcg = [ln for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
             if ":memory:" in ln]
    assert memcg == [f"{memcg[0].split(':')[0]}:memory:{env.cgroup_parent}/{ctr_id}"]
    hostname = subprocess.run(
        ["nsenter", "-t", str(pid), "-u", "hostname"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert hostname == f"pod-{ctr_id[:8]}"


def check_running_pause(pid: int) -> None:
    # runc start returns once it has released runc init to exec the process, which may not
    # have happened yet: the pid can still be "runc init" for a moment.
    deadline = time.monotonic() + WAIT
    while os.readlink(f"/proc/{pid}/exe") != "/pause" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"/pause\0-P\0"
    assert os.readlink(f"/proc/{pid}/exe") == "/pause"


def test_infra_lifecycle(env: Env, netns: Path, is_gone: Gone, wait_exit: WaitExit) -> None:
    ctr_id = env.new_id()
    bundle = env.bundle(ctr_id, netns_path=netns, host_uts=None)
    began = datetime.now(UTC)

    async def body() -> None:
        exits: dict[str, tuple[int, datetime]] = {}
        exited = asyncio.Event()

        def on_exit(cid: str, code: int, at: datetime) -> None:
            exits[cid] = (code, at)
            exited.set()

        watcher = ExitWatcher(env.runtime.exits_dir, on_exit)
        watcher.start()
        try:
            pid = await env.create(ctr_id, bundle)
            assert int((bundle / "pidfile").read_text()) == pid
            assert not is_gone(pid)
            check_created_infra(pid, env, ctr_id, netns)

            state = await env.runtime.state(ctr_id)
            assert state is not None
            assert (state["status"], state["pid"]) == ("created", pid)
            assert state["annotations"] == {"io.pycri.test": ctr_id}

            await env.runtime.start(ctr_id)
            state = await env.runtime.state(ctr_id)
            assert state is not None and state["status"] == "running"
            check_running_pause(pid)
            conmon = env.runtime.conmon_pid(ctr_id)
            assert conmon is not None and not is_gone(conmon)
            # conmon has its own session: a signal to our process group cannot reach it.
            assert os.getsid(conmon) == conmon

            await env.runtime.kill(ctr_id, signal.SIGKILL)
            async with asyncio.timeout(WAIT):
                await exited.wait()
            code, at = exits[ctr_id]
            assert code == 137
            assert began - timedelta(seconds=1) <= at <= datetime.now(UTC) + timedelta(seconds=1)
            assert watcher.read_exit(ctr_id) == (137, at)
            await wait_exit(conmon)  # conmon leaves once the exit is recorded
            assert (env.runtime.persist_dir(ctr_id) / "exit").read_text() == "137"

            state = await env.runtime.state(ctr_id)
            assert state is not None and state["status"] == "stopped"
            with pytest.raises(OCINotRunning):
                await env.runtime.kill(ctr_id, signal.SIGTERM)

            await env.runtime.delete(ctr_id)
            assert await env.runtime.state(ctr_id) is None
            await env.runtime.delete(ctr_id)
            await env.runtime.delete(ctr_id, force=True)
            with pytest.raises(OCINotFound):
                await env.runtime.start(ctr_id)
            with pytest.raises(OCINotFound):
                await env.runtime.kill(ctr_id, signal.SIGKILL)
        finally:
            watcher.close()

    run(body())
    # runc removed the container's own cgroup; the parent is the test's to remove.
    assert not (CGROUP_ROOT / "memory" / env.cgroup_parent.lstrip("/") / ctr_id).exists()


def check_namespaces(pid: int, shared: tuple[str, ...], own: tuple[str, ...]) -> None:
    for ns in shared:
        assert ns_link(pid, ns) == ns_link("self", ns), ns
    for ns in own:
        assert ns_link(pid, ns) != ns_link("self", ns), ns


def test_host_namespaces(env: Env, wait_exit: WaitExit) -> None:
    ctr_id = env.new_id()
    bundle = env.bundle(ctr_id, host_pid=True, host_ipc=True, host_uts=None, netns_path=None)

    async def body() -> None:
        pid = await env.create(ctr_id, bundle)
        check_namespaces(pid, shared=("pid", "ipc", "uts", "net"), own=("mnt",))
        await env.runtime.delete(ctr_id, force=True)
        assert await env.runtime.state(ctr_id) is None
        await wait_exit(pid)

    run(body())


def test_private_uts_on_host_network(env: Env) -> None:
    ctr_id = env.new_id()
    bundle = env.bundle(ctr_id, netns_path=None, host_uts=False)

    async def body() -> None:
        pid = await env.create(ctr_id, bundle)
        check_namespaces(pid, shared=("net",), own=("uts", "ipc", "pid", "mnt"))
        await env.runtime.delete(ctr_id, force=True)

    run(body())


def test_create_failure_leaves_nothing(env: Env, wait_exit: WaitExit) -> None:
    ctr_id = env.new_id()
    bundle = env.bundle(ctr_id)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["args"] = ["/no-such-binary", "-x"]
    write_bundle(bundle, config)

    async def body() -> None:
        with pytest.raises(OCIRuntimeError) as info:
            await env.create(ctr_id, bundle)
        message = str(info.value)
        assert "/no-such-binary" in message
        assert "no such file or directory" in message
        assert "level=" not in message and '"msg"' not in message  # runc's text, unwrapped
        assert await env.runtime.state(ctr_id) is None
        conmon = env.runtime.conmon_pid(ctr_id)
        assert conmon is not None
        await wait_exit(conmon)
        assert not env.runtime.exits_dir.joinpath(ctr_id).exists()  # no exit: nothing ran

    run(body())
    assert not (CGROUP_ROOT / "memory" / env.cgroup_parent.lstrip("/") / ctr_id).exists()


def test_conmon_is_placed_before_it_starts_anything(env: Env, wait_exit: WaitExit) -> None:
    """The placing hook sees a conmon that has not forked yet (it blocks on its start pipe),
    so the monitor and everything it spawns start out in the chosen cgroup."""
    monitors = f"{env.cgroup_parent}/monitors"
    cgroups.create_pod_cgroup(monitors)
    children_at_placing: list[str] = []

    async def place(pid: int, placed_id: str, pod_cgroup: str) -> None:
        assert placed_id == ctr_id
        children_at_placing.append(Path(f"/proc/{pid}/task/{pid}/children").read_text())  # noqa: ASYNC240
        cgroups.add_pid(monitors, pid)

    env.runtime.place_monitor = place
    ctr_id = env.new_id()

    async def body() -> None:
        pid = await env.create(ctr_id, env.bundle(ctr_id))
        conmon = env.runtime.conmon_pid(ctr_id)
        assert conmon is not None
        assert conmon in cgroups.list_pids(monitors, recursive=False)
        assert pid not in cgroups.list_pids(monitors, recursive=False)  # runc moved it on
        await env.runtime.delete(ctr_id, force=True)
        await wait_exit(conmon)

    run(body())
    assert children_at_placing == [""]


def test_conmon_that_cannot_be_placed_never_runs(env: Env, is_gone: Gone) -> None:
    spawned: list[int] = []

    async def refuse(pid: int, placed_id: str, pod_cgroup: str) -> None:
        spawned.append(pid)
        raise CgroupError(f"cannot move pid {pid}: no such cgroup")

    env.runtime.place_monitor = refuse
    ctr_id = env.new_id()

    async def body() -> None:
        with pytest.raises(OCIRuntimeError, match="cannot move conmon into its cgroup"):
            await env.create(ctr_id, env.bundle(ctr_id))
        assert await env.runtime.state(ctr_id) is None

    run(body())
    [pid] = spawned
    assert is_gone(pid)  # killed while it still waited: no daemonized child, no runc
    assert env.runtime.conmon_pid(ctr_id) is None


def test_create_timeout_with_real_conmon(env: Env, wait_exit: WaitExit) -> None:
    # A runtime whose `create` never returns; everything else is the real runc.
    hanging = env.tmp / "hanging-runc"
    hanging.write_text(
        "#!/bin/bash\n"
        'for a in "$@"; do [ "$a" = create ] && exec sleep 60; done\n'
        f'exec {RUNC} "$@"\n'
    )
    hanging.chmod(0o755)
    env.runtime.runtime_path = hanging
    ctr_id = env.new_id()
    bundle = env.bundle(ctr_id)

    async def body() -> None:
        with pytest.raises(OCITimeout):
            await env.create(ctr_id, bundle, create_timeout=1.0)
        conmon = env.runtime.conmon_pid(ctr_id)
        assert conmon is not None
        await wait_exit(conmon)
        assert await env.runtime.state(ctr_id) is None

    run(body())


SURVIVOR = """
import asyncio, json, os, signal, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from sandbox.oci.runtime import OCIRuntime

a = json.loads(sys.argv[2])

async def main():
    rt = OCIRuntime(*(Path(p) for p in a["runtime"]))
    pid = await rt.create(a["id"], Path(a["bundle"]), log_path=Path(a["log"]),
                          pidfile=Path(a["pidfile"]), attach_socket_dir=Path(a["attach"]),
                          timeout=30)
    await rt.start(a["id"])
    print(pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # the daemon dies without any cleanup

asyncio.run(main())
"""


def test_conmon_and_container_survive_daemon_sigkill(
    env: Env, is_gone: Gone, wait_exit: WaitExit,
) -> None:
    ctr_id = env.new_id()
    bundle = env.bundle(ctr_id)
    rt = env.runtime
    args = {
        "runtime": [str(p) for p in (rt.runtime_path, rt.conmon_path, rt.runtime_root,
                                     rt.exits_dir, rt.persist_root)],
        "id": ctr_id, "bundle": str(bundle), "log": str(env.tmp / "logs" / "s.log"),
        "pidfile": str(bundle / "pidfile"), "attach": str(env.tmp / "attach"),
    }
    daemon = subprocess.run(
        [sys.executable, "-c", SURVIVOR, str(REPO), json.dumps(args)],
        capture_output=True, text=True, timeout=WAIT, check=False,
    )
    assert daemon.returncode == -signal.SIGKILL, daemon.stderr
    pid = int(daemon.stdout)

    async def body() -> None:
        exited = asyncio.Event()
        codes: list[int] = []

        def on_exit(cid: str, code: int, at: datetime) -> None:
            if cid == ctr_id:
                codes.append(code)
                exited.set()

        state = await rt.state(ctr_id)
        assert state is not None and state["status"] == "running" and state["pid"] == pid
        conmon = rt.conmon_pid(ctr_id)
        assert conmon is not None and not is_gone(conmon)
        check_running_pause(pid)  # a SIGTERM to "runc init" would not be catatonit's clean exit
        watcher = ExitWatcher(rt.exits_dir, on_exit)
        watcher.start()
        try:
            # The orphaned conmon still monitors: it records the exit for a "restarted" daemon.
            await rt.kill(ctr_id, signal.SIGTERM)  # catatonit -P exits on SIGTERM
            async with asyncio.timeout(WAIT):
                await exited.wait()
        finally:
            watcher.close()
        assert codes == [0]  # catatonit -P exits cleanly on SIGTERM
        await wait_exit(conmon)
        await rt.delete(ctr_id)

    run(body())


def test_container_whose_conmon_died_is_killed_directly(env: Env, is_gone: Gone,
                                                        wait_exit: WaitExit) -> None:
    """conmon dies of SIGPIPE when the daemon it reports to was killed mid-create: then no exit
    file comes, and kill_unmonitored must still end the container (waiting on its pidfd)."""
    ctr_id = env.new_id()
    bundle = env.bundle(ctr_id, netns_path=None, host_uts=None)

    async def body() -> None:
        pid = await env.create(ctr_id, bundle)
        await env.runtime.start(ctr_id)
        assert env.runtime.monitor_alive(ctr_id)
        conmon = env.runtime.conmon_pid(ctr_id)
        assert conmon is not None
        os.kill(conmon, signal.SIGKILL)
        await wait_exit(conmon)
        assert not env.runtime.monitor_alive(ctr_id)
        assert not is_gone(pid)
        assert await env.runtime.kill_unmonitored(ctr_id, WAIT)
        assert is_gone(pid)
        assert not (env.runtime.exits_dir / ctr_id).exists()  # nobody wrote one
        assert not await env.runtime.kill_unmonitored(ctr_id, WAIT)  # already stopped
        await env.runtime.delete(ctr_id, force=True)

    run(body())
