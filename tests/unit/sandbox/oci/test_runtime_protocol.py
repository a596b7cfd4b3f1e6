"""OCIRuntime against scripted stand-ins for conmon and runc: every failure path, no root.

The stand-ins speak the same protocol as the real tools (the _OCI_SYNCPIPE fd, the -P pidfile,
runc's JSON error lines), so what is tested here is our side of it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from sandbox.oci.errors import OCINotRunning, OCIRuntimeError, OCITimeout
from sandbox.oci.runtime import OCIRuntime

FAKE_RUNC = """\
#!/bin/bash
echo "$*" >> "$(dirname "$0")/runc.calls"
for a in "$@"; do case "$a" in
  start) [ -e "$(dirname "$0")/hang" ] && exec sleep 60 ;;
  state) echo '{"ociVersion":"1.0.2-dev","id":"c1","status":"running","pid":1}'; exit 0 ;;
  kill) echo '{"level":"error","msg":"container not running","time":"t"}' >&2; exit 1 ;;
  delete) echo '{"level":"error","msg":"container does not exist","time":"t"}' >&2; exit 1 ;;
esac; done
exit 0
"""


def fake_conmon(body: str) -> str:
    # -P is parsed like conmon does; $SYNC is the fd number conmon finds in _OCI_SYNCPIPE.
    return "#!/bin/bash\n" + textwrap.dedent("""\
        while [ $# -gt 0 ]; do case "$1" in -P) PIDFILE="$2"; shift;; esac; shift; done
        SYNC="$_OCI_SYNCPIPE"
        """) + textwrap.dedent(body)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def make_runtime(tmp_path: Path, conmon_body: str, **kwargs: Any) -> OCIRuntime:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("conmon", fake_conmon(conmon_body)), ("runc", FAKE_RUNC)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "bundle").mkdir()
    return OCIRuntime(
        bin_dir / "runc", bin_dir / "conmon", tmp_path / "runc-root",
        tmp_path / "exits", tmp_path / "persist", **kwargs,
    )


def create(rt: OCIRuntime, tmp_path: Path, ctr_id: str = "c1", timeout: float = 10.0) -> int:
    return int(run(rt.create(
        ctr_id, tmp_path / "bundle", log_path=tmp_path / "ctr.log",
        pidfile=tmp_path / "bundle" / "pidfile", attach_socket_dir=tmp_path, timeout=timeout,
    )))


def runc_calls(tmp_path: Path) -> list[str]:
    calls = tmp_path / "bin" / "runc.calls"
    return calls.read_text().splitlines() if calls.exists() else []


def test_create_returns_the_pid_conmon_reports(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, """\
        echo "$PPID" > "$PIDFILE"
        printf '{"data": 4321}\\n' >&"$SYNC"
        """)
    assert create(rt, tmp_path) == 4321
    assert (tmp_path / "persist" / "c1").is_dir()
    assert (tmp_path / "exits").is_dir()
    assert runc_calls(tmp_path) == []  # the happy path costs no extra runc call


def test_create_clears_stale_files_of_the_same_id(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, """\
        printf '{"data": 77}\\n' >&"$SYNC"
        """)
    (tmp_path / "persist" / "c1").mkdir(parents=True)
    (tmp_path / "persist" / "c1" / "conmon.pid").write_text("1")
    (tmp_path / "persist" / "c1" / "exit").write_text("0")
    (tmp_path / "exits").mkdir()
    (tmp_path / "exits" / "c1").write_text("0")
    assert create(rt, tmp_path) == 77
    assert not (tmp_path / "persist" / "c1" / "conmon.pid").exists()
    assert not (tmp_path / "exits" / "c1").exists()


def test_create_relays_runc_error(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, r"""
        msg='{\"level\":\"error\",\"msg\":\"runc create failed: exec: \\\"/nope\\\": '
        msg+='no such file\"}\n'
        printf '{"data": -1, "message": "%s"}\n' "$msg" >&"$SYNC"
        """)
    with pytest.raises(OCIRuntimeError, match='runc create failed: exec: "/nope": no such file'):
        create(rt, tmp_path)
    # runc cleans up after a failed create itself; nothing to delete.
    assert runc_calls(tmp_path) == []


def test_conmon_refusing_to_start_reports_its_stderr(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, """\
        echo "conmon: option parsing failed: Unknown option --bogus" >&2
        exit 1
        """)
    with pytest.raises(OCIRuntimeError, match="status 1: conmon: option parsing failed"):
        create(rt, tmp_path)


def test_silent_conmon_death_force_deletes_the_id(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, "exit 0\n")
    with pytest.raises(OCIRuntimeError, match="without reporting"):
        create(rt, tmp_path)
    assert runc_calls(tmp_path) == ["--root=%s --log-format=json delete --force c1"
                                    % (tmp_path / "runc-root")]


def test_create_timeout_kills_conmon_and_cleans_up(
    tmp_path: Path, wait_exit: Callable[[int], Coroutine[Any, Any, None]],
) -> None:
    # The daemonized "conmon" keeps the sync pipe open and never answers.
    rt = make_runtime(tmp_path, """\
        sleep 60 </dev/null >/dev/null 2>&1 &
        echo $! > "$PIDFILE"
        """)
    with pytest.raises(OCITimeout):
        create(rt, tmp_path, timeout=0.5)
    monitor = int((tmp_path / "persist" / "c1" / "conmon.pid").read_text())
    run(wait_exit(monitor))
    assert runc_calls(tmp_path)[-1].endswith("delete --force c1")


def test_create_timeout_while_conmon_itself_hangs(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, "exec sleep 60\n")
    with pytest.raises(OCITimeout, match=r"0\.3s"):
        create(rt, tmp_path, timeout=0.3)
    assert runc_calls(tmp_path)[-1].endswith("delete --force c1")


def test_missing_conmon_binary(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, "exit 0\n")
    rt.conmon_path = tmp_path / "no-such-conmon"
    with pytest.raises(OCIRuntimeError, match="cannot run"):
        create(rt, tmp_path)


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "a.b", "-x", "x" * 200])
def test_invalid_ids_are_refused_before_anything_runs(tmp_path: Path, bad: str) -> None:
    rt = make_runtime(tmp_path, "exit 0\n")
    with pytest.raises(ValueError, match="invalid container id"):
        create(rt, tmp_path, ctr_id=bad)
    with pytest.raises(ValueError):
        run(rt.delete(bad))
    assert runc_calls(tmp_path) == []


def test_runc_commands_and_error_mapping(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, "exit 0\n")
    root = f"--root={tmp_path / 'runc-root'} --log-format=json"

    async def body() -> None:
        await rt.start("c1")
        state = await rt.state("c1")
        assert state is not None and state["status"] == "running"
        with pytest.raises(OCINotRunning):
            await rt.kill("c1", signal.SIGTERM, all_procs=True)
        await rt.delete("c1")  # "does not exist" is success
        await rt.delete("c1", force=True)

    run(body())
    assert runc_calls(tmp_path) == [
        f"{root} start c1",
        f"{root} state c1",
        f"{root} kill --all c1 15",
        f"{root} delete c1",
        f"{root} delete --force c1",
    ]


def test_runc_timeout_kills_runc(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, "exit 0\n", runc_timeout=0.3)
    (tmp_path / "bin" / "hang").touch()
    with pytest.raises(OCITimeout, match="runc start c1"):
        run(rt.start("c1"))


def test_cancelled_runc_call_is_killed_and_reaped(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, "exit 0\n")
    (tmp_path / "bin" / "hang").touch()

    async def body() -> None:
        task = asyncio.create_task(rt.start("c1"))
        # Polling a file into existence: there is no event to await; the timeout bounds it.
        async with asyncio.timeout(10):
            while not (tmp_path / "bin" / "runc.calls").exists():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(body())
    assert "sleep" not in children_commands()  # killed and reaped, not even a zombie


def children_commands() -> list[str]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid():
            found.append(comm)
    return found
