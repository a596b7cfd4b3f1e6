"""Attach through a real conmon: stdin in, stdout out, several sessions, detach leaves the
container running."""

from __future__ import annotations

import asyncio
import os

from sandbox.oci.attach import Attach, AttachError
from tests.unit.sandbox.oci.test_exec_sync import (  # noqa: F401 - fixtures
    Env,
    env,
    real,
    run,
)

WAIT = 30.0


@real
def test_attach_stdin_stdout_two_sessions_and_detach(env: Env) -> None:  # noqa: F811
    async def body() -> None:
        c = await env.start_container(args=["/usr/bin/cat"], stdin=True)
        bundle = env.tmp / "bundles" / c.ctr_id
        first = await Attach.open(bundle)
        second = await Attach.open(bundle)
        async with asyncio.timeout(WAIT):
            await first.write_stdin(b"hello\n")
            assert await first.stdout.readline() == b"hello\n"
            assert await second.stdout.readline() == b"hello\n"  # conmon fans out
            await first.close()  # detach
            await second.write_stdin(b"again\n")
            assert await second.stdout.readline() == b"again\n"
            await second.close()
        os.kill(c.init_pid, 0)  # still running after both detached

    run(body())


@real
def test_attach_to_a_missing_socket_is_a_clear_error(env: Env, tmp_path) -> None:  # noqa: F811
    async def body() -> None:
        try:
            await Attach.open(tmp_path)
        except AttachError as exc:
            assert "attach" in str(exc)
        else:
            raise AssertionError("attach to nothing succeeded")

    run(body())
