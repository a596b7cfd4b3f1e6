from __future__ import annotations

import concurrent.futures
import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import netns
from sandbox.errors import NetnsError

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def _thread_netns() -> set[int]:
    """The netns inode of every thread of this process."""
    inodes = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just exited
            inodes.add((task / "ns/net").stat().st_ino)
    return inodes


def _mountinfo(path: Path) -> list[list[str]]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [fields for fields in map(str.split, lines) if fields[4] == str(path)]


def _in_ns(pin: Path, *cmd: str) -> str:
    return subprocess.run(
        ["nsenter", f"--net={pin}", *cmd], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "netns"
    yield d
    # Undo whatever a failing test left: pins first, then the run dir's own bind mount.
    if d.is_dir():
        for pin in d.iterdir():
            netns.remove(pin)
    while _mountinfo(d):
        subprocess.run(["umount", "-l", str(d)], check=True)


@root_only
def test_create_pins_a_new_namespace_with_lo_up(run_dir: Path) -> None:
    own = Path("/proc/self/ns/net").stat().st_ino
    pin = netns.create("pod-a", run_dir)
    assert pin == run_dir / "pod-a"
    assert pin.stat().st_ino != own  # the pin is an nsfs inode, not the empty file
    assert _mountinfo(pin), "pin is not a mount"
    # The run dir is a shared mount of its own, so pins propagate like `ip netns` ones.
    (run_dir_mount,) = _mountinfo(run_dir)
    assert any(f.startswith("shared:") for f in run_dir_mount[6 : run_dir_mount.index("-")])

    link = _in_ns(pin, "ip", "-o", "link", "show", "lo")
    assert "UP" in link.split("<")[1].split(">")[0].split(",")
    assert "inet 127.0.0.1/8" in _in_ns(pin, "ip", "-o", "addr", "show", "lo")
    assert "eth0" not in _in_ns(pin, "ip", "-o", "link")
    assert _thread_netns() == {own}

    netns.remove(pin)
    assert not pin.exists()
    assert not _mountinfo(pin)
    netns.remove(pin)  # idempotent


@root_only
def test_daemon_threads_never_change_namespace(run_dir: Path) -> None:
    # The daemon calls create() from asyncio.to_thread: a pool thread must come back unchanged.
    own = Path("/proc/self/ns/net").stat().st_ino
    workers = 4
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        pins = list(pool.map(lambda i: netns.create(f"p{i}", run_dir), range(16)))
        barrier = threading.Barrier(workers)

        def whoami(_: int) -> tuple[int, int]:
            barrier.wait(timeout=10)  # every worker takes exactly one: all of them answer
            return threading.get_native_id(), Path("/proc/thread-self/ns/net").stat().st_ino

        answers = list(pool.map(whoami, range(workers)))
        assert len({tid for tid, _ in answers}) == workers
        assert {ino for _, ino in answers} == {own}
        assert len({p.stat().st_ino for p in pins}) == 16  # sixteen distinct namespaces
        list(pool.map(netns.remove, pins))
    assert list(run_dir.iterdir()) == []
    # The throwaway threads may still be in the middle of exiting after join(); they go away.
    deadline = time.monotonic() + 5
    while _thread_netns() != {own} and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _thread_netns() == {own}


@root_only
def test_existing_name_is_refused_and_left_alone(run_dir: Path) -> None:
    pin = netns.create("dup", run_dir)
    inode = pin.stat().st_ino
    with pytest.raises(NetnsError, match="already exists"):
        netns.create("dup", run_dir)
    assert pin.stat().st_ino == inode
    netns.remove(pin)


@root_only
def test_failure_after_the_pin_file_removes_it(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(pin: Path) -> None:
        raise OSError(1, "injected")

    monkeypatch.setattr(netns, "_unshare_and_pin", fail)
    with pytest.raises(NetnsError, match="injected"):
        netns.create("broken", run_dir)
    assert list(run_dir.iterdir()) == []


@root_only
def test_loopback_up_brings_lo_back(run_dir: Path) -> None:
    pin = netns.create("lo-test", run_dir)
    _in_ns(pin, "ip", "link", "set", "lo", "down")
    assert "UP" not in _in_ns(pin, "ip", "-o", "link", "show", "lo").split(">")[0]
    netns.loopback_up(pin)
    assert "UP" in _in_ns(pin, "ip", "-o", "link", "show", "lo").split("<")[1].split(">")[0]
    netns.loopback_up(pin)  # already up: fine
    netns.remove(pin)
    with pytest.raises(NetnsError):
        netns.loopback_up(pin)


@root_only
def test_remove_of_unmounted_or_missing_file(run_dir: Path) -> None:
    run_dir.mkdir()
    plain = run_dir / "plain"
    plain.touch()
    netns.remove(plain)
    assert not plain.exists()
    netns.remove(run_dir / "never-made")


@root_only
def test_the_default_run_dir(tmp_path: Path) -> None:
    name = f"pycri-test-{os.getpid()}"
    pin = netns.create(name)
    try:
        assert pin == Path("/var/run/netns") / name
        # iproute2 sees it as one of its own.
        assert (
            name
            in subprocess.run(
                ["ip", "netns", "list"], check=True, capture_output=True, text=True
            ).stdout
        )
    finally:
        netns.remove(pin)
    assert not pin.exists()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../etc", "x" * 256, "a\nb", "-x"])
def test_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(NetnsError, match="invalid"):
        netns.create(name, tmp_path / "netns")
    assert not (tmp_path / "netns").exists()


@pytest.mark.parametrize("path", ["", ".", "/", "relative/pin", "/var/run/netns/..", "//"])
def test_remove_refuses_dangerous_paths(path: str) -> None:
    with pytest.raises(NetnsError, match="refusing"):
        netns.remove(Path(path))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_connect_tcp_reaches_a_port_inside_the_namespace_only(run_dir: Path) -> None:
    import socket as socket_mod
    import threading

    from sandbox.netns import connect_tcp

    pin = netns.create(f"pycri-test-{os.getpid()}", run_dir)
    try:
        # A listener inside the namespace, made the same way (a thread that entered it).
        ready = threading.Event()
        got: list[bytes] = []
        holder: list[socket_mod.socket] = []

        def serve() -> None:
            fd = os.open(pin, os.O_RDONLY)
            from sandbox.libc import libc
            assert libc.setns(fd, 0x40000000) == 0
            os.close(fd)
            srv = socket_mod.socket()
            srv.bind(("127.0.0.1", 0))
            srv.listen(1)
            holder.append(srv)
            ready.set()
            conn, _ = srv.accept()
            got.append(conn.recv(100))
            conn.close()
            srv.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        assert ready.wait(10)
        port = holder[0].getsockname()[1]
        with pytest.raises(OSError):  # not in the daemon's own namespace
            connect_tcp(None, port, timeout=2).close()
        sock = connect_tcp(pin, port)
        sock.sendall(b"ping")
        sock.close()
        t.join(10)
        assert got == [b"ping"]
        with pytest.raises(ConnectionRefusedError):
            connect_tcp(pin, port)  # nothing listens any more
        with pytest.raises(ValueError):
            connect_tcp(pin, 0)
    finally:
        netns.remove(pin)
