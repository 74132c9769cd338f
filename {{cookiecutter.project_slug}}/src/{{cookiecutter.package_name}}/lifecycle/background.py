"""Run a coroutine beside the service for as long as a block runs."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine


@contextlib.asynccontextmanager
async def in_background(
    coroutine: Coroutine[Any, Any, None], *, name: str
) -> AsyncIterator[asyncio.Task[None]]:
    """Run `coroutine` as a task during the block; on leaving it, cancel it and wait for it."""
    task = asyncio.get_running_loop().create_task(coroutine, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
