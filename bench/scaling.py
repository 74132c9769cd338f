"""Scaling figures in wall-clock time: overload at 10 x the in-flight limit, 2 workers vs 1.

    python3 bench/run.py --scaling [--duration 8] [--rounds 3] [--json PATH]

The wrapper `bench/run.py` bakes the defaults and runs this file with the baked
project's interpreter and `--project <dir>` (template only). It reuses the generated
project's harness (`bench/run.py`: database, Redis, starting and loading servers), and
measures the service in two ways, each in `--rounds` alternated rounds:

- overload: one worker with `limits.max_in_flight` set to `--limit` (8), driven on
  `GET /items/{id}` by `--limit` x 10 keep-alive connections of `bench/loadgen.py`,
  which reports latency by response status, so that requests admitted (200) and shed
  (503 + `Retry-After`) are told apart. Two kinds of client, alternated: one that
  sends its next request as soon as a 503 arrives (the worst case: the server spends
  its time refusing), and one that waits the `Retry-After` (1 s) first. Service on
  CPU 0, load on CPU 1.
- workers: `WORKERS=1` and `WORKERS=2` side by side, `wrk` (64 connections) on
  `/health/live` and `GET /items/{id}`, alternated 1, 2, 1, 2, ...; nothing pinned,
  since a second worker needs the second core (shared with the load, PostgreSQL and
  Redis: on a two-core machine this shows what a second worker gains when nothing is
  idle, not linear scaling).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
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


def main() -> int:  # noqa: C901, PLR0912, PLR0915 - one linear script
    """Run the overload and worker rounds; print and write the figures."""
    args = _arguments()
    sys.path.insert(0, str(args.project / "bench"))
    import run as harness  # noqa: PLC0415 - the baked project's harness

    parts = {part.strip() for part in args.only.split(",")}
    prefix = harness.PREFIX
    admin_dsn = os.environ.get("DATABASE_URL", harness.DEFAULT_DSN)
    database = f"bench_{secrets.token_hex(4)}"
    dsn = harness._with_database(admin_dsn, database)  # noqa: SLF001
    workdir = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    asyncio.run(harness._create_database(admin_dsn, database))  # noqa: SLF001

    def start(name: str, env: dict[str, str], cpus: str | None) -> Any:  # noqa: ANN401
        """The service with `env` on top of the harness's production settings."""
        launch = harness._launch("generated", dsn, pool, workdir)  # noqa: SLF001
        launch.env.update(env)
        log = workdir / f"{name}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [*harness._taskset(cpus), *launch.argv],  # noqa: SLF001
                cwd=launch.cwd,
                env=launch.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        server = harness.Server(name="generated", port=launch.port, process=process, log=log)
        harness._wait_ready(server)  # noqa: SLF001
        server.pids = harness._process_tree(process.pid)  # noqa: SLF001
        return server

    def overload(server: Any, seconds: int, *, backoff: bool) -> dict[str, Any]:  # noqa: ANN401
        headers = [f"--header={k}: {v}" for k, v in harness.AUTH_HEADERS.items()]
        if backoff:
            headers.append("--honor-retry-after")
        completed = subprocess.run(
            [
                *harness._taskset("1"),  # noqa: SLF001
                sys.executable,
                str(HERE / "loadgen.py"),
                f"--url=http://{harness.HOST}:{server.port}/items/",
                f"--connections={args.limit * 10}",
                f"--duration={seconds}",
                f"--random-ids={args.items}",
                *headers,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 120,
        )
        result: dict[str, Any] = json.loads(completed.stdout)
        return result

    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": sys.version.split()[0],
        "duration_s": args.duration,
        "rounds": args.rounds,
    }
    lines: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(harness.redis_server())
            pool = harness.prepare_database(dsn, args.items, workdir)
            if harness.IDENTITY_PROVIDER.exists():
                harness._authenticate(stack)  # noqa: SLF001
            if "overload" in parts:
                server = start("overload", {f"{prefix}LIMITS__MAX_IN_FLIGHT": str(args.limit)}, "0")
                runs: list[tuple[int, str, dict[str, Any]]] = []
                try:
                    overload(server, 3, backoff=False)  # warm-up
                    for number in range(1, args.rounds + 1):
                        for client in CLIENTS:
                            result = overload(server, args.duration, backoff=client != "no wait")
                            runs.append((number, client, result))
                            statuses = ", ".join(
                                f"{status}: {v['requests']} p50 {v['p50_ms']:.1f} "
                                f"p99 {v['p99_ms']:.1f} ms"
                                for status, v in result["by_status"].items()
                            )
                            rps = result["rps"]
                            _say(f"overload {number} {client}: {rps:,.0f} req/s; {statuses}")
                finally:
                    harness._stop(server)  # noqa: SLF001
                report["overload"] = {
                    "max_in_flight": args.limit,
                    "connections": args.limit * 10,
                    "load_generator": "bench/loadgen.py",
                    "runs": [
                        {"round": number, "client": client, **result}
                        for number, client, result in runs
                    ],
                }
                lines.append(
                    f"overload: GET /items/{{id}}, max_in_flight {args.limit}, "
                    f"{args.limit * 10} connections, {args.duration}s x {args.rounds} "
                    "(bench/loadgen.py; service CPU 0, load CPU 1)"
                )
                lines.append(
                    f"{'round':<7}{'client':<18}{'req/s':>8}{'admitted':>10}{'p50 ms':>8}"
                    f"{'p99 ms':>8}{'shed 503':>10}{'p50 ms':>8}{'p99 ms':>8}{'other':>7}"
                )
                for number, client, run in runs:
                    ok = run["by_status"].get("200", {"requests": 0, "p50_ms": 0, "p99_ms": 0})
                    shed = run["by_status"].get("503", {"requests": 0, "p50_ms": 0, "p99_ms": 0})
                    other = run["requests"] - ok["requests"] - shed["requests"] + run["errors"]
                    lines.append(
                        f"{number:<7}{client:<18}{run['rps']:>8,.0f}{ok['requests']:>10,}"
                        f"{ok['p50_ms']:>8.2f}{ok['p99_ms']:>8.2f}{shed['requests']:>10,}"
                        f"{shed['p50_ms']:>8.2f}{shed['p99_ms']:>8.2f}{other:>7}"
                    )
            if "workers" in parts:
                generator = harness._load_generator(None)  # noqa: SLF001
                servers = {
                    workers: start(f"workers{workers}", {f"{prefix}WORKERS": str(workers)}, None)
                    for workers in (1, 2)
                }
                samples: dict[str, dict[int, list[Any]]] = {
                    route: {1: [], 2: []} for route in harness.ROUTES
                }
                try:

                    def load(workers: int, route: str, seconds: int) -> Any:  # noqa: ANN401
                        return harness._load(  # noqa: SLF001
                            generator,
                            servers[workers],
                            route,
                            duration=seconds,
                            connections=args.connections,
                            items=args.items,
                            workdir=workdir,
                        )

                    for route in harness.ROUTES:
                        for workers in servers:
                            load(workers, route, 3)  # warm-up
                    for number in range(1, args.rounds + 1):
                        for route, path in harness.ROUTES.items():
                            for workers in servers:
                                sample = load(workers, route, args.duration)
                                samples[route][workers].append(sample)
                                _say(
                                    f"round {number} {path:<13} WORKERS={workers} "
                                    f"{sample.rps:>8,.0f} req/s p50 {sample.p50_ms:.2f} "
                                    f"p99 {sample.p99_ms:.2f} ms non-2xx {sample.non_2xx}"
                                )
                finally:
                    for server in servers.values():
                        harness._stop(server)  # noqa: SLF001
                report["workers"] = {
                    "load_generator": generator.version,
                    "connections": args.connections,
                    "samples": {
                        route: {
                            str(workers): [vars(sample) for sample in runs]
                            for workers, runs in by_workers.items()
                        }
                        for route, by_workers in samples.items()
                    },
                }
                lines.append("")
                lines.append(
                    f"workers: {generator.version}, -c{args.connections}, "
                    f"{args.duration}s x {args.rounds} alternated rounds, nothing pinned"
                )
                lines.append(f"{'route':<16}{'1 worker':>28}{'2 workers':>28}{'ratio 2/1':>24}")
                for route, path in harness.ROUTES.items():
                    one, two = samples[route][1], samples[route][2]
                    ratios = (b.rps / a.rps for a, b in zip(one, two, strict=True))
                    lines.append(
                        f"{path:<16}{' / '.join(f'{s.rps:,.0f}' for s in one):>28}"
                        f"{' / '.join(f'{s.rps:,.0f}' for s in two):>28}"
                        f"{' / '.join(f'{ratio:.2f}' for ratio in ratios):>24}"
                    )
    finally:
        asyncio.run(harness._drop_database(admin_dsn, database))  # noqa: SLF001
        if args.keep:
            _say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
