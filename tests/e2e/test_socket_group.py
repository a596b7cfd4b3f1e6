"""[pycri.api] socket_group: the members of one group reach the CRI socket without root (what
an operator sets up for crictl), nobody else does, and the runroot it opens up for them to pass
through shows them nothing of the pods."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.e2e.containers import new_pod, remove_pod, serving
from tests.e2e.helpers import Daemon, need_root

pytestmark = pytest.mark.e2e

GROUP = 4242  # a gid no account here has: numeric, as the key allows
USER = 4243
# Debian's own python (the test's may live under /root, which that user cannot enter).
CONNECT = ("import socket, sys\n"
           "s = socket.socket(socket.AF_UNIX)\n"
           "try:\n    s.connect(sys.argv[1])\n"
           "except OSError as e:\n    sys.exit(e.errno)\n")


def _connect_as(sock: Path, groups: list[int]) -> int:
    """0 when an unprivileged user with ``groups`` can connect, else the errno."""
    return subprocess.run(["/usr/bin/python3", "-c", CONNECT, str(sock)], user=USER,
                          group=USER, extra_groups=groups, timeout=30).returncode


def test_the_socket_group_reaches_the_socket_and_nothing_else(tmp_path: Path) -> None:
    need_root()
    d = Daemon.new("sockgroup")
    os.chmod(d.base, 0o711)  # the test's base dir, in the way of the path only
    d.config_path.write_text(d.config_path.read_text().replace(
        "[pycri.api]\n", f'[pycri.api]\nsocket_group = "{GROUP}"\n'))
    with serving(d):  # the image pulled, and nothing of the pod left at the end
        sock = d.socket.stat()
        assert (stat.S_IMODE(sock.st_mode), sock.st_gid) == (0o660, GROUP)
        run = d.runroot.stat()
        assert (stat.S_IMODE(run.st_mode), run.st_uid, run.st_gid) == (0o710, 0, GROUP)
        assert _connect_as(d.socket, [GROUP]) == 0
        assert _connect_as(d.socket, []) == errno.EACCES
        assert _connect_as(d.socket, [GROUP + 1]) == errno.EACCES
        pod = new_pod(d, tmp_path)
        pod.run("app", ["sleep", "60"])
        # Beside the socket, runroot holds only what the group cannot open: root's own
        # directories and files with no group or other bits.
        exposed = [f"{p.name} {stat.filemode(p.lstat().st_mode)}"
                   for p in d.runroot.iterdir()
                   if p != d.socket and p.lstat().st_mode & 0o077]
        assert exposed == []
        remove_pod(pod)
        # A restart gives the same modes (prepare makes runroot 0700, then the group's).
        d.restart()
        assert stat.S_IMODE(d.runroot.stat().st_mode) == 0o710
        assert _connect_as(d.socket, [GROUP]) == 0


def test_a_socket_group_in_a_shared_directory_is_refused() -> None:
    need_root()
    d = Daemon.new("sockshared")
    d.config_path.write_text(d.config_path.read_text().replace(
        f'listen = "{d.socket}"\n', 'listen = "/run/pycri-test.sock"\nsocket_group = "4242"\n'))
    try:
        log = d.start_fails()
        assert "pycri.api.socket_group: /run, the socket's directory, would be given" in log
        assert stat.S_IMODE(Path("/run").stat().st_mode) != 0o710
    finally:
        d.cleanup()
