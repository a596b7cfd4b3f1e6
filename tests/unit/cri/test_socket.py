from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cri.server import SocketInUse, claim_socket


def test_stale_socket_is_replaced_live_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "run" / "pycri.sock"
    claim_socket(path)  # parent created, nothing there
    assert path.parent.is_dir()
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen()
    with pytest.raises(SocketInUse, match="in use"):
        claim_socket(path)
    live.close()  # the file stays: a stale socket, as after kill -9
    assert path.exists()
    claim_socket(path)
    assert not path.exists()


def test_non_socket_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "pycri.sock"
    path.write_text("precious")
    with pytest.raises(SocketInUse, match="not a socket"):
        claim_socket(path)
    assert path.read_text() == "precious"
