"""Graceful shutdown: fail readiness at the first SIGTERM, keep serving, then stop.

Load balancers and Kubernetes endpoints take a few seconds to stop sending traffic to a
terminating instance. Closing the listening socket at once would reset those late
requests, so the first SIGTERM only marks the service as draining (readiness answers
503) and hands the signal to uvicorn `drain_seconds` later. uvicorn then stops
accepting, finishes in-flight requests and runs the lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType

log = structlog.get_logger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Drain:
    """Holds the draining flag and delays the server's own signal handling."""

    def __init__(self, seconds: float) -> None:
        """`seconds` between the first signal and uvicorn's shutdown."""
        self.seconds = seconds
        self.draining = False
        self._originals: dict[int, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        """Wrap the handlers the server installed (uvicorn's), if we are in the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return  # in-process test servers: no signals to take over
        self._loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            original = signal.getsignal(sig)
            if callable(original):
                self._originals[sig] = original
                signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        """Give the original handlers back."""
        for sig, original in self._originals.items():
            signal.signal(sig, original)
        self._originals.clear()

    @contextlib.contextmanager
    def installed(self) -> Iterator[Drain]:
        """Hold the server's signals for as long as the block runs."""
        self.install()
        try:
            yield self
        finally:
            self.uninstall()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        original = self._originals[signum]
        if self.draining or self.seconds <= 0 or self._loop is None:
            original(signum, frame)  # a second signal: uvicorn's own (forced) exit
            return
        self.draining = True  # readiness fails from this instant
        # Logging and scheduling happen on the loop, not inside the signal handler.
        self._loop.call_soon_threadsafe(self._schedule_exit, original, signum, frame)

    def _schedule_exit(self, original: Any, signum: int, frame: FrameType | None) -> None:  # noqa: ANN401 - a signal handler
        log.info(
            "shutdown_draining", signal=signal.Signals(signum).name, drain_seconds=self.seconds
        )
        asyncio.get_running_loop().call_later(self.seconds, original, signum, frame)
