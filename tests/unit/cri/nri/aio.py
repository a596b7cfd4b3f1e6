"""Running an asyncio test scenario under a bound (so a hang fails the test instead of CI)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


def run(scenario: Callable[[], Awaitable[None]], bound: float = 30) -> None:
    async def main() -> None:
        await asyncio.wait_for(scenario(), bound)

    asyncio.run(main())
