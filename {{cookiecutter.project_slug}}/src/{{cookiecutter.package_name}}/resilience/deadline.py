"""Deadlines for every request and pool acquire, watched by one timer.

`asyncio.timeout` arms an event-loop timer per use and cancels it again (about 4 µs
with uvloop, twice per database request). `Deadlines` instead keeps the running
deadlines in a set and checks them from one timer that ticks every `resolution`
seconds while any are running, so a use costs a set insert and removal. The price is
precision: a deadline fires up to `resolution` late, which a timeout of seconds never
notices.

Semantics follow `asyncio.timeout`: the overrunning task is cancelled, and the
cancellation surfaces from the `with` block as `TimeoutError`, unless something else
cancelled the task as well. A plain `with`, not `async with`: entering and leaving
await nothing, and two coroutines per use would cost each request for no reason.
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType

DEFAULT_RESOLUTION = 0.05


class Deadline:
    """One running deadline; use it as `with deadlines.within(seconds):` in a task."""

    __slots__ = ("_cancelling", "_deadlines", "_task", "expired", "seconds", "when")

    # Set on entry: a deadline is made on every request, and most are never entered twice.
    when: float
    _task: asyncio.Task[object]
    _cancelling: int

    def __init__(self, deadlines: Deadlines, seconds: float) -> None:
        """A deadline `seconds` after entry; `Deadlines.within` makes them."""
        self._deadlines = deadlines
        self.seconds = seconds
        self.expired = False

    def __enter__(self) -> Self:
        """Start the clock for the current task."""
        deadlines = self._deadlines
        # current_task(loop) with the loop known: without it, Python 3.11 looks the
        # running loop up, with a getpid() system call each time.
        loop = deadlines._loop  # noqa: SLF001 - the two classes are one mechanism
        task = asyncio.current_task(loop) if loop is not None else None
        if task is None:  # first use, or a new loop (tests run several)
            task = deadlines._bind_running_loop()  # noqa: SLF001
        self._task = task
        self._cancelling = task.cancelling()
        self.when = monotonic() + self.seconds
        deadlines._running.add(self)  # noqa: SLF001
        if deadlines._timer is None:  # noqa: SLF001
            deadlines._arm()  # noqa: SLF001
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the clock; turn the deadline's own cancellation into `TimeoutError`."""
        self._deadlines._running.discard(self)  # noqa: SLF001
        # Withdraw our cancellation; if it was the only one, it becomes a timeout.
        if (
            self.expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel(f"deadline of {self.seconds:g}s exceeded")


class Deadlines:
    """The running deadlines of one event loop, checked every `resolution` seconds.

    One per event loop (the app factory makes one per app): it remembers the loop.
    """

    __slots__ = ("_loop", "_resolution", "_running", "_timer")

    def __init__(self, resolution: float = DEFAULT_RESOLUTION) -> None:
        """Check running deadlines every `resolution` seconds (they fire that much late at most)."""
        self._resolution = resolution
        self._running: set[Deadline] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def within(self, seconds: float) -> Deadline:
        """`with deadlines.within(seconds):` raises `TimeoutError` once they are up."""
        return Deadline(self, seconds)

    def __len__(self) -> int:
        """How many deadlines are running."""
        return len(self._running)

    def _bind_running_loop(self) -> asyncio.Task[object]:
        """Adopt the running loop; return the current task."""
        self._loop = loop = asyncio.get_running_loop()
        self._timer = None  # a timer on the previous loop no longer runs
        task = asyncio.current_task(loop)
        if task is None:
            msg = "a deadline must be entered inside a task"
            raise RuntimeError(msg)
        return task

    def _arm(self) -> None:
        if self._loop is not None:
            self._timer = self._loop.call_later(self._resolution, self._check)

    def _check(self) -> None:
        running = self._running
        loop = self._loop
        if not running or loop is None:
            self._timer = None  # idle: no timer until the next deadline starts
            return
        now = monotonic()
        for deadline in [d for d in running if d.when <= now and not d.expired]:
            deadline._expire()  # noqa: SLF001
        self._timer = loop.call_later(self._resolution, self._check)
