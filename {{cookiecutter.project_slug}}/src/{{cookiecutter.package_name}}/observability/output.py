"""Log lines to stdout, written in batches rather than one system call per line.

A `write` system call per line cost more than rendering the line: measured against
the benchmark, the access line alone cost ~20 µs per request with a write per loop
iteration. `LineWriter` queues the lines written inside an event loop and writes
them with one call `interval` (50 ms) after the first of them, or at once when
64 KiB are queued. Outside an event loop (start-up, commands, other threads) every
line is written at once, after those queued.

The cost is what a crash leaves unwritten: at most the last `interval` of lines.
`flush()` runs at interpreter exit and at the end of the app's lifespan, so a
graceful stop loses nothing.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from threading import get_ident
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from typing import BinaryIO

__all__ = ["LineLogger", "LineLoggerFactory", "LineWriter"]

# Written at once past this size, whatever the time.
_MAX_BUFFER: Final = 64 * 1024
DEFAULT_INTERVAL: Final = 0.05


class LineWriter:
    """Newline-terminated lines for a binary stream, written in batches from an event loop."""

    __slots__ = ("_buffer", "_interval", "_lock", "_pending", "_pending_thread", "_stream")

    def __init__(self, stream: BinaryIO, interval: float = DEFAULT_INTERVAL) -> None:
        """Write to `stream` (e.g. ``sys.stdout.buffer``) at most `interval` seconds late."""
        self._stream = stream
        self._interval = interval
        self._buffer = bytearray()
        self._lock = threading.Lock()
        # The loop that has a flush scheduled, if any, and its thread.
        self._pending: asyncio.AbstractEventLoop | None = None
        self._pending_thread = 0
        atexit.register(self.flush)

    def write_line(self, line: bytes) -> None:
        """Queue `line` (without its newline); it is written within `interval`."""
        with self._lock:
            self._buffer += line
            self._buffer += b"\n"
            pending = self._pending
            if (
                pending is not None
                and self._pending_thread == get_ident()
                and pending.is_running()
                and len(self._buffer) < _MAX_BUFFER
            ):
                return  # this thread's loop writes it with the batch
            # Only now look the loop up: on Python 3.11 that costs a getpid() call.
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is None or len(self._buffer) >= _MAX_BUFFER:
                self._write_locked()
                return
            self._pending = loop
            self._pending_thread = get_ident()
        loop.call_later(self._interval, self.flush)

    def flush(self) -> None:
        """Write what is queued now."""
        with self._lock:
            self._pending = None
            self._write_locked()

    def _write_locked(self) -> None:
        if not self._buffer:
            return
        data = memoryview(self._buffer)
        try:
            # A raw stream (python -u) may take only part of the bytes per call.
            while data:
                written = self._stream.write(data)
                data = data[written if written is not None else len(data) :]
            self._stream.flush()
        finally:
            data.release()
            self._buffer.clear()


class LineLogger:
    """structlog's output for rendered lines (bytes), through a `LineWriter`."""

    __slots__ = ("_writer", "name")

    def __init__(self, writer: LineWriter, name: str | None = None) -> None:
        """Write every rendered line through `writer`; `name` is the logger's name."""
        self._writer = writer
        self.name = name

    def msg(self, message: bytes) -> None:
        """Write one rendered line; structlog calls this for every level."""
        self._writer.write_line(message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


class LineLoggerFactory:
    """structlog `logger_factory`: one `LineLogger` per `get_logger(name)`, sharing a writer."""

    __slots__ = ("writer",)

    def __init__(self, writer: LineWriter) -> None:
        """Make loggers that write through `writer`."""
        self.writer = writer

    def __call__(self, *args: object) -> LineLogger:
        """Return a logger named after the first argument, if it is a string."""
        name = args[0] if args and isinstance(args[0], str) else None
        return LineLogger(self.writer, name)
