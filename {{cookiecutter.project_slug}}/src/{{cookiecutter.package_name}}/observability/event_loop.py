"""Event-loop lag: how late a timer fires tells how long something blocked the loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.lifecycle.background import in_background

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

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LoopLagMonitor]:
        """Sample for as long as the block runs."""
        async with in_background(self._run(), name="loop-lag-monitor"):
            yield self

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.lag = max(0.0, time.perf_counter() - started - self.interval)
            if self._on_sample is not None:
                self._on_sample(self.lag)
