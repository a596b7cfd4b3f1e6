"""ExitWatcher against a plain directory: conmon's file protocol, no root needed."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path

from sandbox.oci.exits import ExitWatcher, parse_exit_file
from sandbox.oci.inotify import IN_CLOSE_WRITE, IN_MOVED_TO, Inotify, decode_events

WAIT = 10.0  # generous: only ever reached when something is broken

Exit = tuple[str, int, datetime]


def write_like_conmon(exits_dir: Path, ctr_id: str, text: str) -> None:
    """g_file_set_contents(): a dotted temporary renamed over the final name."""
    tmp = exits_dir / f"{ctr_id}.Xy12Zq"
    tmp.write_text(text)
    tmp.replace(exits_dir / ctr_id)


class Recorder:
    def __init__(self) -> None:
        self.exits: list[Exit] = []
        self.changed = asyncio.Event()

    def __call__(self, ctr_id: str, code: int, at: datetime) -> None:
        self.exits.append((ctr_id, code, at))
        self.changed.set()

    async def wait_for(self, count: int) -> list[Exit]:
        async with asyncio.timeout(WAIT):
            while len(self.exits) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.exits


async def settle() -> None:
    """Let already-queued inotify events be delivered (a round trip through the loop)."""
    for _ in range(3):
        await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done


def run(body: Callable[[], Coroutine[None, None, None]]) -> None:
    asyncio.run(body())


def test_parse_exit_file() -> None:
    assert parse_exit_file(b"137") == 137
    assert parse_exit_file(b"0\n") == 0
    assert parse_exit_file(b"-1") == -1
    assert parse_exit_file(b"") is None
    assert parse_exit_file(b"  ") is None
    assert parse_exit_file(b"13x") is None
    assert parse_exit_file(b"1" * 100) is None


def test_decode_events_handles_padding_and_several_events() -> None:
    raw = b""
    for wd, mask, name in ((1, IN_CLOSE_WRITE, b"abc"), (1, IN_MOVED_TO, b"")):
        padded = name + b"\0" * (16 - len(name)) if name else b""
        raw += struct.pack("iIII", wd, mask, 0, len(padded)) + padded
    events = decode_events(raw)
    assert [(e.mask, e.name) for e in events] == [(IN_CLOSE_WRITE, "abc"), (IN_MOVED_TO, "")]


def test_inotify_reports_nothing_when_idle(tmp_path: Path) -> None:
    inotify = Inotify()
    try:
        inotify.add_watch(tmp_path, IN_CLOSE_WRITE)
        assert inotify.read_events() == []
        (tmp_path / "f").write_text("x")
        assert [e.name for e in inotify.read_events()] == ["f"]
    finally:
        inotify.close()


def test_exit_reported_with_code_and_mtime(tmp_path: Path) -> None:
    async def body() -> None:
        rec = Recorder()
        watcher = ExitWatcher(tmp_path, rec)
        watcher.start()
        try:
            write_like_conmon(tmp_path, "c1", "137")
            [(ctr_id, code, at)] = await rec.wait_for(1)
            assert (ctr_id, code) == ("c1", 137)
            mtime = (tmp_path / "c1").stat().st_mtime_ns / 1e9
            assert at == datetime.fromtimestamp(mtime, tz=UTC)
            assert watcher.read_exit("c1") == (137, at)
        finally:
            watcher.close()

    run(body)


def test_direct_writer_is_noticed_on_close(tmp_path: Path) -> None:
    async def body() -> None:
        rec = Recorder()
        watcher = ExitWatcher(tmp_path, rec)
        watcher.start()
        try:
            (tmp_path / "c2").write_text("0")
            assert [(c, code) for c, code, _ in await rec.wait_for(1)] == [("c2", 0)]
        finally:
            watcher.close()

    run(body)


def test_existing_exits_reported_once_at_start(tmp_path: Path) -> None:
    async def body() -> None:
        (tmp_path / "old1").write_text("1")
        (tmp_path / "old2").write_text("143")
        (tmp_path / "old3.AbCdEf").write_text("9")  # a glib temporary left by a crash
        rec = Recorder()
        watcher = ExitWatcher(tmp_path, rec)
        watcher.start()
        try:
            await settle()
            assert sorted((c, code) for c, code, _ in rec.exits) == [("old1", 1), ("old2", 143)]
        finally:
            watcher.close()

    run(body)


def test_empty_or_partial_file_waits_for_the_complete_write(tmp_path: Path) -> None:
    async def body() -> None:
        rec = Recorder()
        watcher = ExitWatcher(tmp_path, rec)
        watcher.start()
        try:
            (tmp_path / "c3").write_text("")
            (tmp_path / "c4").write_text("garbage")
            await settle()
            assert rec.exits == []
            assert watcher.read_exit("c3") is None
            (tmp_path / "c3").write_text("2")
            assert [(c, code) for c, code, _ in await rec.wait_for(1)] == [("c3", 2)]
        finally:
            watcher.close()

    run(body)


def test_temporaries_and_duplicates_are_not_reported(tmp_path: Path) -> None:
    async def body() -> None:
        rec = Recorder()
        watcher = ExitWatcher(tmp_path, rec)
        watcher.start()
        try:
            write_like_conmon(tmp_path, "c5", "0")
            await rec.wait_for(1)
            # Touching the file again without a change (same inode, same mtime) is no new exit.
            fd = os.open(tmp_path / "c5", os.O_RDONLY)
            os.close(fd)
            await settle()
            assert [c for c, _, _ in rec.exits] == ["c5"]
        finally:
            watcher.close()

    run(body)


def test_a_removed_and_rewritten_id_is_reported_again(tmp_path: Path) -> None:
    async def body() -> None:
        rec = Recorder()
        watcher = ExitWatcher(tmp_path, rec)
        watcher.start()
        try:
            write_like_conmon(tmp_path, "c6", "1")
            await rec.wait_for(1)
            (tmp_path / "c6").unlink()
            write_like_conmon(tmp_path, "c6", "2")
            exits = await rec.wait_for(2)
            assert [(c, code) for c, code, _ in exits] == [("c6", 1), ("c6", 2)]
        finally:
            watcher.close()

    run(body)


def test_callback_errors_do_not_stop_the_watcher(tmp_path: Path) -> None:
    async def body() -> None:
        rec = Recorder()

        def flaky(ctr_id: str, code: int, at: datetime) -> None:
            rec(ctr_id, code, at)
            if ctr_id == "bad":
                raise RuntimeError("callback bug")

        watcher = ExitWatcher(tmp_path, flaky)
        watcher.start()
        try:
            write_like_conmon(tmp_path, "bad", "1")
            await rec.wait_for(1)
            write_like_conmon(tmp_path, "good", "0")
            assert [c for c, _, _ in await rec.wait_for(2)] == ["bad", "good"]
        finally:
            watcher.close()

    run(body)


def test_many_exits_at_once(tmp_path: Path) -> None:
    async def body() -> None:
        rec = Recorder()
        watcher = ExitWatcher(tmp_path, rec)
        watcher.start()
        try:
            for i in range(200):
                write_like_conmon(tmp_path, f"m{i}", str(i % 256))
            exits = await rec.wait_for(200)
            assert sorted(c for c, _, _ in exits) == sorted(f"m{i}" for i in range(200))
        finally:
            watcher.close()

    run(body)


def test_read_exit_of_unknown_and_close_twice(tmp_path: Path) -> None:
    async def body() -> None:
        watcher = ExitWatcher(tmp_path / "created", Recorder())
        watcher.start()
        assert (tmp_path / "created").is_dir()
        assert watcher.read_exit("nope") is None
        assert watcher.read_exit("../etc") is None
        watcher.close()
        watcher.close()

    run(body)
