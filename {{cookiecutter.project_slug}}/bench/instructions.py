"""Count the CPU instructions a server spends per request, with valgrind's callgrind.

Requests per second swing 20-60 % on a shared machine; the instructions a server
executes for the same requests do not depend on what else runs, so a difference of a
few per cent between two servers shows up the same in every run. Used by
`bench/run.py --instructions`:

1. the server is started directly under `valgrind --tool=callgrind --instr-atstart=no`
   (directly: valgrind does not follow an `exec` through `env` or a shell), so start-up
   costs nothing and is not counted;
2. this process, the client, sends `warmup` sequential keep-alive requests, uncounted
   (caches, prepared statements, lazily built objects);
3. `requests` more requests in `blocks` blocks, each between `callgrind_control -i on`
   and `-i off`, after which `callgrind_control -d` writes the block's count to a file
   and zeroes it. One server process measures several routes in turn.

What a block counts is the requests' own work plus work that runs per second of wall
time: timers and periodic tasks (uvicorn's 0.1 s tick, the loop-lag sample, a log
batch's flush, the deadlines' tick). Under valgrind a request takes 50 times longer
than natively, and longer still when other work loads the machine, so that second
part would grow with the load (+7 % per request with a load average of 11 on two
cores) where a busy server amortises it to nothing. So every other block waits
`pause` seconds between its requests, and a least-squares line through the blocks'
(seconds per request, instructions per request) gives, where it meets zero seconds,
the instructions a request costs by itself; its slope, the instructions per second of
wall time, is reported next to it.

Counted: every instruction of the server process in user space, all its threads
(the event loop, an exporter's thread), between the toggles. Not counted: the client,
PostgreSQL, and the kernel's side of system calls (a `write` or `getpid` costs the
same instruction or two here whatever the kernel spends on it).
"""

from __future__ import annotations

import contextlib
import http.client
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

HOST = "127.0.0.1"
TOTALS = re.compile(rb"^totals:\s+(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Route:
    """What the client sends: `{n}` in `path`, `body` and `headers` is the request's number."""

    method: str
    path: str
    body: str | None = None
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Launch:
    """How to start one server: its command, environment and port."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int


def valgrind_available() -> str | None:
    """Why the instruction count cannot run here, or None if it can."""
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found (Debian: apt-get install valgrind)"
    return None


def _control(pid: int, *args: str) -> None:
    """Send `callgrind_control` a command and wait until the server has carried it out."""
    subprocess.run(
        ["callgrind_control", *args, str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )


def _wait_ready(process: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection = http.client.HTTPConnection(HOST, port, timeout=5)
            connection.request("GET", "/health/live")
            if connection.getresponse().status == 200:
                connection.close()
                return
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-4000:]
    msg = f"{log.stem} did not become ready under valgrind on port {port}; log tail:\n{tail}"
    raise RuntimeError(msg)


def _send(
    connection: http.client.HTTPConnection, route: Route, first: int, count: int, wait: float = 0
) -> None:
    """`count` sequential requests on one keep-alive connection; each must succeed."""
    json_type = {"Content-Type": "application/json"} if route.body is not None else {}
    for n in range(first, first + count):
        if wait:
            time.sleep(wait)
        body = route.body.replace("{n}", str(n)) if route.body is not None else None
        headers = json_type | {name: value.replace("{n}", str(n)) for name, value in route.headers}
        connection.request(route.method, route.path.replace("{n}", str(n)), body, headers)
        response = connection.getresponse()
        response.read()
        if response.status != route.status:
            msg = f"{route.method} {route.path}: status {response.status}, not {route.status}"
            raise RuntimeError(msg)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Count:
    """A route's instructions per request by itself, and per second of wall time."""

    per_request: float
    per_second: float


def _block(pid: int, dump: Path, send: Callable[[], None], requests: int) -> tuple[float, float]:
    """Count one block: (seconds, instructions) per request."""
    _control(pid, "--instr=on")
    started = time.perf_counter()
    send()
    seconds = time.perf_counter() - started
    _control(pid, "--instr=off")
    _control(pid, "--dump")
    found = TOTALS.search(dump.read_bytes())
    if found is None:
        msg = f"no totals in {dump}"
        raise RuntimeError(msg)
    return seconds / requests, int(found.group(1)) / requests


def count(  # noqa: PLR0913 - keyword-only
    launch: Launch,
    routes: dict[str, Route],
    *,
    requests: int,
    warmup: int,
    workdir: Path,
    blocks: int = 6,
    pause: float = 0.02,
) -> dict[str, Count]:
    """Count `launch`'s server on each of `routes`, in one process (see the module doc)."""
    out = workdir / f"{launch.name}.callgrind"
    log = workdir / f"{launch.name}.instructions.log"
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        *launch.argv,
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv,
            cwd=launch.cwd,
            env=launch.env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    counts: dict[str, Count] = {}
    dumps = 0
    size = max(1, requests // blocks)
    try:
        _wait_ready(process, launch.port, log, timeout=600)
        connection = http.client.HTTPConnection(HOST, launch.port, timeout=120)
        for name, route in routes.items():
            _send(connection, route, 1, warmup)
            points = []
            for block in range(blocks):
                first = warmup + 1 + block * size
                wait = pause * (block % 2)

                def send(first: int = first, wait: float = wait) -> None:
                    _send(connection, route, first, size, wait)  # noqa: B023 - used at once

                dumps += 1
                points.append(_block(process.pid, Path(f"{out}.{dumps}"), send, size))
            slope, intercept = statistics.linear_regression(*zip(*points, strict=True))
            if intercept <= 0:
                # Too few or too noisy blocks for a line (a smoke run of a few requests on
                # a loaded machine): the cheapest block stands in, an upper bound.
                intercept, slope = min(instructions for _, instructions in points), 0.0
            counts[name] = Count(per_request=intercept, per_second=slope)
        connection.close()
    finally:
        _stop(process)
    return counts
