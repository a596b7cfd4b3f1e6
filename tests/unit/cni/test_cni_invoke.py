from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from pathlib import Path

import pytest

from cni.errors import CNIPluginError, CNIPluginNotFound, CNITimeout
from cni.invoke import MAX_STDOUT, STDERR_TAIL, exec_plugin, find_plugin


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def run(path: Path, command: str = "ADD", time_limit: float = 10, **conf: object) -> dict[str, object] | None:
    return asyncio.run(exec_plugin(path, command, {"cniVersion": "1.0.0", "name": "n", **conf},
                                   container_id="c1", netns="/run/netns/x", ifname="eth0",
                                   args={"IgnoreUnknown": "1", "K8S_POD_NAME": "p"},
                                   plugin_dirs=[path.parent, Path("/nonexistent")], time_limit=time_limit))


def test_env_stdin_and_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYCRI_SECRET_TOKEN", "hunter2")
    out = tmp_path / "seen"
    plugin = script(tmp_path / "fake", f"""
env > {out}.env
cat > {out}.stdin
echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.0.0.2/24"}}]}}'
""")
    assert run(plugin, x=1) == {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]}
    env = dict(line.split("=", 1) for line in (tmp_path / "seen.env").read_text().splitlines() if "=" in line)
    assert env["CNI_COMMAND"] == "ADD" and env["CNI_CONTAINERID"] == "c1"
    assert env["CNI_NETNS"] == "/run/netns/x" and env["CNI_IFNAME"] == "eth0"
    assert env["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=p"
    assert env["CNI_PATH"] == f"{tmp_path}:/nonexistent"
    assert "PATH" in env
    assert "PYCRI_SECRET_TOKEN" not in env  # the daemon's environment does not leak into plugins
    assert json.loads((tmp_path / "seen.stdin").read_text()) == {"cniVersion": "1.0.0", "name": "n", "x": 1}


def test_empty_output_for_del(tmp_path: Path) -> None:
    assert run(script(tmp_path / "fake", "cat >/dev/null\n"), "DEL") is None


def test_error_json(tmp_path: Path) -> None:
    plugin = script(tmp_path / "failer", """cat >/dev/null
echo '{"cniVersion":"1.0.0","code":7,"msg":"bad config","details":"subnet overlaps"}'
echo 'some diagnostics' >&2
exit 1
""")
    with pytest.raises(CNIPluginError) as info:
        run(plugin)
    err = info.value
    assert (err.plugin, err.command, err.code, err.msg, err.details) == (
        "failer", "ADD", 7, "bad config", "subnet overlaps")
    assert "some diagnostics" in err.stderr
    text = str(err)
    assert "failer" in text and "ADD" in text and "code 7" in text and "bad config" in text


GO_PANIC = """panic: runtime error: invalid memory address or nil pointer dereference
[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x536ff6]

goroutine 1 [running]:
main.cmdCheck(0xc00008c770)
\tgithub.com/containernetworking/plugins/plugins/meta/bandwidth/main.go:301 +0x2d6
github.com/containernetworking/cni/pkg/skel.(*dispatcher).checkVersionAndCall(0xc000093eb8)
\tgithub.com/containernetworking/cni/pkg/skel/skel.go:166 +0x20a
main.main()
\tgithub.com/containernetworking/plugins/plugins/meta/bandwidth/main.go:249 +0xcf
"""


def test_go_panic_is_reported_by_its_first_lines(tmp_path: Path) -> None:
    """A Go plugin that panics prints the cause first and runtime frames after it: the error
    names the cause and the plugin's own frame, not the tail."""
    (tmp_path / "trace").write_text(GO_PANIC)
    plugin = script(tmp_path / "bandwidth", f"cat >/dev/null\ncat {tmp_path / 'trace'} >&2\nexit 2\n")
    with pytest.raises(CNIPluginError) as info:
        run(plugin, "CHECK")
    assert str(info.value) == (
        "plugin 'bandwidth' CHECK failed: exited with status 2 [panic: runtime error: invalid "
        "memory address or nil pointer dereference in main.cmdCheck "
        "(github.com/containernetworking/plugins/plugins/meta/bandwidth/main.go:301)]")
    assert info.value.stderr.strip() == GO_PANIC.strip()


def test_non_json_failure_and_bounded_stderr(tmp_path: Path) -> None:
    plugin = script(tmp_path / "crasher", """cat >/dev/null
echo 'panic: oops'
head -c 100000 /dev/zero | tr '\\0' x >&2
exit 2
""")
    with pytest.raises(CNIPluginError) as info:
        run(plugin, "DEL")
    assert info.value.code is None and "panic: oops" in info.value.msg
    assert info.value.stderr.startswith("...") and len(info.value.stderr) == STDERR_TAIL + 3
    assert len(str(info.value)) < 1000  # the message carries only the end of stderr


def test_invalid_json_on_success(tmp_path: Path) -> None:
    with pytest.raises(CNIPluginError, match="invalid JSON"):
        run(script(tmp_path / "junk", "cat >/dev/null; echo 'not json'\n"))


def test_plugin_not_found(tmp_path: Path) -> None:
    (tmp_path / "noexec").write_text("")
    with pytest.raises(CNIPluginNotFound) as info:
        find_plugin("noexec", [tmp_path, tmp_path / "other"])
    assert str(tmp_path) in str(info.value) and str(tmp_path / "other") in str(info.value)
    with pytest.raises(CNIPluginNotFound):
        find_plugin("../bin/sh", [tmp_path])
    script(tmp_path / "other-plugin", "")
    assert find_plugin("other-plugin", [tmp_path / "missing", tmp_path]) == tmp_path / "other-plugin"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for reaping counts as dead.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_hanging_plugin_and_child_killed(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    plugin = script(tmp_path / "hang", f"""cat >/dev/null
sleep 1000 </dev/null >/dev/null 2>&1 &
echo $$ $! > {pids}
wait
""")
    start = time.monotonic()
    with pytest.raises(CNITimeout) as info:
        run(plugin, time_limit=1.0)
    assert time.monotonic() - start < 5
    assert info.value.plugin == "hang" and "hang" in str(info.value)
    parent, child = (int(p) for p in pids.read_text().split())
    deadline = time.monotonic() + 5
    while (_alive(parent) or _alive(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(parent) and not _alive(child)


def test_script_helper_is_executable(tmp_path: Path) -> None:
    assert script(tmp_path / "s", "").stat().st_mode & stat.S_IXUSR


def test_error_code_names_and_retryable(tmp_path: Path) -> None:
    plugin = script(tmp_path / "busy", """cat >/dev/null
echo '{"cniVersion":"1.0.0","code":11,"msg":"ipam busy"}'
exit 1
""")
    with pytest.raises(CNIPluginError) as info:
        run(plugin)
    assert info.value.retryable and "code 11: try again later" in str(info.value)


def test_failure_without_output(tmp_path: Path) -> None:
    with pytest.raises(CNIPluginError, match="exited with status 3"):
        run(script(tmp_path / "quiet", "exit 3\n"))
    with pytest.raises(CNIPluginError, match="killed by signal 9"):
        run(script(tmp_path / "killed", "kill -9 $$\n"))


def test_plugin_that_ignores_stdin(tmp_path: Path) -> None:
    # Exits before reading a config bigger than the pipe buffer: no BrokenPipeError escapes.
    plugin = script(tmp_path / "early", "echo '{\"cniVersion\":\"1.0.0\"}'\n")
    assert run(plugin, big="x" * (1 << 20)) == {"cniVersion": "1.0.0"}


def test_stdout_is_bounded(tmp_path: Path) -> None:
    size = MAX_STDOUT + 4096
    plugin = script(tmp_path / "chatty", f"cat >/dev/null; head -c {size} /dev/zero | tr '\\0' x\n")
    with pytest.raises(CNIPluginError, match="printed more than"):
        run(plugin)


def test_result_must_be_an_object(tmp_path: Path) -> None:
    with pytest.raises(CNIPluginError, match="not an object"):
        run(script(tmp_path / "list", "cat >/dev/null; echo '[1]'\n"))


def test_timeout_keeps_stderr(tmp_path: Path) -> None:
    plugin = script(tmp_path / "stuck", "cat >/dev/null; echo 'waiting for the lock' >&2; exec sleep 1000\n")
    with pytest.raises(CNITimeout) as info:
        run(plugin, time_limit=0.5)
    assert "waiting for the lock" in info.value.stderr and "waiting for the lock" in str(info.value)
    assert info.value.timeout == 0.5 and info.value.command == "ADD"


def test_cancellation_kills_the_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    plugin = script(tmp_path / "hang", f"""cat >/dev/null
sleep 1000 </dev/null >/dev/null 2>&1 &
echo $$ $! > {pids}
wait
""")

    async def main() -> None:
        task = asyncio.create_task(exec_plugin(
            plugin, "DEL", {"cniVersion": "1.0.0", "name": "n"}, container_id="c1", netns="",
            ifname="eth0", args={}, plugin_dirs=[tmp_path], time_limit=60))
        for _ in range(500):  # the plugin and its child are up once the pid file is written
            if pids.exists() and pids.read_text().strip():
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    parent, child = (int(p) for p in pids.read_text().split())
    deadline = time.monotonic() + 5
    while (_alive(parent) or _alive(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(parent) and not _alive(child)


def test_unexecutable_plugin_is_a_plugin_error(tmp_path: Path) -> None:
    plugin = tmp_path / "noshebang"
    plugin.write_bytes(b"\x7fELF-not-really")
    plugin.chmod(0o755)
    with pytest.raises(CNIPluginError, match="cannot execute"):
        run(plugin)
