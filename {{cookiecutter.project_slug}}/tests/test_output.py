"""Log output: every line is written whole, at once, from any thread."""

from __future__ import annotations

import io
import threading

from {{ cookiecutter.package_name }}.observability.logs.output import LineWriter


class ShortWritesStream(io.BytesIO):
    """A raw-stream stand-in that takes at most `limit` bytes per write call."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.flushes = 0

    def write(self, data: object) -> int:
        return super().write(bytes(data)[: self.limit])  # type: ignore[call-overload]

    def flush(self) -> None:
        self.flushes += 1


async def test_a_line_inside_an_event_loop_is_written_at_once() -> None:
    stream = ShortWritesStream(limit=1 << 20)
    LineWriter(stream).write_line(b"request")
    assert stream.getvalue() == b"request\n"
    assert stream.flushes == 1  # out of any buffer, not waiting for the next line


def test_a_stream_that_takes_part_of_a_line_gets_the_rest() -> None:
    stream = ShortWritesStream(limit=3)
    writer = LineWriter(stream)
    writer.write_line(b"0123456789")
    writer.write_line(b"next")
    assert stream.getvalue() == b"0123456789\nnext\n"


def test_lines_from_threads_never_interleave() -> None:
    stream = ShortWritesStream(limit=7)
    writer = LineWriter(stream)

    def write(tag: bytes) -> None:
        for _ in range(200):
            writer.write_line(tag * 40)

    threads = [threading.Thread(target=write, args=(tag,)) for tag in (b"a", b"b", b"c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 600
    assert set(lines) == {b"a" * 40, b"b" * 40, b"c" * 40}
