"""sd_notify: a datagram to the socket $NOTIFY_SOCKET names (a path or an abstract '@' name)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri import sdnotify


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """What systemd listens on: a datagram socket at a path in tmp_path."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield sock, str(path)


def test_ready_reaches_a_socket_named_by_path(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    assert sdnotify.notify("READY=1\nSTATUS=serving", path)
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_an_at_sign_names_an_abstract_socket() -> None:
    name = f"pycri-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert sdnotify.notify("STOPPING=1", "@" + name)
        assert sock.recv(4096) == b"STOPPING=1"


def test_without_a_socket_nothing_is_sent(tmp_path: Path) -> None:
    assert not sdnotify.notify("READY=1", "")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["relative/notify", "@", "vsock:2:1234"])
def test_an_address_that_is_not_a_unix_socket_is_ignored(
        name: str, caplog: pytest.LogCaptureFixture) -> None:
    assert not sdnotify.notify("READY=1", name)
    assert "not a unix socket address" in caplog.text


def test_an_unreachable_socket_is_logged_not_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert not sdnotify.notify("READY=1", str(tmp_path / "gone"))
    assert "cannot notify systemd (READY=1)" in caplog.text


def test_taking_the_socket_removes_it_from_what_children_inherit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    assert sdnotify.take_socket() == "/run/systemd/notify"
    assert "NOTIFY_SOCKET" not in os.environ
    assert sdnotify.take_socket() == ""
