"""Event-loop lag: how late a timer fires tells how long something blocked the loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


class LoopLagMonitor:
    """A background task that samples loop lag every `interval` seconds."""

    def __init__(
        self, interval: float = 0.5, on_sample: Callable[[float], None] | None = None
    ) -> None:
        """`on_sample(lag_seconds)` is called after each sample (e.g. a metrics histogram)."""
        self.interval = interval
        self.lag = 0.0
        self._on_sample = on_sample
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-monitor")

    async def stop(self) -> None:
        """Cancel the sampler and wait for it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LoopLagMonitor]:
        """Sample for as long as the block runs."""
        self.start()
        try:
            yield self
        finally:
            await self.stop()

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.lag = max(0.0, time.perf_counter() - started - self.interval)
            if self._on_sample is not None:
                self._on_sample(self.lag)
