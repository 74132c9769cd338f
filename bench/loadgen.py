"""Fallback HTTP load generator, used by `bench/run.py` only when `wrk` is absent.

A closed-loop HTTP/1.1 client in pure Python: `--connections` keep-alive
connections over raw asyncio sockets, one request in flight per connection (no
pipelining), each response read fully (Content-Length or chunked) before the next
request is sent (with `--honor-retry-after`, a 503's `Retry-After` seconds later, as a
well-behaved client would). Latency is measured from the write of a request to the last byte
of its response. It prints one JSON object on stdout:
`{"requests", "seconds", "rps", "p50_ms", "p99_ms", "non_2xx", "errors", "by_status"}`,
`by_status` giving each response status's `requests`, `p50_ms` and `p99_ms` (so that
answers shed with 503 and admitted ones can be told apart, `bench/scaling.py`).

One Python process saturates one CPU well below what `wrk` reaches (roughly
15-25k requests/s on a current core), so a server faster than that measures the
generator instead. Ratios between servers that are well below that ceiling remain
meaningful; the report names the generator used. Install `wrk` for real numbers.

    python bench/loadgen.py --url http://127.0.0.1:8000/items/ --random-ids 10000 \
        --connections 64 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Coroutine

_T = TypeVar("_T")
HEADER_END = b"\r\n\r\n"


class _Stats:
    def __init__(self) -> None:
        self.latencies_ns: list[int] = []
        self.by_status: dict[int, list[int]] = {}
        self.non_2xx = 0
        self.errors = 0


@dataclass(frozen=True)
class _Target:
    host: str
    path: str
    random_ids: int
    deadline_ns: int
    headers: str = ""  # extra header lines, each ending in CRLF
    honor_retry_after: bool = False  # wait as a 503's Retry-After says before the next


class _Connection(asyncio.Protocol):
    """One keep-alive connection issuing requests back to back until the deadline."""

    def __init__(self, target: _Target, stats: _Stats, done: asyncio.Future[None]) -> None:
        self._host = target.host
        self._headers = target.headers
        self._path = target.path
        self._random_ids = target.random_ids
        self._deadline_ns = target.deadline_ns
        self._stats = stats
        self._done = done
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._sent_ns = 0
        self._fixed = self._request(target.path)
        self._honor_retry_after = target.honor_retry_after

    def _request(self, path: str) -> bytes:
        head = f"GET {path} HTTP/1.1\r\nHost: {self._host}\r\nUser-Agent: loadgen\r\n"
        return f"{head}{self._headers}\r\n".encode()

    def _send(self) -> None:
        assert self._transport is not None  # noqa: S101 - set in connection_made
        if self._random_ids:
            # Not for security: spreads requests over the seeded ids.
            item = random.randint(1, self._random_ids)
            payload = self._request(f"{self._path}{item}")
        else:
            payload = self._fixed
        self._sent_ns = time.perf_counter_ns()
        self._transport.write(payload)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport implements asyncio.Transport without subclassing it.
        self._transport = cast("asyncio.Transport", transport)
        self._send()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            try:
                consumed, status = _parse_response(self._buffer)
            except ValueError:
                self._stats.errors += 1
                self._finish()
                return
            if consumed == 0:
                return
            now = time.perf_counter_ns()
            wait = _retry_after(self._buffer[:consumed]) if self._honor_retry_after else 0.0
            del self._buffer[:consumed]
            self._stats.latencies_ns.append(now - self._sent_ns)
            self._stats.by_status.setdefault(status, []).append(now - self._sent_ns)
            if not 200 <= status < 300:
                self._stats.non_2xx += 1
            if now + wait * 1e9 >= self._deadline_ns:
                self._finish()
                return
            if wait:
                # One request in flight per connection: nothing else arrives meanwhile.
                asyncio.get_running_loop().call_later(wait, self._send)
                return
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        del exc  # a drop before the deadline counts as an error either way
        if not self._done.done():
            if time.perf_counter_ns() < self._deadline_ns:
                self._stats.errors += 1
            self._done.set_result(None)

    def _finish(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if not self._done.done():
            self._done.set_result(None)


def _parse_response(buffer: bytearray) -> tuple[int, int]:
    """Return (bytes of one complete response, status), or (0, 0) if incomplete."""
    end = buffer.find(HEADER_END)
    if end < 0:
        return 0, 0
    head = bytes(buffer[:end]).lower()
    status = int(head[9:12])
    body_start = end + len(HEADER_END)
    marker = head.find(b"\r\ncontent-length:")
    if marker >= 0:
        line_end = head.find(b"\r\n", marker + 2)
        value = head[marker + 17 : line_end if line_end >= 0 else len(head)]
        total = body_start + int(value)
        return (total, status) if len(buffer) >= total else (0, 0)
    if b"\r\ntransfer-encoding: chunked" in head:
        position = body_start
        while True:
            size_end = buffer.find(b"\r\n", position)
            if size_end < 0:
                return 0, 0
            size = int(bytes(buffer[position:size_end]).split(b";")[0], 16)
            position = size_end + 2 + size + 2
            if len(buffer) < position:
                return 0, 0
            if size == 0:
                return position, status
    return body_start, status


def _retry_after(response: bytearray) -> float:
    """Seconds a 503's `Retry-After` asks for (delay-seconds form only), else 0."""
    head = bytes(response[: response.find(HEADER_END)]).lower()
    if not head.startswith((b"http/1.1 503", b"http/1.0 503")):
        return 0.0
    marker = head.find(b"\r\nretry-after:")
    if marker < 0:
        return 0.0
    line_end = head.find(b"\r\n", marker + 2)
    value = head[marker + 14 : line_end if line_end >= 0 else len(head)].strip()
    return float(value) if value.isdigit() else 0.0


def _percentile(sorted_values: list[int], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index] / 1e6


async def run(  # noqa: PLR0913 - keyword-only options
    url: str,
    *,
    connections: int,
    duration: float,
    random_ids: int,
    headers: tuple[str, ...] = (),
    honor_retry_after: bool = False,
) -> dict[str, Any]:
    """Drive `url` with `connections` keep-alive connections for `duration` seconds."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path or "/"
    loop = asyncio.get_running_loop()
    stats = _Stats()
    start_ns = time.perf_counter_ns()
    deadline_ns = start_ns + int(duration * 1e9)
    extra = "".join(f"{header}\r\n" for header in headers)
    target = _Target(f"{host}:{port}", path, random_ids, deadline_ns, extra, honor_retry_after)
    waiters: list[asyncio.Future[None]] = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        waiters.append(done)
        try:
            await loop.create_connection(
                lambda done=done: _Connection(target, stats, done),  # type: ignore[misc]
                host,
                port,
            )
        except OSError:
            stats.errors += 1
            done.set_result(None)
    # A server that stops answering must not hang the benchmark.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*waiters), timeout=duration + 30)
    seconds = (time.perf_counter_ns() - start_ns) / 1e9
    latencies = sorted(stats.latencies_ns)
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "rps": len(latencies) / seconds if seconds else 0.0,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "non_2xx": stats.non_2xx,
        "errors": stats.errors,
        "by_status": {
            str(status): {
                "requests": len(values),
                "p50_ms": _percentile(sorted(values), 0.50),
                "p99_ms": _percentile(sorted(values), 0.99),
            }
            for status, values in sorted(stats.by_status.items())
        },
    }


def _run_fast(main: Coroutine[Any, Any, _T]) -> _T:
    """Run on uvloop when it is installed (it is, with the service): a faster client."""
    try:
        import uvloop  # noqa: PLC0415 - optional accelerator
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://host:port/path")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument(
        "--random-ids",
        type=int,
        default=0,
        help="append a random integer 1..N to the URL path on every request",
    )
    parser.add_argument(
        "--header", action="append", default=[], help="'Name: value' sent with every request"
    )
    parser.add_argument(
        "--honor-retry-after",
        action="store_true",
        help="after a 503 with Retry-After, wait that long before the connection's next request",
    )
    args = parser.parse_args(argv)
    result = _run_fast(
        run(
            args.url,
            connections=args.connections,
            duration=args.duration,
            random_ids=args.random_ids,
            headers=tuple(args.header),
            honor_retry_after=args.honor_retry_after,
        )
    )
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
