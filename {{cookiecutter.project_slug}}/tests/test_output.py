"""Log output: lines queued inside an event loop are written together, in batches."""

from __future__ import annotations

import asyncio
import io
import threading

from {{ cookiecutter.package_name }}.observability.output import LineWriter


class CountingStream(io.BytesIO):
    """A binary stream that counts its write calls."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: object) -> int:
        self.writes += 1
        return super().write(data)  # type: ignore[arg-type]


INTERVAL = 0.02


async def test_lines_within_the_interval_share_one_write() -> None:
    stream = CountingStream()
    writer = LineWriter(stream, interval=INTERVAL)
    writer.write_line(b"line 0")
    await asyncio.sleep(0)
    writer.write_line(b"line 1")
    writer.write_line(b"line 2")
    assert stream.getvalue() == b""  # nothing before the interval is up
    await asyncio.sleep(INTERVAL * 3)
    assert stream.getvalue() == b"line 0\nline 1\nline 2\n"
    assert stream.writes == 1


async def test_the_next_batch_gets_its_own_write() -> None:
    stream = CountingStream()
    writer = LineWriter(stream, interval=INTERVAL)
    writer.write_line(b"first")
    await asyncio.sleep(INTERVAL * 3)
    writer.write_line(b"second")
    await asyncio.sleep(INTERVAL * 3)
    assert stream.getvalue() == b"first\nsecond\n"
    assert stream.writes == 2


async def test_a_full_buffer_is_written_at_once() -> None:
    stream = CountingStream()
    writer = LineWriter(stream, interval=60.0)
    line = b"x" * 1023
    for _ in range(64):
        writer.write_line(line)
    assert stream.writes == 1  # 64 KiB reached: no waiting for the interval
    assert len(stream.getvalue()) == 64 * 1024


def test_outside_a_loop_every_line_is_written_at_once() -> None:
    stream = CountingStream()
    writer = LineWriter(stream)
    writer.write_line(b"startup")
    assert stream.getvalue() == b"startup\n"


async def test_a_thread_without_a_loop_writes_at_once_and_keeps_the_order() -> None:
    stream = CountingStream()
    writer = LineWriter(stream)
    writer.write_line(b"from the loop")
    thread = threading.Thread(target=writer.write_line, args=(b"from a thread",))
    thread.start()
    thread.join()
    assert stream.getvalue() == b"from the loop\nfrom a thread\n"


async def test_flush_writes_what_is_queued() -> None:
    stream = CountingStream()
    writer = LineWriter(stream)
    writer.write_line(b"last words")
    writer.flush()
    assert stream.getvalue() == b"last words\n"
