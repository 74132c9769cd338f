"""Scaling figures in wall-clock time: overload at 10 x the in-flight limit, 2 workers vs 1.

    python3 bench/run.py --scaling [--duration 8] [--rounds 3] [--json PATH]

The wrapper `bench/run.py` bakes the defaults and runs this file with the baked
project's interpreter and `--project <dir>` (template only). It reuses the generated
project's harness (`bench/servers.py`: database, Redis, identity provider, starting
and stopping servers; `bench/wallclock.py`: wrk runs), and measures the service in two
ways, each in `--rounds` alternated rounds:

- overload: one worker with `limits.max_in_flight` set to `--limit` (8), driven on
  `GET /items/{id}` by `--limit` x 10 keep-alive connections of `bench/loadgen.py`
  (`--json`: latency by response status), so that requests admitted (200) and shed
  (503 + `Retry-After`) are told apart. Two kinds of client, alternated: one that
  sends its next request as soon as a 503 arrives (the worst case: the server spends
  its time refusing), and one that waits the `Retry-After` (1 s) first
  (`--honor-retry-after`). Service on CPU 0, load on CPU 1.
- workers: `WORKERS=1` and `WORKERS=2` side by side, `wrk` (64 connections) on
  `/health/live` and `GET /items/{id}`, alternated 1, 2, 1, 2, ...; nothing pinned,
  since a second worker needs the second core (shared with the load, PostgreSQL and
  Redis: on a two-core machine this shows what a second worker gains when nothing is
  idle, not linear scaling).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# How the overload's clients treat a 503: at once again, or after its Retry-After.
CLIENTS = ("no wait", "Retry-After")


def _say(message: str) -> None:
    sys.stderr.write(f"scaling: {message}\n")
    sys.stderr.flush()


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="the baked project")
    parser.add_argument("--duration", type=int, default=8, help="seconds per run (8)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds (3)")
    parser.add_argument("--limit", type=int, default=8, help="max_in_flight for overload (8)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument(
        "--only", default="overload,workers", help="overload, workers or both (default)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.add_argument("--keep", action="store_true", help="keep the servers' logs")
    return parser.parse_args()


@dataclass
class _Running:
    """A started service: its process, port and process tree (supervisor and workers)."""

    process: subprocess.Popen[bytes]
    port: int
    pids: list[int]


class _Harness:
    """The baked project's `servers` and `wallclock` modules, bound to one database."""

    def __init__(self, args: argparse.Namespace, dsn: str, pool: tuple[int, int]) -> None:
        import servers  # noqa: PLC0415 - the baked project's harness, on sys.path by now
        import wallclock  # noqa: PLC0415

        self.servers: Any = servers
        self.wallclock: Any = wallclock
        self.args = args
        self.dsn = dsn
        self.pool = pool

    def start(self, name: str, env: dict[str, str], cpus: str | None) -> _Running:
        """The service with `env` on top of the harness's production settings."""
        launch = self.servers.launch("generated", self.dsn, self.pool, self.args.workdir)
        launch.env.update({self.servers.PREFIX + key: value for key, value in env.items()})
        log = self.args.workdir / f"{name}.log"
        process = self.servers.start(launch, log, self.wallclock.taskset(cpus))
        try:
            self.servers.wait_ready(process, launch.port, log, timeout=60)
        except BaseException:
            self.servers.stop(process)
            raise
        return _Running(process, launch.port, self.wallclock.process_tree(process.pid))

    def overload(self, server: _Running, seconds: int, *, backoff: bool) -> dict[str, Any]:
        """One `bench/loadgen.py --json` run on random items, CPU 1."""
        args = self.args
        script = args.workdir / "overload.lua"
        script.write_text(f"local ids = {args.items}\n")  # all that loadgen.py reads of it
        headers = [f"-H{name}: {value}" for name, value in self.servers.HEADERS.items()]
        command = [sys.executable, str(HERE / "loadgen.py"), "--json", *headers]
        command += [f"-c{args.limit * 10}", f"-d{seconds}s", "-s", str(script)]
        command += ["--honor-retry-after"] if backoff else []
        command.append(f"http://{self.servers.HOST}:{server.port}/items/1")
        completed = subprocess.run(
            [*self.wallclock.taskset("1"), *command],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 120,
        )
        result: dict[str, Any] = json.loads(completed.stdout)
        return result

    def wrk(self, server: _Running, route: str, seconds: int) -> Any:  # noqa: ANN401 - a Sample
        """One wrk run (nothing pinned) on `route`."""
        return self.wallclock.run_wrk(self.args, server.port, route, seconds, server.pids)


def _overload(harness: _Harness, lines: list[str]) -> dict[str, Any]:
    """Overload rounds: both kinds of client alternated; the report's part and table."""
    args = harness.args
    server = harness.start("overload", {"LIMITS__MAX_IN_FLIGHT": str(args.limit)}, "0")
    runs: list[tuple[int, str, dict[str, Any]]] = []
    try:
        harness.overload(server, 3, backoff=False)  # warm-up
        for number in range(1, args.rounds + 1):
            for client in CLIENTS:
                result = harness.overload(server, args.duration, backoff=client != "no wait")
                runs.append((number, client, result))
                statuses = ", ".join(
                    f"{status}: {v['requests']} p50 {v['p50_ms']:.1f} p99 {v['p99_ms']:.1f} ms"
                    for status, v in result["by_status"].items()
                )
                _say(f"overload {number} {client}: {result['rps']:,.0f} req/s; {statuses}")
    finally:
        harness.servers.stop(server.process)
    lines.append(
        f"overload: GET /items/{{id}}, max_in_flight {args.limit}, "
        f"{args.limit * 10} connections, {args.duration}s x {args.rounds} "
        "(bench/loadgen.py; service CPU 0, load CPU 1)"
    )
    lines.append(
        f"{'round':<7}{'client':<18}{'req/s':>8}{'admitted':>10}{'p50 ms':>8}"
        f"{'p99 ms':>8}{'shed 503':>10}{'p50 ms':>8}{'p99 ms':>8}{'other':>7}"
    )
    none = {"requests": 0, "p50_ms": 0, "p99_ms": 0}
    for number, client, run in runs:
        ok, shed = run["by_status"].get("200", none), run["by_status"].get("503", none)
        other = run["requests"] - ok["requests"] - shed["requests"] + run["errors"]
        lines.append(
            f"{number:<7}{client:<18}{run['rps']:>8,.0f}{ok['requests']:>10,}"
            f"{ok['p50_ms']:>8.2f}{ok['p99_ms']:>8.2f}{shed['requests']:>10,}"
            f"{shed['p50_ms']:>8.2f}{shed['p99_ms']:>8.2f}{other:>7}"
        )
    return {
        "max_in_flight": args.limit,
        "connections": args.limit * 10,
        "load_generator": "bench/loadgen.py",
        "runs": [{"round": number, "client": client, **result} for number, client, result in runs],
    }


def _workers(harness: _Harness, lines: list[str]) -> dict[str, Any]:
    """WORKERS=1 against WORKERS=2 under wrk, alternated; the report's part and table."""
    args, routes = harness.args, harness.servers.ROUTES
    generator = harness.wallclock.wrk_version()
    running: dict[int, _Running] = {}
    samples: dict[str, dict[int, list[Any]]] = {route: {1: [], 2: []} for route in routes}
    try:
        for workers in (1, 2):
            running[workers] = harness.start(f"workers{workers}", {"WORKERS": str(workers)}, None)
        for route in routes:
            for server in running.values():
                harness.wrk(server, route, 3)  # warm-up
        for number in range(1, args.rounds + 1):
            for route, path in routes.items():
                for workers, server in running.items():
                    sample = harness.wrk(server, route, args.duration)
                    samples[route][workers].append(sample)
                    _say(
                        f"round {number} {path:<13} WORKERS={workers} "
                        f"{sample.rps:>8,.0f} req/s p50 {sample.p50_ms:.2f} "
                        f"p99 {sample.p99_ms:.2f} ms non-2xx {sample.non_2xx}"
                    )
    finally:
        for server in running.values():
            harness.servers.stop(server.process)
    lines.append("")
    lines.append(
        f"workers: {generator}, -c{args.connections}, "
        f"{args.duration}s x {args.rounds} alternated rounds, nothing pinned"
    )
    lines.append(f"{'route':<16}{'1 worker':>28}{'2 workers':>28}{'ratio 2/1':>24}")
    for route, path in routes.items():
        one, two = samples[route][1], samples[route][2]
        ratios = (b.rps / a.rps if a.rps else 0.0 for a, b in zip(one, two, strict=True))
        lines.append(
            f"{path:<16}{' / '.join(f'{s.rps:,.0f}' for s in one):>28}"
            f"{' / '.join(f'{s.rps:,.0f}' for s in two):>28}"
            f"{' / '.join(f'{ratio:.2f}' for ratio in ratios):>24}"
        )
    return {
        "load_generator": generator,
        "connections": args.connections,
        "samples": {
            route: {
                str(workers): [vars(sample) for sample in runs]
                for workers, runs in by_workers.items()
            }
            for route, by_workers in samples.items()
        },
    }


def main() -> int:
    """Run the overload and worker rounds; print and write the figures."""
    args = _arguments()
    sys.path.insert(0, str(args.project / "bench"))
    import servers  # noqa: PLC0415 - the baked project's harness

    parts = {part.strip() for part in args.only.split(",")}
    args.workdir = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    args.load_cpus = None  # wrk, for the worker rounds: nothing pinned
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": sys.version.split()[0],
        "duration_s": args.duration,
        "rounds": args.rounds,
    }
    lines: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(servers.redis())
            if servers.HAS_AUTH:  # before the migration: the settings require the provider's
                servers.authenticate(stack)
            dsn, pool = stack.enter_context(servers.database(args.items, args.workdir))
            harness = _Harness(args, dsn, pool)
            if "overload" in parts:
                report["overload"] = _overload(harness, lines)
            if "workers" in parts:
                report["workers"] = _workers(harness, lines)
    finally:
        if args.keep:
            _say(f"logs kept in {args.workdir}")
        else:
            shutil.rmtree(args.workdir, ignore_errors=True)
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
