"""exec_sync against real runc containers (root only), plus the pure process-spec rules.

The containers run catatonit as pid 1 in their own pid namespace, as the unprivileged
65535 user without capabilities, on an empty read-only rootfs with the host's /usr bound
read-only (bin, lib, lib64 and sbin are symlinks into it, as on the merged-/usr host).
Every container, conmon and cgroup is removed at the end even when a test fails.
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
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sandbox.oci.errors import OCINotFound, OCINotRunning
from sandbox.oci.exec_sync import ExecResult, exec_process_spec, exec_sync
from sandbox.oci.runtime import OCIRuntime
from sandbox.oci.spec import bind_mount, infra_spec, write_bundle
from tests.unit.sandbox.oci.cgroup_cleanup import remove_cgroup_tree
from tests.unit.sandbox.oci.conftest import gone, wait_gone

RUNC = shutil.which("runc")
CONMON = shutil.which("conmon")
CATATONIT = shutil.which("catatonit")
CGROUP_ROOT = Path("/sys/fs/cgroup")
WAIT = 30.0  # generous bound on waits; never a timing assertion
SPEC_ENV = "PYCRI_EXEC_TEST=from the container spec"

real = pytest.mark.skipif(
    os.geteuid() != 0 or not (RUNC and CONMON and CATATONIT),
    reason="needs root, runc, conmon and catatonit",
)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


# --- exec_process_spec: pure -----------------------------------------------------------------

CONTAINER_PROCESS: dict[str, Any] = {
    "terminal": True,
    "consoleSize": {"height": 24, "width": 80},
    "user": {"uid": 1000, "gid": 1000, "additionalGids": [5]},
    "args": ["/app", "--serve"],
    "env": ["PATH=/bin", "A=b"],
    "cwd": "/work",
    "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"]},
    "noNewPrivileges": True,
    "apparmorProfile": "runtime/default",
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
}


def test_process_spec_is_the_containers_with_new_args_and_no_terminal() -> None:
    before = json.dumps(CONTAINER_PROCESS, sort_keys=True)
    spec = exec_process_spec(CONTAINER_PROCESS, ("sh", "-c", "echo hi"))
    expected = {k: v for k, v in CONTAINER_PROCESS.items() if k != "consoleSize"}
    expected.update(args=["sh", "-c", "echo hi"], terminal=False)
    assert spec == expected
    # A deep copy: changing the result never touches the container's spec.
    spec["env"].append("X=y")
    spec["capabilities"]["bounding"].clear()
    assert json.dumps(CONTAINER_PROCESS, sort_keys=True) == before


@pytest.mark.parametrize(("argv", "error"), [
    ([], ValueError),
    (["sh", "a\0b"], ValueError),
    ("sh -c true", TypeError),
    ([b"sh"], TypeError),
])
def test_process_spec_rejects_bad_argv(argv: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        exec_process_spec(CONTAINER_PROCESS, argv)


@pytest.mark.parametrize("kwargs", [
    {"ctr_id": "../etc"},
    {"ctr_id": "-rf"},
    {"timeout": 0},
    {"timeout": -1.0},
    {"argv": []},
])
def test_exec_sync_rejects_bad_arguments_before_running_anything(
    kwargs: dict[str, Any], tmp_path: Path,
) -> None:
    args: dict[str, Any] = {
        "runtime_path": tmp_path / "no-runc", "runtime_root": tmp_path, "ctr_id": "abc",
        "argv": ["true"], "container_process": CONTAINER_PROCESS, "timeout": 5.0,
        "scratch_dir": tmp_path,
    }
    args.update(kwargs)
    with pytest.raises(ValueError):
        run(exec_sync(**args))
    assert list(tmp_path.iterdir()) == []  # not even a scratch dir was made


# --- real containers ---------------------------------------------------------------------------




@dataclass
class Container:
    ctr_id: str
    init_pid: int
    process: dict[str, Any]


@dataclass
class Env:
    tmp: Path
    runtime: OCIRuntime
    cgroup_parent: str
    ids: list[str] = field(default_factory=list)

    async def start_container(self, args: list[str] | None = None, stdin: bool = False
                              ) -> Container:
        ctr_id = secrets.token_hex(16)
        self.ids.append(ctr_id)
        spec = infra_spec(
            hostname="exec-test", netns_path=None, host_ipc=False, host_pid=False,
            share_pid=False, host_uts=False, cgroups_path=f"{self.cgroup_parent}/{ctr_id}",
            pause_binary=Path(str(CATATONIT)),
        )
        spec["process"]["env"].append(SPEC_ENV)
        spec["process"]["cwd"] = "/usr"
        if args:
            spec["process"]["args"] = args
        spec["mounts"].append(bind_mount("/usr", "/usr", ["ro", "nosuid", "nodev"]))
        bundle = self.tmp / "bundles" / ctr_id
        write_bundle(bundle, spec)
        for name in ("bin", "lib", "lib64", "sbin"):
            (bundle / "rootfs" / name).symlink_to(f"usr/{name}")
        pid = await self.runtime.create(
            ctr_id, bundle, log_path=self.tmp / "logs" / f"{ctr_id}.log",
            pidfile=bundle / "pidfile", attach_socket_dir=self.tmp / "attach", timeout=WAIT,
            stdin=stdin,
        )
        await self.runtime.start(ctr_id)
        return Container(ctr_id, int(pid), spec["process"])

    async def exec(
        self, ctr: Container, argv: list[str], timeout: float | None = WAIT,  # noqa: ASYNC109
        **kwargs: Any,
    ) -> ExecResult:
        return await exec_sync(
            self.runtime.runtime_path, self.runtime.runtime_root, ctr.ctr_id, argv,
            container_process=ctr.process, timeout=timeout, scratch_dir=self.tmp / "scratch",
            **kwargs,
        )

    def cleanup(self) -> None:
        for ctr_id in self.ids:
            subprocess.run(
                [str(RUNC), "--root", str(self.runtime.runtime_root), "delete", "--force", ctr_id],
                capture_output=True, check=False, timeout=WAIT,
            )
            conmon = self.runtime.conmon_pid(ctr_id)
            if conmon is not None and not gone(conmon):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(conmon, signal.SIGKILL)
        remove_cgroup_tree(self.cgroup_parent)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0 or not (RUNC and CONMON and CATATONIT):
        pytest.skip("needs root, runc, conmon and catatonit")
    tmp = tmp_path_factory.mktemp("exec")
    for d in ("logs", "attach", "scratch"):
        (tmp / d).mkdir()
    runtime = OCIRuntime(
        Path(str(RUNC)), Path(str(CONMON)), tmp / "runc", tmp / "exits", tmp / "persist",
    )
    e = Env(tmp, runtime, f"/pycri-test-{secrets.token_hex(4)}")
    try:
        yield e
    finally:
        e.cleanup()


@pytest.fixture(scope="module")
def ctr(env: Env) -> Container:
    container: Container = run(env.start_container())
    return container


def procs_with_arg(marker: bytes) -> list[int]:
    """Live processes anywhere whose command line contains ``marker`` (zombies have none)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{name}/cmdline").read_bytes():
                    found.append(int(name))
    return found


def state_of(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def live_cgroup_procs(init_pid: int) -> set[int]:
    """Non-zombie processes of the container's cgroup (v1 memory hierarchy, or v2)."""
    lines = Path(f"/proc/{init_pid}/cgroup").read_text().splitlines()
    by_controller = {ln.split(":", 2)[1]: ln.split(":", 2)[2] for ln in lines}
    if "memory" in by_controller:
        procs = CGROUP_ROOT / "memory" / by_controller["memory"].lstrip("/") / "cgroup.procs"
    else:
        procs = CGROUP_ROOT / by_controller[""].lstrip("/") / "cgroup.procs"
    live = set()
    for pid in map(int, procs.read_text().split()):
        with contextlib.suppress(FileNotFoundError):
            if state_of(pid) not in ("Z", "X"):
                live.add(pid)
    return live


def our_children() -> list[int]:
    me = os.getpid()
    children = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{name}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                    children.append(int(name))
    return children


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@real
def test_stdout_stderr_and_exit_code_apart(env: Env, ctr: Container) -> None:
    async def body() -> None:
        result = await env.exec(ctr, ["sh", "-c", "echo out; echo err >&2; echo more; exit 3"])
        assert result == ExecResult(3, b"out\nmore\n", b"err\n", timed_out=False)
        # critest's "runtime should support execSync"
        assert await env.exec(ctr, ["echo", "-n", "hello"]) == ExecResult(0, b"hello", b"", False)
        # The command's own 255 (runc's exit status for its failures) stays the command's.
        result = await env.exec(ctr, ["sh", "-c", "echo oops >&2; exit 255"])
        assert result == ExecResult(255, b"", b"oops\n", timed_out=False)

    run(body())


@real
def test_runs_with_the_container_process_env_user_and_cwd(env: Env, ctr: Container) -> None:
    script = 'echo "$PYCRI_EXEC_TEST"; id -u; pwd; grep -E "^(CapEff|NoNewPrivs)" /proc/self/status'
    result = run(env.exec(ctr, ["sh", "-c", script]))
    assert result.exit_code == 0, result
    assert result.stdout.decode().split("\n") == [
        "from the container spec", "65535", "/usr",
        "CapEff:\t0000000000000000", "NoNewPrivs:\t1", "",
    ]
    assert result.stderr == b""


@real
def test_output_capped_per_stream_while_the_command_runs_to_the_end(
    env: Env, ctr: Container,
) -> None:
    # 1 MiB per stream: many times the cap and the pipe buffer, so the command could only
    # finish (and report 7) if the excess was read and dropped.
    script = "head -c 1048576 /dev/zero; yes | head -c 1048576 >&2; exit 7"
    result = run(env.exec(ctr, ["sh", "-c", script], output_cap=1001))
    assert result == ExecResult(7, b"\0" * 1001, b"y\n" * 500 + b"y", timed_out=False)


@real
def test_command_that_cannot_start_reports_like_a_shell(env: Env, ctr: Container) -> None:
    async def body() -> None:
        missing = await env.exec(ctr, ["no-such-command-4711", "x"])
        assert (missing.exit_code, missing.stdout, missing.timed_out) == (127, b"", False)
        assert b'"no-such-command-4711": executable file not found' in missing.stderr
        absent = await env.exec(ctr, ["/no/such/file"])
        assert absent.exit_code == 127
        assert b"/no/such/file" in absent.stderr and b"no such file or directory" in absent.stderr
        not_executable = await env.exec(ctr, ["/usr/lib/os-release"])
        assert not_executable.exit_code == 126
        assert b"permission denied" in not_executable.stderr
        # Only runc's message, once, without its JSON log wrapping.
        assert b"level" not in not_executable.stderr
        assert not_executable.stderr.count(b"permission denied") == 1

    run(body())


@real
def test_container_that_cannot_exec_raises(env: Env, ctr: Container) -> None:
    async def body() -> None:
        unknown = Container(secrets.token_hex(16), 0, ctr.process)
        with pytest.raises(OCINotFound):
            await env.exec(unknown, ["true"])
        stopped = await env.start_container()
        await env.runtime.kill(stopped.ctr_id, signal.SIGKILL)
        await wait_gone(stopped.init_pid)
        with pytest.raises(OCINotRunning):
            await env.exec(stopped, ["true"])

    run(body())


# Every way a process can leave the command's direct line: a plain background child, an
# orphan (its parent sh exits, so it is re-parented to the container's init but stays in the
# session), a child that starts a session of its own, and the foreground command.
TREE_SCRIPT = (
    "sleep {m}1 & "
    "sh -c 'sleep {m}2 &'; "
    "setsid sleep {m}3 & "
    "echo started; "
    "sleep {m}4"
)


def check_no_leftovers(env: Env, ctr: Container, marker: bytes, fds_before: set[str],
                       children_before: set[int]) -> None:
    assert procs_with_arg(marker) == []
    assert list((env.tmp / "scratch").iterdir()) == []  # process.json, pid file, runc log
    assert live_cgroup_procs(ctr.init_pid) == {ctr.init_pid}  # the container's init survived
    # runc reaped (children of our own from before, e.g. an e2e session's daemon, may remain)
    assert set(our_children()) <= children_before
    assert open_fds() == fds_before


@real
def test_timeout_kills_the_whole_exec_tree(env: Env, ctr: Container) -> None:
    marker = f"98{secrets.randbelow(10**5):05d}"

    async def body() -> None:
        fds_before = open_fds()
        children_before = set(our_children())
        result = await env.exec(ctr, ["sh", "-c", TREE_SCRIPT.format(m=marker)], timeout=3)
        assert result == ExecResult(137, b"started\n", b"", timed_out=True)
        check_no_leftovers(env, ctr, marker.encode(), fds_before, children_before)

    run(body())


@real
def test_timeout_as_critest_checks_it(env: Env, ctr: Container) -> None:
    # "runtime should support execSync with timeout": right after the timed-out exec, no
    # sleep may be seen in the container, not even as a zombie.
    async def body() -> None:
        result = await env.exec(ctr, ["sleep", "4321"], timeout=1)
        assert result == ExecResult(137, b"", b"", timed_out=True)
        after = await env.exec(ctr, ["ps", "-o", "stat,args"])
        assert after.exit_code == 0, after
        assert [line.split(None, 1)[1] for line in after.stdout.splitlines()[1:]] == [
            b"/pause -P", b"ps -o stat,args",
        ]

    run(body())


@real
def test_cancellation_kills_the_whole_exec_tree(env: Env, ctr: Container) -> None:
    marker = f"97{secrets.randbelow(10**5):05d}"

    async def body() -> None:
        fds_before = open_fds()
        children_before = set(our_children())
        task = asyncio.create_task(
            env.exec(ctr, ["sh", "-c", TREE_SCRIPT.format(m=marker)], timeout=None),
        )
        async with asyncio.timeout(WAIT):
            # The foreground sleep runs: the others were forked before it.
            while not procs_with_arg(f"sleep\0{marker}4".encode()):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        check_no_leftovers(env, ctr, marker.encode(), fds_before, children_before)

    run(body())

