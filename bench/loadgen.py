"""A pure-Python stand-in for `wrk`, used by the template's benchmark where wrk is absent.

`bench/run.py` puts a `wrk` on PATH that runs this file, so that the generated
project's benchmark (which knows only wrk) and `bench/outage.py` run unchanged. It
takes the options they use: `-c N`, `-d Ns`, `-H 'Name: value'`, `-s SCRIPT`,
`--latency`, `--version`, and a URL (`-t` is accepted and ignored: one thread). Of a
script it reads only `local ids = N`: with N > 0, every request asks for a random id
1..N in place of the URL's last path segment, as the generated bench's script does.
It prints the `BENCH_RESULT` line that script's `done` prints, and wrk's summary lines
(requests, non-2xx responses, 50 % and 99 % latency).

Two options of its own, for `bench/scaling.py`: `--honor-retry-after` (after a 503
with `Retry-After`, the connection waits that many seconds before its next request, as
a well-behaved client would), and `--json`, which prints one JSON object instead:
`{"requests", "seconds", "rps", "p50_ms", "p99_ms", "non_2xx", "errors", "by_status"}`,
`by_status` giving each response status's `requests`, `p50_ms` and `p99_ms` (so that
answers shed with 503 and admitted ones can be told apart).

A closed-loop HTTP/1.1 client: `-c` keep-alive connections over raw asyncio sockets,
one request in flight per connection, each response read fully (Content-Length or
chunked) before the next is sent; latency from the write of a request to the last byte
of its response. One Python process saturates one CPU well below what `wrk` reaches
(roughly 15-25k requests/s on a current core), so a server faster than that measures
the generator instead; the report names the generator. Install `wrk` for real numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
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
    """Command line: wrk's, as far as the benchmarks use it (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="wrk (bench/loadgen.py)")
    parser.add_argument("-t", "--threads", help="ignored: one thread")
    parser.add_argument("-c", "--connections", type=int, default=10)
    parser.add_argument("-d", "--duration", default="10s", help="seconds, e.g. 10s")
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("-s", "--script", type=Path, help="a Lua script; `local ids = N` is read")
    parser.add_argument("--latency", action="store_true", help="always on")
    parser.add_argument("--version", action="store_true")
    parser.add_argument(
        "--honor-retry-after",
        action="store_true",
        help="after a 503 with Retry-After, wait that long before the connection's next request",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("url", nargs="?")
    args = parser.parse_args(argv)
    if args.version or args.url is None:
        sys.stdout.write("bench/loadgen.py (pure Python, standing in for wrk)\n")
        return
    script = args.script.read_text() if args.script else ""
    found = re.search(r"^local ids = (\d+)", script, re.MULTILINE)
    ids = int(found.group(1)) if found else 0
    url = args.url.rsplit("/", 1)[0] + "/" if ids else args.url
    duration = float(args.duration.removesuffix("s"))
    result = _run_fast(
        run(
            url,
            connections=args.connections,
            duration=duration,
            random_ids=ids,
            headers=tuple(args.header),
            honor_retry_after=args.honor_retry_after,
        )
    )
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    requests, non_2xx, errors = result["requests"], result["non_2xx"], result["errors"]
    p50_us, p99_us = result["p50_ms"] * 1000, result["p99_ms"] * 1000
    micros = result["seconds"] * 1e6
    sys.stdout.write(
        f"  {requests} requests in {result['seconds']:.2f}s\n"
        f"  Non-2xx or 3xx responses: {non_2xx}\n"
        f"     50%  {result['p50_ms']:.3f}ms\n"
        f"     99%  {result['p99_ms']:.3f}ms\n"
        f"BENCH_RESULT {requests} {micros:.0f} {non_2xx} {errors} {p50_us:.1f} {p99_us:.1f}\n"
    )


if __name__ == "__main__":
    main()
