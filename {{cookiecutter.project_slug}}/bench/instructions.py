"""Count the CPU instructions a server spends per request, with valgrind's callgrind.

Requests per second swing 20-60 % on a shared machine; the instructions a server
executes for the same requests do not depend on what else runs, so a difference of a
few per cent shows up the same in every run. `count`:

1. starts the server directly under `valgrind --tool=callgrind --instr-atstart=no`
   (valgrind does not follow an `exec` through a shell), so start-up is not counted;
2. sends `warmup` sequential keep-alive requests, uncounted;
3. sends `requests` more in `blocks` blocks, each counted between `callgrind_control
   -i on` and `-i off`, then dumped (`-d`, which also zeroes the count).

A block also counts the work done per second of wall time (uvicorn's tick, periodic
tasks), which under valgrind (~50 times slower) grows with the machine's load where a
busy server amortises it to nothing. So every other block waits `pause` seconds between
requests, and a line through the blocks' (seconds, instructions) per request gives,
at zero seconds, what a request costs by itself; its slope is reported next to it.

Routes named in `alternate` (two routes whose difference is the figure wanted, say) are
counted block by block in turn, A B A B ..., in the same process, so that drift and the
work per second land on both alike, and one slope is fitted through all their blocks
(the work per second belongs to the process, not to a route): their difference then
hardly depends on how well each line extrapolates to zero seconds.

Counted: the server process in user space, all its threads. Not counted: the client,
PostgreSQL, the kernel's side of system calls.
"""

from __future__ import annotations

import http.client
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from servers import HOST, Launch, start, stop, wait_ready

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

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
class Count:
    """A route's instructions per request by itself, and per second of wall time."""

    per_request: float
    per_second: float


def valgrind_available() -> str | None:
    """Why the instruction count cannot run here, or None if it can."""
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found (Debian: apt-get install valgrind)"
    return None


def send(
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


def _control(pid: int, *args: str) -> None:
    """Send `callgrind_control` a command; it returns once the server has carried it out."""
    subprocess.run(
        ["callgrind_control", *args, str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )


def _block(
    pid: int, dump: Path, requests: int, send_all: Callable[[], None]
) -> tuple[float, float]:
    """Count one block: (seconds, instructions) per request."""
    _control(pid, "--instr=on")
    started = time.perf_counter()
    send_all()
    seconds = time.perf_counter() - started
    _control(pid, "--instr=off")
    _control(pid, "--dump")
    found = TOTALS.search(dump.read_bytes())
    if found is None:
        msg = f"no totals in {dump}"
        raise RuntimeError(msg)
    return seconds / requests, int(found.group(1)) / requests


def _line(points: list[tuple[float, float]]) -> Count:
    """A route's (seconds, instructions) per request, fitted to a line (see the module doc)."""
    slope, intercept = statistics.linear_regression(*zip(*points, strict=True))
    if intercept <= 0:
        # Too few or too noisy blocks for a line (a smoke run of a few requests on a
        # loaded machine): the cheapest block stands in, an upper bound.
        return Count(per_request=min(instructions for _, instructions in points), per_second=0.0)
    return Count(per_request=intercept, per_second=slope)


def _lines(points: dict[str, list[tuple[float, float]]]) -> dict[str, Count]:
    """Lines through each route's blocks with one slope for all: an intercept per route."""
    means = {
        name: (statistics.fmean(x for x, _ in route), statistics.fmean(y for _, y in route))
        for name, route in points.items()
    }
    spread = sum((x - means[name][0]) ** 2 for name, route in points.items() for x, _ in route)
    if spread == 0:
        return {name: _line(route) for name, route in points.items()}
    slope = (
        sum(
            (x - means[name][0]) * (y - means[name][1])
            for name, route in points.items()
            for x, y in route
        )
        / spread
    )
    counts = {
        name: Count(per_request=y - slope * x, per_second=slope) for name, (x, y) in means.items()
    }
    if any(count.per_request <= 0 for count in counts.values()):
        return {name: _line(route) for name, route in points.items()}
    return counts


def count(  # noqa: PLR0913 - keyword-only
    server: Launch,
    routes: dict[str, Route],
    *,
    requests: int,
    warmup: int,
    workdir: Path,
    blocks: int = 6,
    pause: float = 0.02,
    alternate: Collection[str] = (),
) -> dict[str, Count]:
    """Count `server` on each of `routes` in turn, in one process (see the module doc).

    The routes in `alternate` are counted last, block by block in turn, with one slope.
    """
    out = workdir / f"{server.name}.callgrind"
    log = workdir / f"{server.name}.instructions.log"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    process = start(server, log, valgrind)
    dumps = 0  # callgrind writes dump N to `out`.N
    size = max(1, requests // blocks)
    # One route at a time, then the alternated ones together.
    rounds = [[name] for name in routes if name not in alternate]
    rounds += [[name for name in routes if name in alternate]]
    counts: dict[str, Count] = {}
    try:
        wait_ready(process, server.port, log, timeout=600)
        connection = http.client.HTTPConnection(HOST, server.port, timeout=120)
        for names in filter(None, rounds):
            for name in names:
                send(connection, routes[name], 1, warmup)
            points: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
            for block in range(blocks):
                first, wait = warmup + 1 + block * size, pause * (block % 2)
                for name in names:

                    def send_block(route: Route = routes[name], first: int = first) -> None:
                        send(connection, route, first, size, wait)  # noqa: B023 - used at once

                    dumps += 1
                    dump = Path(f"{out}.{dumps}")
                    points[name].append(_block(process.pid, dump, size, send_block))
            if len(names) == 1:
                counts[names[0]] = _line(points[names[0]])
            else:
                counts.update(_lines(points))
        connection.close()
    finally:
        stop(process)
    return {name: counts[name] for name in routes}
