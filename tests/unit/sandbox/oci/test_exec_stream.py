"""Interactive execs in a real container: pipes, a pty with resize, stdin EOF, exit codes, and
a kill that leaves nothing (the container of test_exec_sync.py is reused)."""

from __future__ import annotations

import asyncio

from sandbox.oci.exec_stream import ExecStream
from tests.unit.sandbox.oci.test_exec_sync import (  # noqa: F401 - fixtures
    Container,
    Env,
    ctr,
    env,
    procs_with_arg,
    real,
    run,
)

WAIT = 30.0


async def start(e: Env, c: Container, argv: list[str], tty: bool = False,
                **kw: int) -> ExecStream:
    return await ExecStream.start(e.runtime.runtime_path, e.runtime.runtime_root,
                                  c.ctr_id, argv, container_process=c.process, tty=tty,
                                  scratch_dir=e.tmp / "scratch", **kw)


@real
def test_pipes_stdin_eof_and_exit_code(env: Env, ctr: Container) -> None:  # noqa: F811
    async def body() -> None:
        ex = await start(env, ctr, ["sh", "-c", "cat; echo err >&2; exit 5"])
        await ex.write_stdin(b"hello\n")
        ex.close_stdin()
        assert ex.stderr is not None
        async with asyncio.timeout(WAIT):
            out = await ex.stdout.read()
            err = await ex.stderr.read()
            code = await ex.wait()
        assert (out, err, code) == (b"hello\n", b"err\n", 5)

    run(body())


@real
def test_tty_resize_and_exit(env: Env, ctr: Container) -> None:  # noqa: F811
    async def body() -> None:
        ex = await start(env, ctr, ["sh"], tty=True, width=80, height=24)
        assert ex.tty and ex.stderr is None
        ex.resize(123, 45)
        # runc relays the size to the container's pty on its own time, not in order with
        # stdin: the shell waits for it (a loaded CI host ran stty first and saw 24 80).
        await ex.write_stdin(b'for i in $(seq 50); do [ "$(stty size)" = "45 123" ] && break; '
                             b"sleep 0.1; done; stty size; tty; exit 3\n")
        async with asyncio.timeout(WAIT):
            out = await ex.stdout.read()
            code = await ex.wait()
        assert b"45 123" in out and b"/dev/pts/" in out
        assert code == 3

    run(body())


@real
def test_kill_ends_the_whole_tree(env: Env, ctr: Container) -> None:  # noqa: F811
    marker = "7654321"

    async def body() -> None:
        ex = await start(env, ctr, ["sh", "-c",
                                    f"sleep {marker}1 & echo started; exec sleep {marker}2"])
        async with asyncio.timeout(WAIT):
            assert await ex.stdout.readline() == b"started\n"
            await ex.kill()
        assert procs_with_arg(marker.encode()) == []
        assert list((env.tmp / "scratch").iterdir()) == []

    run(body())
