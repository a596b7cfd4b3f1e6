"""conmon's argv and sync-pipe messages, and runc's error text: pure logic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox.oci.conmon import (
    ConmonArgs,
    ConmonExitedEarly,
    attach_socket_path,
    conmon_argv,
    parse_sync_message,
)
from sandbox.oci.errors import OCINotFound, OCINotRunning, OCIRuntimeError
from sandbox.oci.runc import classify, error_message


def args(**overrides: object) -> ConmonArgs:
    base: dict[str, object] = {
        "conmon_path": Path("/usr/bin/conmon"),
        "runtime_path": Path("/usr/sbin/runc"),
        "runtime_root": Path("/run/pycri/runc"),
        "ctr_id": "abc123",
        "name": "k8s_POD_web",
        "bundle": Path("/run/pycri/bundles/abc123"),
        "pidfile": Path("/run/pycri/bundles/abc123/pidfile"),
        "conmon_pidfile": Path("/run/pycri/persist/abc123/conmon.pid"),
        "exits_dir": Path("/run/pycri/exits"),
        "persist_dir": Path("/run/pycri/persist/abc123"),
        "attach_socket_dir": Path("/run/pycri/attach"),
        "log_path": Path("/var/log/pods/ns_web_uid/abc.log"),
    }
    base.update(overrides)
    return ConmonArgs(**base)  # type: ignore[arg-type]


def pairs(argv: list[str]) -> dict[str, str]:
    return {argv[i]: argv[i + 1] for i in range(1, len(argv) - 1) if argv[i].startswith("-")}


def test_argv_names_everything_conmon_needs() -> None:
    argv = conmon_argv(args())
    assert argv[0] == "/usr/bin/conmon"
    p = pairs(argv)
    assert p["--api-version"] == "1"
    assert p["-c"] == p["-u"] == "abc123"
    assert p["-n"] == "k8s_POD_web"
    assert p["-r"] == "/usr/sbin/runc"
    assert p["-b"] == "/run/pycri/bundles/abc123"
    assert p["-p"] == "/run/pycri/bundles/abc123/pidfile"
    assert p["-P"] == "/run/pycri/persist/abc123/conmon.pid"
    assert p["--exit-dir"] == "/run/pycri/exits"
    assert p["--persist-dir"] == "/run/pycri/persist/abc123"
    assert p["--socket-dir-path"] == "/run/pycri/attach"
    assert p["-l"] == "k8s-file:/var/log/pods/ns_web_uid/abc.log"
    assert p["--log-level"] == "error"
    assert "--full-attach" in argv
    runtime_args = [argv[i + 1] for i, a in enumerate(argv) if a == "--runtime-arg"]
    assert runtime_args == ["--root=/run/pycri/runc", "--log-format=json"]
    for flag in ("-t", "-i", "--leave-stdin-open", "--syslog", "-s", "--sync", "--exit-command"):
        assert flag not in argv


def test_runc_logs_to_a_file_and_the_systemd_driver_reaches_runc_and_conmon() -> None:
    """runc's own warnings must not land in the container's log (its stderr at create)."""
    argv = conmon_argv(args(runtime_log=Path("/run/pycri/persist/abc123/runc.log"),
                            systemd_cgroup=True))
    runtime_args = [argv[i + 1] for i, a in enumerate(argv) if a == "--runtime-arg"]
    assert runtime_args == ["--root=/run/pycri/runc", "--log-format=json", "--systemd-cgroup",
                            "--log=/run/pycri/persist/abc123/runc.log"]
    assert "--systemd-cgroup" in argv[argv.index("--log-level"):]


def test_argv_terminal_wins_over_stdin() -> None:
    argv = conmon_argv(args(terminal=True, stdin=True))
    assert "-t" in argv
    assert "-i" not in argv


def test_argv_stdin_once_and_leave_open() -> None:
    assert {"-i", "--leave-stdin-open"} <= set(conmon_argv(args(stdin=True)))
    once = conmon_argv(args(stdin=True, stdin_once=True))
    assert "-i" in once
    assert "--leave-stdin-open" not in once


def test_argv_log_size_max() -> None:
    assert pairs(conmon_argv(args(log_size_max=1 << 20)))["--log-size-max"] == str(1 << 20)


def test_argv_refuses_a_log_level_conmon_rejects() -> None:
    with pytest.raises(ValueError, match="log level"):
        conmon_argv(args(log_level="verbose"))


def test_attach_socket_lives_in_the_bundle() -> None:
    assert attach_socket_path(Path("/b/c1")) == Path("/b/c1/attach")


def test_sync_pid() -> None:
    assert parse_sync_message(b'{"data": 4242}\n') == 4242


def test_sync_failure_carries_runc_message() -> None:
    runc_stderr = (
        '{"level":"error","msg":"runc create failed: unable to start container process: '
        'exec: \\"/nope\\": stat /nope: no such file or directory","time":"2026-01-01T00:00:00Z"}\n'
    )
    line = json.dumps({"data": -1, "message": runc_stderr}).encode() + b"\n"
    with pytest.raises(OCIRuntimeError, match=r'exec: "/nope": stat /nope: no such file'):
        parse_sync_message(line)


def test_sync_failure_with_text_log_format_is_kept_raw() -> None:
    line = b'{"data": -1, "message": "time=\\"x\\" level=error msg=\\"boom\\"\\n"}\n'
    with pytest.raises(OCIRuntimeError, match="boom"):
        parse_sync_message(line)


def test_sync_failure_without_message() -> None:
    with pytest.raises(OCIRuntimeError, match="-1"):
        parse_sync_message(b'{"data": -1}\n')


def test_sync_eof_means_conmon_died() -> None:
    with pytest.raises(ConmonExitedEarly):
        parse_sync_message(b"")


@pytest.mark.parametrize("line", [b"not json\n", b'{"pid": 12}\n', b'{"data": "x"}\n', b"[1]\n"])
def test_sync_garbage(line: bytes) -> None:
    with pytest.raises(OCIRuntimeError, match="malformed"):
        parse_sync_message(line)


def test_runc_error_message_from_json_lines() -> None:
    stderr = (
        b'{"level":"warning","msg":"ignored","time":"t"}\n'
        b'{"level":"error","msg":"container does not exist","time":"t"}\n'
    )
    assert error_message(stderr) == "container does not exist"


def test_runc_error_message_falls_back_to_raw_text() -> None:
    assert error_message(b"flag provided but not defined: -x\n") == (
        "flag provided but not defined: -x"
    )


def test_classify() -> None:
    assert isinstance(classify("runc state: container does not exist"), OCINotFound)
    assert isinstance(classify("runc kill: container not running"), OCINotRunning)
    plain = classify("runc start: cannot start a container that has stopped")
    assert type(plain) is OCIRuntimeError
