"""Measure what the chassis costs: this service against bare FastAPI and raw ASGI.

    python bench/run.py [--duration 10] [--rounds 3] [--connections 64] [--json PATH]
    python bench/run.py --instructions [--wall-clock] [--requests 500] [--json PATH]

Creates a scratch database next to `DATABASE_URL`, migrated and seeded
(`servers.py`); serves `GET /health/live` and `GET /items/{id}` from three servers
(this service in production settings, `reference_fastapi.py`, `reference_raw.py`);
measures requests/s under wrk (`wallclock.py`) or, with `--instructions`, the CPU
instructions per request under valgrind (`instructions.py`); prints a table, and with
`--json PATH` writes everything, the ratios under `"ratios"`. See `bench/README.md`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import instructions
import servers
import wallclock
from servers import APPS, HAS_AUTH, HEADERS, PROJECT, ROUTES, say


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--instructions", action="store_true", help="count instructions under valgrind")
    add("--wall-clock", action="store_true", help="with --instructions: requests/s as well")
    add("--requests", type=int, default=500, help="counted requests per route (500)")
    add("--warmup-requests", type=int, default=200, help="uncounted requests first (200)")
    add("--duration", type=int, default=10, help="seconds per wrk run (10)")
    add("--rounds", type=int, default=3, help="alternated rounds (3)")
    add("--connections", type=int, default=64, help="wrk connections (64)")
    add("--items", type=int, default=10_000, help="seeded items (10000)")
    add("--warmup", type=int, default=3, help="warm-up seconds per server and route (3)")
    add("--json", type=Path, metavar="PATH", help="also write the results here")
    add("--server-cpus", default="0", help="taskset CPU list for the servers (0)")
    add("--load-cpus", default="1", help="taskset CPU list for wrk (1)")
    add("--apps", default=",".join(APPS), help="a subset of generated,fastapi,raw")
    add("--keep", action="store_true", help="keep the logs and callgrind files")
    args = parser.parse_args(argv)
    args.apps = [name.strip() for name in args.apps.split(",") if name.strip()]
    if unknown := set(args.apps) - set(APPS):
        parser.error(f"unknown --apps {sorted(unknown)}; choose from {', '.join(APPS)}")
    args.wall_clock = args.wall_clock or not args.instructions
    if args.instructions:
        if problem := instructions.valgrind_available():
            parser.error(f"--instructions: {problem}")
        args.items = max(args.items, args.warmup_requests + args.requests)  # ids 1, 2, ...
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        say("fewer than 2 CPUs or no taskset: servers and wrk are not pinned")
        args.server_cpus = args.load_cpus = None
    return args


def _count(args: argparse.Namespace, launches: list[servers.Launch]) -> dict[str, Any]:
    """Instructions per request and per second of wall time, by route and server."""
    headers = tuple(HEADERS.items())
    routes = {
        "health_live": instructions.Route("GET", "/health/live", headers=headers),
        "items_get": instructions.Route("GET", "/items/{n}", headers=headers),
    }
    per_request: dict[str, dict[str, int]] = {route: {} for route in ROUTES}
    per_second: dict[str, dict[str, int]] = {route: {} for route in ROUTES}
    for launch in launches:
        say(f"counting instructions: {APPS[launch.name]} under valgrind")
        counts = instructions.count(
            launch,
            routes,
            requests=args.requests,
            warmup=args.warmup_requests,
            workdir=args.workdir,
        )
        for route, value in counts.items():
            per_request[route][launch.name] = round(value.per_request)
            per_second[route][launch.name] = round(value.per_second)
            say(
                f"{ROUTES[route]:<13} {APPS[launch.name]:<13}{value.per_request:>12,.0f} "
                f"instructions/request (+{value.per_second:,.0f} per second of wall time)"
            )
    ratios = {
        route: {
            f"instructions_vs_{other}": round(by_app["generated"] / by_app[other], 3)
            for other in ("fastapi", "raw")
            if "generated" in by_app and other in by_app
        }
        for route, by_app in per_request.items()
    }
    return {
        "instructions": per_request,
        "instructions_per_wall_second": per_second,
        "ratios": ratios,
    }


def _instruction_table(report: dict[str, Any]) -> list[str]:
    meta = report["settings"]
    lines = [
        (
            f"instructions (callgrind): {meta['requests']} sequential keep-alive requests per "
            f"server and route after {meta['warmup_requests']} uncounted, less the work per "
            "second of wall time"
        ),
        "",
        f"{'route':<15}{'app':<15}{'instructions/req':>18}{'vs FastAPI':>12}{'vs raw ASGI':>13}",
    ]
    for route, path in ROUTES.items():
        ratio = report["ratios"][route]
        for index, (app, value) in enumerate(report["instructions"][route].items()):
            cells = ["", ""]
            if app == "generated":
                cells = [
                    wallclock.cell(ratio.get(f"instructions_vs_{o}")) for o in ("fastapi", "raw")
                ]
            lines.append(
                f"{path if index == 0 else '':<15}{APPS[app]:<15}{value:>18,.0f}"
                f"{cells[0]:>12}{cells[1]:>13}"
            )
    return [*lines, "", "ratios: this service's instructions per request over the reference's"]


def _machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    system = f"{platform.system()} {platform.release()}"
    return {"cpu": model, "cpus": os.cpu_count(), "os": system, "python": platform.python_version()}


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    """Set up, count and/or measure, tear down; the report's parts that depend on the run."""
    report: dict[str, Any] = {"settings": {}}
    if args.wall_clock:
        report["load_generator"] = wallclock.wrk_version()
    with contextlib.ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, args.workdir, ignore_errors=True)
        stack.enter_context(servers.redis())
        if HAS_AUTH:  # before the migration: the service's settings require the provider's
            servers.authenticate(stack)
        dsn, pool = stack.enter_context(servers.database(args.items, args.workdir))
        report["settings"]["pool_size"] = list(pool)

        def launches() -> list[servers.Launch]:
            """The servers to measure, each on a port that is free now."""
            return [servers.launch(name, dsn, pool, args.workdir) for name in args.apps]

        counted = _count(args, launches()) if args.instructions else {}
        measured = wallclock.report(wallclock.measure(args, launches())) if args.wall_clock else {}
    ratios = {
        route: measured.get("ratios", {}).get(route, {}) | counted.get("ratios", {}).get(route, {})
        for route in ROUTES
    }
    if counted:
        report["settings"] |= {"requests": args.requests, "warmup_requests": args.warmup_requests}
    if measured:
        report["settings"] |= {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "connections": args.connections,
            "warmup_s": args.warmup,
            "server_cpus": args.server_cpus,
            "load_cpus": args.load_cpus,
        }
    report |= counted | measured
    return report | {"ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    args = _arguments(argv)
    args.workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    command = [os.environ.get("BENCH_COMMAND", "python bench/run.py")]
    command += sys.argv[1:] if argv is None else argv
    report: dict[str, Any] = {
        "service": PROJECT.name,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "command": " ".join(command),
    }
    report |= _measure(args)
    report["settings"] |= {"items": args.items, "apps": args.apps}
    machine = report["machine"]
    lines = [
        f"{report['service']} chassis benchmark, {report['date']}",
        f"machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['os']}, Python "
        + machine["python"],
    ]
    if "instructions" in report:
        lines += ["", *_instruction_table(report)]
    if "results" in report:
        lines += ["", *wallclock.table(report)]
    sys.stdout.write("\n".join([*lines, "", f"command: {report['command']}"]) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        say(f"results written to {args.json}")
    if args.keep:
        say(f"logs and callgrind files kept in {args.workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
