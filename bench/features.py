"""What each chassis feature costs on a route, in instructions per request (template only).

    python3 bench/run.py --features [--requests 500] [--warmup-requests 200] [--json PATH]

The wrapper `bench/run.py` bakes the defaults and runs this file with the baked
project's interpreter and `--project <dir>`. It reuses the generated project's own
harness (`bench/servers.py` for the database, `bench/instructions.py` for the counting),
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
import contextlib
import datetime as dt
import http.client
import importlib
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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Feature:
    """One row of the table: how to run the service without (or with) it."""

    label: str
    off: tuple[str, ...] = ()  # bench/variant.py switches: the variant lacks the feature
    env: dict[str, str] = field(default_factory=dict)  # or: the variant adds it
    route: str = "items_get"
    note: str = ""
    # Or, with no variant: `route` minus route `against`, both on the baseline server.
    against: str = ""
    needs: str = ""  # "redis" or "jwt": the row is skipped in a bake without it


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
    Feature("request body limit", off=("body_limit",)),
    Feature("database breaker", off=("database_breaker",)),
    Feature(
        "rate limiting (a lease spent; a round trip per lease)",
        off=("rate_limiting",),
        note="with Redis; tokens leased in batches, see rate_limit.py",
        needs="redis",
    ),
    Feature(
        "rate limiting, one round trip per request (leases of one token)",
        env={"{prefix}REDIS__RATE_LIMIT__MAX_LEASE": "1"},
        note="with Redis; on top of the row above: the lean connection's round trip",
        needs="redis",
    ),
    Feature(
        "idempotency lookup (POST with a key)",
        route="items_post_key",
        against="items_post",
        note="with Redis; a round trip before (claim), one write after (unanswered)",
        needs="redis",
    ),
    Feature(
        "JWT verification, the token remembered (a caller's next requests)",
        off=("jwt_verification",),
        note="auth=jwt; the tests' identity provider's RS256 token, sent with every request",
        needs="jwt",
    ),
    Feature(
        "JWT: the RS256 token verified in full on every request (cache off)",
        env={"{prefix}AUTH__VERIFIED_TOKEN_CACHE_SIZE": "0"},
        note="auth=jwt; on top of the row above: what the cache saves",
        needs="jwt",
    ),
    Feature(
        "JWT: an ES256 token verified in full on every request (cache off)",
        env={"{prefix}AUTH__VERIFIED_TOKEN_CACHE_SIZE": "0"},
        route="items_get_es256",
        note="auth=jwt; same, signed with its P-256 key",
        needs="jwt",
    ),
    Feature(
        "periodic GC collector",
        off=("gc_collector",),
        note="per request; a collection per second on top",
    ),
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
        "--cpu-requests",
        type=int,
        default=3000,
        help="native requests for the CPU column",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated labels' first words, e.g. metrics,trace",
    )
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.add_argument("--keep", action="store_true", help="keep logs and callgrind files")
    return parser.parse_args()


ROUTE_PATHS = {
    "items_get": "GET /items/{id}",
    "items_get_es256": "GET /items/{id}",
    "items_post": "POST /items",
    "items_post_key": "POST /items + key",
}


# With auth=jwt, a bearer token by algorithm (`_identity_provider`); empty otherwise.
TOKENS: dict[str, str] = {}


def _bearer(algorithm: str = "RS256") -> tuple[tuple[str, str], ...]:
    token = TOKENS.get(algorithm)
    return (("Authorization", f"Bearer {token}"),) if token else ()


def _routes(instructions: Any, names: set[str]) -> dict[str, Any]:  # noqa: ANN401
    """What the client sends, with names and keys no earlier server has used."""
    token = secrets.token_hex(4)
    body = '{"name": "bench-%s-{n}", "price_cents": 100}' % token  # noqa: UP031
    auth = _bearer()
    routes = {
        "items_get": instructions.Route("GET", "/items/{n}", headers=auth),
        "items_get_es256": instructions.Route("GET", "/items/{n}", headers=_bearer("ES256")),
        "items_post": instructions.Route("POST", "/items", body, 201, auth),
        "items_post_key": instructions.Route(
            "POST",
            "/items",
            body.replace("bench-", "bench-k-"),
            201,
            (("Idempotency-Key", f'"{token}-{{n}}"'), *auth),
        ),
    }
    return {name: route for name, route in routes.items() if name in names}


@contextlib.contextmanager
def _identity_provider(servers: Any) -> Iterator[bool]:  # noqa: ANN401
    """With auth=jwt, the tests' identity provider: a JWKS over HTTP on 127.0.0.1.

    The service fetches its keys from it (`servers.EXTRA_ENV`, which the generated
    harness adds to every server's environment) and every request carries a token it
    signed, RS256 or ES256 (`TOKENS`), valid for the whole run, with both scopes of the
    example API. (`servers.authenticate` signs one RS256 token only.)
    """
    if not servers.HAS_AUTH:
        yield False
        return
    sys.path.insert(0, str(servers.PROJECT))
    module = importlib.import_module("tests.identity_provider")
    with module.IdentityProvider() as provider:
        env = provider.env()
        servers.EXTRA_ENV.update(env)
        for key in (provider.rsa, provider.ec):
            TOKENS[key.algorithm] = provider.token(
                key=key, lifetime=24 * 3600, scope="items:read items:write"
            )
        _say(f"auth=jwt: tokens signed by {provider.issuer} ({', '.join(TOKENS)})")
        try:
            yield True
        finally:
            for name in env:
                servers.EXTRA_ENV.pop(name, None)
            TOKENS.clear()


def _table(report: dict[str, Any]) -> str:
    base = report["baseline"]
    lines = [
        (
            f"per-feature cost, {report['date']}, Python {report['python']}: instructions "
            f"per request ({report['requests']} after {report['warmup_requests']}), "
            f"us of CPU per request natively ({report['cpu_requests']}, rough)"
        ),
        "",
        f"{'route':<18}{'feature':<42}{'instr/req':>11}{'of route':>9}{'us CPU':>8}"
        f"{'instr/s':>12}  note",
        f"{'GET /items/{id}':<18}{'the service, every default feature on':<42}"
        f"{base['items_get']:>11,.0f}{'':>9}{report['baseline_cpu_us']['items_get']:>8.0f}",
    ]
    fastapi = report["fastapi"]["items_get"]
    ratio = f"ratio {base['items_get'] / fastapi:.3f}"
    lines.append(f"{'':<18}{'bare FastAPI (the reference)':<42}{fastapi:>11,.0f}  {ratio}")
    for row in report["features"]:
        of = base[row.get("against") or row["route"]]
        lines.append(
            f"{ROUTE_PATHS[row['route']]:<18}{row['label']:<42}{row['cost']:>+11,.0f}"
            f"{row['cost'] / of:>9.1%}{row['cpu_us']:>+8.1f}"
            f"{row['cost_per_wall_second']:>+12,.0f}  {row['note']}"
        )
    return "\n".join(lines)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_per_request(
    instructions: Any,  # noqa: ANN401 - the baked project's modules, imported at run time
    servers: Any,  # noqa: ANN401
    launch: Any,  # noqa: ANN401
    route: Any,  # noqa: ANN401
    requests: int,
) -> float:
    """Microseconds of CPU (user + kernel) per request, natively (no valgrind).

    The kernel's side of a Redis round trip (two socket calls) is in this figure and not
    in the instruction count. CPU time, unlike requests/s, hardly depends on other load,
    but it is read in clock ticks (10 ms) and grows with cache contention when other work
    loads the machine (+-30 % here): a rough figure next to the instruction count.
    """
    log = Path(tempfile.mkstemp(prefix="bench-cpu-", suffix=".log")[1])
    process = servers.start(launch, log)
    try:
        servers.wait_ready(process, launch.port, log, timeout=60)
        connection = http.client.HTTPConnection(servers.HOST, launch.port, timeout=30)
        instructions.send(connection, route, 1, 300)
        before = _cpu_seconds(process.pid)
        instructions.send(connection, route, 301, requests)
        after = _cpu_seconds(process.pid)
        connection.close()
    finally:
        servers.stop(process)
        log.unlink()
    return (after - before) / requests * 1e6


def main() -> int:  # noqa: C901, PLR0915 - one linear script
    """Count the baseline, every variant and bare FastAPI; print and write the table."""
    args = _arguments()
    sys.path.insert(0, str(args.project / "bench"))
    import instructions  # noqa: PLC0415 - the baked project's harness
    import servers  # noqa: PLC0415

    features = FEATURES
    if args.only:
        wanted = [word.strip().lower() for word in args.only.split(",")]
        features = [f for f in FEATURES if any(f.label.lower().startswith(w) for w in wanted)]
    if not servers.HAS_REDIS:
        features = [f for f in features if f.needs != "redis"]
    if not servers.HAS_AUTH:
        features = [f for f in features if f.needs != "jwt"]
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-features-"))
    # The CPU column's servers read ids up to 300 (warm-up) + `--cpu-requests`.
    items = max(args.warmup_requests + args.requests, 300 + args.cpu_requests)

    def launch(name: str, env: dict[str, str], off: tuple[str, ...] = ()) -> Any:  # noqa: ANN401
        """The service (a variant of it) as `bench/variant.py` serves it."""
        base = servers.launch("generated", dsn, pool, workdir)
        base.env.update(
            {
                key.format(prefix=servers.PREFIX): value.format(sink_port=sink.server_port)
                for key, value in env.items()
            }
        )
        base.env.update({"BENCH_PACKAGE": servers.PACKAGE, "BENCH_OFF": ",".join(off)})
        argv = [base.argv[0], str(HERE / "variant.py")]
        return servers.Launch(name, argv, base.env, base.cwd, base.port)

    def count(
        name: str,
        server: Any,  # noqa: ANN401
        names: set[str],
        alternate: Collection[str] = (),
    ) -> dict[str, Any]:
        """Instructions per request (and per wall second) of `server`, by route."""
        counted: dict[str, Any] = instructions.count(
            server,
            _routes(instructions, names),
            requests=args.requests,
            warmup=args.warmup_requests,
            workdir=workdir,
            alternate=alternate,
        )
        _say(f"{name}: " + ", ".join(f"{r} {v.per_request:,.0f}" for r, v in counted.items()))
        return counted

    def cpu(server: Any, route: str) -> float:  # noqa: ANN401
        """The least of two native runs: other load only ever adds CPU time."""
        return min(
            _cpu_per_request(
                instructions,
                servers,
                server,
                _routes(instructions, {route})[route],
                args.cpu_requests,
            )
            for _ in range(2)
        )

    try:
        # The identity provider before the database: the migration reads the settings,
        # which with auth=jwt require the provider's.
        with (
            servers.redis(),
            _identity_provider(servers),
            servers.database(items, workdir) as (dsn, pool),
        ):
            wanted_routes = (
                {"items_get"}
                | {f.route for f in features}
                | {f.against for f in features if f.against}
            )
            # A row that is the difference of two routes: both counted in alternated
            # blocks (`instructions.count`), so that drift lands on both alike.
            pairs = {r for f in features if f.against for r in (f.route, f.against)}
            baseline_counts = count("baseline", launch("baseline", {}), wanted_routes, pairs)
            baseline = {route: value.per_request for route, value in baseline_counts.items()}
            fastapi_launch = servers.launch("fastapi", dsn, pool, workdir)
            fastapi = {
                route: value.per_request
                for route, value in count("fastapi", fastapi_launch, {"items_get"}).items()
            }
            rows = []
            for index, feature in enumerate(features):
                exports_before = _Sink.exports
                if feature.against:
                    with_it, without = feature.route, feature.against
                    cost = baseline[with_it] - baseline[without]
                    per_second = (
                        baseline_counts[with_it].per_second - baseline_counts[without].per_second
                    )
                    server = launch(f"cpu{index}", {})
                    cpu_cost = cpu(server, with_it) - cpu(server, without)
                else:
                    variant_launch = launch(f"variant{index}", feature.env, feature.off)
                    variant = count(f"variant{index}", variant_launch, {feature.route})
                    sign = 1 if feature.env else -1
                    cost = sign * (variant[feature.route].per_request - baseline[feature.route])
                    per_second = sign * (
                        variant[feature.route].per_second
                        - baseline_counts[feature.route].per_second
                    )
                    on = launch(f"cpu{index}", {})
                    cpu_on = cpu(on, feature.route)
                    cpu_off = cpu(launch(f"cpu{index}v", feature.env, feature.off), feature.route)
                    cpu_cost = sign * (cpu_off - cpu_on)
                if (
                    feature.env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                    and _Sink.exports == exports_before
                ):
                    _say(f"{feature.label}: the sink received no export")
                _say(f"{feature.label}: {cost:+,.0f} instr/req, {cpu_cost:+.1f} us CPU/req")
                rows.append(
                    {
                        "label": feature.label,
                        "route": feature.route,
                        "against": feature.against,
                        "cost": cost,
                        "cost_per_wall_second": per_second,
                        "cpu_us": cpu_cost,
                        "note": feature.note,
                    }
                )
            route_cpu = {"items_get": cpu(launch("cpu", {}), "items_get")}
    finally:
        sink.shutdown()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": sys.version.split()[0],
        "requests": args.requests,
        "warmup_requests": args.warmup_requests,
        "cpu_requests": args.cpu_requests,
        "redis": servers.HAS_REDIS,
        "baseline": baseline,
        "baseline_cpu_us": route_cpu,
        "fastapi": fastapi,
        "features": rows,
    }
    sys.stdout.write(_table(report) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
