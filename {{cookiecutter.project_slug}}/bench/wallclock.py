"""Requests per second under `wrk`: alternated rounds, medians, server CPU per request.

Servers are pinned to `--server-cpus`, wrk (one thread) to `--load-cpus`. After a
warm-up run per server and route, the servers alternate in every round (A B C, A B C)
so that drift on the machine hits all of them. The server's CPU time per request
(user + system, from /proc) moves much less than requests/s under other load.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servers import APPS, HEADERS, HOST, ROUTES, Launch, say, start, stop, wait_ready

if TYPE_CHECKING:
    import argparse

RESULT_LINE = re.compile(r"^BENCH_RESULT (.+)$", re.MULTILINE)
WRK_SCRIPT = """\
math.randomseed({seed})
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
    """One wrk run against one server and route."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: int
    cpu_us_per_request: float | None = None


def taskset(cpus: str | None) -> list[str]:
    """The command prefix that pins to `cpus` (none without them or without taskset)."""
    path = shutil.which("taskset")
    return [] if cpus is None or path is None else [path, "-c", cpus]


def wrk_version() -> str:
    """`wrk`'s version; exit if it is not installed."""
    if shutil.which("wrk") is None:
        msg = "wrk is not installed (apt-get install wrk, brew install wrk)"
        raise SystemExit(msg)
    completed = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (completed.stdout + completed.stderr).split("[")[0].strip()


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux), e.g. a supervisor and its worker."""
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [pid, *(tree for child in children for tree in process_tree(int(child)))]
    return [pid]


def _cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU time of `pids` so far, or None where /proc is unavailable."""
    total = 0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    except (OSError, IndexError, ValueError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def run_wrk(
    args: argparse.Namespace, port: int, route: str, seconds: int, pids: list[int]
) -> Sample:
    """One wrk run on `route` (`args`: connections, items, load_cpus, workdir), `pids`' CPU."""
    ids = args.items if route == "items_get" else 0
    script = args.workdir / f"{route}.lua"
    script.write_text(WRK_SCRIPT.format(seed=secrets.randbits(31), ids=ids))
    url = f"http://{HOST}:{port}" + ("/items/1" if ids else ROUTES[route])
    headers = [f"-H{name}: {value}" for name, value in HEADERS.items()]
    command = ["wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s", "--latency", *headers]
    before = _cpu_seconds(pids)
    completed = subprocess.run(
        [*taskset(args.load_cpus), *command, "-s", str(script), url],
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 120,
    )
    after = _cpu_seconds(pids)
    match = RESULT_LINE.search(completed.stdout)
    if completed.returncode != 0 or match is None:
        msg = f"wrk failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}"
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
    if before is not None and after is not None and sample.requests:
        sample.cpu_us_per_request = (after - before) * 1e6 / sample.requests
    return sample


def measure(args: argparse.Namespace, servers: list[Launch]) -> dict[str, dict[str, list[Sample]]]:
    """Start every server, then warm-up runs and `args.rounds` alternated rounds."""
    running: dict[str, tuple[int, list[int]]] = {}  # name: (port, pids)
    processes = []
    try:
        for server in servers:
            log = args.workdir / f"{server.name}.log"
            processes.append(start(server, log, taskset(args.server_cpus)))
            wait_ready(processes[-1], server.port, log, timeout=60)
            running[server.name] = (server.port, process_tree(processes[-1].pid))
        if args.warmup > 0:
            for route in ROUTES:
                for port, pids in running.values():
                    run_wrk(args, port, route, args.warmup, pids)
        samples: dict[str, dict[str, list[Sample]]] = {r: {n: [] for n in running} for r in ROUTES}
        for number in range(1, args.rounds + 1):
            for route, path in ROUTES.items():
                for name, (port, pids) in running.items():
                    sample = run_wrk(args, port, route, args.duration, pids)
                    samples[route][name].append(sample)
                    say(
                        f"round {number}/{args.rounds} {path:<13} {APPS[name]:<13}"
                        f"{sample.rps:>9,.0f} req/s  p50 {sample.p50_ms:.2f} ms  "
                        f"p99 {sample.p99_ms:.2f} ms"
                    )
    finally:
        for process in processes:
            stop(process)
    return samples


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


def report(samples: dict[str, dict[str, list[Sample]]]) -> dict[str, Any]:
    """The JSON's wall-clock part; its ratios are this service's req/s over each reference's."""
    results = {
        route: {n: _summary(runs) for n, runs in by_app.items()}
        for route, by_app in samples.items()
    }
    ratios: dict[str, dict[str, float | None]] = {}
    by_round: dict[str, dict[str, list[float]]] = {}
    overhead: dict[str, float | None] = {}
    for route, rows in results.items():
        ours = rows.get("generated")
        ratios[route] = {
            f"vs_{other}": round(ours["rps"] / rows[other]["rps"], 3)
            if ours and other in rows and rows[other]["rps"]
            else None
            for other in ("fastapi", "raw")
        }
        # Per round: the two ran back to back, so drift on the machine cancels out.
        by_round[route] = {
            f"vs_{other}": [
                round(a.rps / b.rps, 3) if b.rps else 0.0
                for a, b in zip(samples[route]["generated"], samples[route][other], strict=True)
            ]
            for other in ("fastapi", "raw")
            if ours and other in rows
        }
        # CPU us per request that this service spends beyond bare FastAPI: the chassis.
        ours_cpu, fastapi_cpu = (
            rows.get(app, {}).get("cpu_us_per_request") for app in ("generated", "fastapi")
        )
        overhead[route] = (
            None if ours_cpu is None or fastapi_cpu is None else round(ours_cpu - fastapi_cpu, 1)
        )
    return {
        "results": results,
        "ratios": ratios,
        "ratios_by_round": by_round,
        "cpu_us_per_request_over_fastapi": overhead,
    }


def table(report: dict[str, Any]) -> list[str]:
    """The wall-clock part of the printed report."""
    meta = report["settings"]
    lines = [
        (
            f"load: {report['load_generator']}, {meta['connections']} connections, "
            f"{meta['duration_s']} s x {meta['rounds']} alternated rounds (medians), servers "
            f"on CPUs {meta['server_cpus']}, load on CPUs {meta['load_cpus']}"
        ),
        "",
        "route          app                 req/s   p50 ms   p99 ms  spread  CPU us/req",
    ]
    for route, path in ROUTES.items():
        for index, (app, row) in enumerate(report["results"][route].items()):
            cpu = "-" if row["cpu_us_per_request"] is None else row["cpu_us_per_request"]
            spread = "-" if row["spread"] is None else f"{row['spread']:.0%}"  # None: no requests
            lines.append(
                f"{path if index == 0 else '':<15}{APPS[app]:<15}{row['rps']:>10,.0f}"
                f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{spread:>8}{cpu:>12}"
                + (" * failed or not 2xx: see the JSON" if row["non_2xx"] or row["errors"] else "")
            )
    lines += ["", f"{'req/s ratio':<15}{'vs FastAPI':>12}{'vs raw ASGI':>13}"]
    for route, path in ROUTES.items():
        cells = [cell(report["ratios"][route].get(key)) for key in ("vs_fastapi", "vs_raw")]
        overhead = report["cpu_us_per_request_over_fastapi"][route]
        extra = "" if overhead is None else f"   chassis CPU: {overhead:+.0f} us/req"
        lines.append(f"{path:<15}{cells[0]:>12}{cells[1]:>13}{extra}")
    return [*lines, "", "spread: (max - min) / median of req/s; CPU us/req: the server's, median"]


def cell(value: float | None) -> str:
    """A ratio as printed."""
    return "-" if value is None else f"{value:.3f}"
