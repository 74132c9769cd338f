"""What each chassis feature costs on a route, in instructions per request (template only).

    python3 bench/run.py --features [--requests 500] [--warmup-requests 200] [--json PATH]

The wrapper `bench/run.py` bakes the defaults and runs this file with the baked
project's interpreter and `--project <dir>`. It reuses the generated project's own
harness (`bench/run.py` for the database, `bench/instructions.py` for the counting),
and runs, one after the other, each under valgrind with the same requests:

- the service as shipped (the baseline),
- for each entry of `FEATURES`, a variant of it: `bench/variant.py` with that feature
  switched off (`off`), or the service with an environment that switches it on (`env`),
- bare FastAPI, for the budget's ratio.

A feature's cost is the baseline's instructions per request minus its variant's (or
the other way round for `env` entries). Adding a feature to the table: a switch in
`bench/variant.py` if it is on by default, and one `Feature(...)` line below; a route
of its own (a POST, say) goes into `ROUTES`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Feature:
    """One row of the table: how to run the service without (or with) it."""

    label: str
    off: tuple[str, ...] = ()  # bench/variant.py switches: the variant lacks the feature
    env: dict[str, str] = field(default_factory=dict)  # or: the variant adds it
    route: str = "items_get"
    note: str = ""


OTLP_SINK = "http://127.0.0.1:{sink_port}"
FEATURES = [
    Feature("request id + access line", off=("request_id_access_line",)),
    Feature("trace propagation (no export)", off=("trace_propagation",)),
    Feature(
        "trace export (SDK, OTLP/HTTP to a local sink)",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": OTLP_SINK,
            # Batches by size only, so that the same spans are exported in every run.
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "64",
            "OTEL_BSP_SCHEDULE_DELAY": "600000",
        },
        note="opt-in: only with an OTLP endpoint set",
    ),
    Feature("metrics", off=("metrics",)),
    Feature("shedding + deadline", off=("shedding_deadline",)),
    Feature("database breaker", off=("database_breaker",)),
    Feature(
        "all of the service middleware",
        off=("service_middleware",),
        note="every row above at once, and the middleware's own work",
    ),
]


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts every export and keeps nothing."""

    exports = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).exports += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


def _say(message: str) -> None:
    sys.stderr.write(f"features: {message}\n")
    sys.stderr.flush()


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="the baked project")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup-requests", type=int, default=200)
    parser.add_argument(
        "--only", default="", help="comma-separated labels' first words, e.g. metrics,trace"
    )
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.add_argument("--keep", action="store_true", help="keep logs and callgrind files")
    return parser.parse_args()


def _table(report: dict[str, Any]) -> str:
    base = report["baseline"]
    lines = [
        (
            f"per-feature cost, instructions per request, {report['date']}, "
            f"Python {report['python']}, {report['requests']} requests after "
            f"{report['warmup_requests']}"
        ),
        "",
        f"{'route':<11}{'feature':<48}{'instr/req':>11}{'of route':>10}  note",
    ]
    for route, count in base.items():
        lines.append(f"{route:<11}{'the service, every default feature on':<48}{count:>11,.0f}")
        fastapi = report["fastapi"].get(route)
        if fastapi:
            ratio = f"ratio {count / fastapi:.3f}"
            lines.append(f"{'':<11}{'bare FastAPI (the reference)':<48}{fastapi:>11,.0f}  {ratio}")
        lines.extend(
            f"{'':<11}{row['label']:<48}{row['cost']:>+11,.0f}"
            f"{row['cost'] / count:>10.1%}  {row['note']}"
            for row in report["features"]
            if row["route"] == route
        )
    return "\n".join(lines)


def main() -> int:
    """Count the baseline, every variant and bare FastAPI; print and write the table."""
    args = _arguments()
    sys.path.insert(0, str(args.project / "bench"))
    import instructions  # noqa: PLC0415 - the baked project's harness
    import run as harness  # noqa: PLC0415

    routes = {"items_get": instructions.Route("GET", "/items/{n}")}
    features = FEATURES
    if args.only:
        wanted = [word.strip().lower() for word in args.only.split(",")]
        features = [f for f in FEATURES if any(f.label.lower().startswith(w) for w in wanted)]
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    admin_dsn = os.environ.get("DATABASE_URL", harness.DEFAULT_DSN)
    database = f"bench_{secrets.token_hex(4)}"
    dsn = harness._with_database(admin_dsn, database)  # noqa: SLF001
    workdir = Path(tempfile.mkdtemp(prefix="bench-features-"))
    items = args.warmup_requests + args.requests
    asyncio.run(harness._create_database(admin_dsn, database))  # noqa: SLF001

    def count(name: str, env: dict[str, str], off: tuple[str, ...] = ()) -> dict[str, float]:
        """Instructions per request of the service (a variant of it), by route."""
        launch = harness._launch("generated", dsn, pool, workdir)  # noqa: SLF001
        launch.env.update(
            {key: value.format(sink_port=sink.server_port) for key, value in env.items()}
        )
        launch.env.update({"BENCH_PACKAGE": harness.PACKAGE, "BENCH_OFF": ",".join(off)})
        argv = [launch.argv[0], str(HERE / "variant.py")]
        launch = instructions.Launch(name, argv, launch.env, launch.cwd, launch.port)
        counted = instructions.count(
            launch, routes, requests=args.requests, warmup=args.warmup_requests, workdir=workdir
        )
        _say(f"{name}: " + ", ".join(f"{r} {v.per_request:,.0f}" for r, v in counted.items()))
        return {route: value.per_request for route, value in counted.items()}

    try:
        pool = harness.prepare_database(dsn, items, workdir)
        baseline = count("baseline", {})
        fastapi_launch = harness._launch("fastapi", dsn, pool, workdir)  # noqa: SLF001
        fastapi = {
            route: value.per_request
            for route, value in instructions.count(
                fastapi_launch,
                routes,
                requests=args.requests,
                warmup=args.warmup_requests,
                workdir=workdir,
            ).items()
        }
        rows = []
        for index, feature in enumerate(features):
            exports_before = _Sink.exports
            variant = count(f"variant{index}", feature.env, feature.off)
            if feature.env.get("OTEL_EXPORTER_OTLP_ENDPOINT") and _Sink.exports == exports_before:
                _say(f"{feature.label}: the sink received no export")
            sign = 1 if feature.env else -1
            cost = sign * (variant[feature.route] - baseline[feature.route])
            rows.append(
                {"label": feature.label, "route": feature.route, "cost": cost, "note": feature.note}
            )
    finally:
        sink.shutdown()
        asyncio.run(harness._drop_database(admin_dsn, database))  # noqa: SLF001
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": sys.version.split()[0],
        "requests": args.requests,
        "warmup_requests": args.warmup_requests,
        "baseline": baseline,
        "fastapi": fastapi,
        "features": rows,
    }
    sys.stdout.write(_table(report) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
