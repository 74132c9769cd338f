"""Liveness, readiness and the detailed health report.

- `/health/live`: the process and its event loop answer. Nothing else is checked, so a
  database outage never makes Kubernetes restart healthy pods.
- `/health/ready`: the database answers `SELECT 1` in time, its circuit is not open and
  the service is not draining. Downstream HTTP breakers are reported but do not fail
  readiness: taking every replica out of the load balancer because a dependency is
  down would turn a partial outage into a total one.
- `/health`: the IETF health-check response format (`application/health+json`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson
from fastapi import Request, Response
from starlette.routing import Route

from {{ cookiecutter.package_name }}.resilience.breaker import CircuitState

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from {{ cookiecutter.package_name }}.database.pool import Database
    from {{ cookiecutter.package_name }}.lifecycle.drain import Drain
    from {{ cookiecutter.package_name }}.observability.event_loop import LoopLagMonitor
    from {{ cookiecutter.package_name }}.resilience.breaker import CircuitBreaker
    from {{ cookiecutter.package_name }}.resilience.shedding import RequestStats

LIVE_PATH = "/health/live"
READY_PATH = "/health/ready"
REPORT_PATH = "/health"
HEALTH_PATHS = frozenset({LIVE_PATH, READY_PATH, REPORT_PATH})
HEALTH_JSON = "application/health+json"

Status = Literal["pass", "warn", "fail"]

_PASS = orjson.dumps({"status": "pass"})


@dataclass(frozen=True, slots=True)
class DatabaseCheck:
    """One `SELECT 1`: did it answer, how fast, when."""

    ok: bool
    latency_ms: float
    checked_at: datetime
    error: str | None = None


class Health:
    """Everything the probes look at, with the database check cached briefly."""

    def __init__(  # noqa: PLR0913 - one argument per component observed
        self,
        *,
        db: Database,
        drain: Drain,
        stats: RequestStats,
        loop_monitor: LoopLagMonitor,
        breakers: Callable[[], Iterable[CircuitBreaker]],
        max_in_flight: int,
        service: str,
        version: str,
        check_timeout: float = 1.0,
        cache_seconds: float = 1.0,
        lag_warn_seconds: float = 0.1,
        error_rate_warn: float = 0.05,
        extra_checks: Iterable[Callable[[], Awaitable[dict[str, list[dict[str, Any]]]]]] = (),
        on_ready: Callable[[bool], None] | None = None,
    ) -> None:
        """Observe the given components; thresholds decide `warn`."""
        self.db = db
        self.drain = drain
        self.stats = stats
        self.loop_monitor = loop_monitor
        self.breakers = breakers
        self.max_in_flight = max_in_flight
        self.service = service
        self.version = version
        self.check_timeout = check_timeout
        self.cache_seconds = cache_seconds
        self.lag_warn_seconds = lag_warn_seconds
        self.error_rate_warn = error_rate_warn
        # Optional dependencies (Redis, a broker): reported, and `warn` at worst.
        self.extra_checks = tuple(extra_checks)
        # Told each readiness result (metrics count them: probes are not counted as requests).
        self.on_ready = on_ready
        self._cached: tuple[float, DatabaseCheck] | None = None
        self._running: asyncio.Future[DatabaseCheck] | None = None

    async def database(self) -> DatabaseCheck:
        """The latest database check; concurrent callers share one query."""
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self.cache_seconds:
            return self._cached[1]
        if self._running is None:
            self._running = asyncio.ensure_future(self._check_database())
        running = self._running
        try:
            return await asyncio.shield(running)
        finally:
            if running.done():
                self._running = None

    async def _check_database(self) -> DatabaseCheck:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.check_timeout):
                await self.db.fetchval("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            check = DatabaseCheck(
                ok=False,
                latency_ms=_ms_since(started),
                checked_at=_now(),
                error=f"{type(exc).__name__}: {exc}",
            )
        else:
            check = DatabaseCheck(ok=True, latency_ms=_ms_since(started), checked_at=_now())
        self._cached = (time.monotonic(), check)
        return check

    async def ready(self) -> tuple[bool, str]:
        """Ready to take traffic, and if not, why."""
        result = await self._ready()
        if self.on_ready is not None:
            self.on_ready(result[0])
        return result

    async def _ready(self) -> tuple[bool, str]:
        if self.drain.draining:
            return False, "draining for shutdown"
        if self.db.breaker.state is CircuitState.OPEN:
            return False, "database circuit is open"
        check = await self.database()
        return (True, "ready") if check.ok else (False, f"database check failed: {check.error}")

    async def report(self) -> tuple[Status, dict[str, Any]]:
        """The health+json document and its overall status."""
        check = await self.database()
        at = check.checked_at.isoformat()
        now = _now().isoformat()
        pool = self.db.pool
        breakers = list(self.breakers())
        lag = self.loop_monitor.lag
        rate = self.stats.error_rate
        checks: dict[str, list[dict[str, Any]]] = {
            "database:responseTime": [
                {
                    "componentType": "datastore",
                    "observedValue": round(check.latency_ms, 3),
                    "observedUnit": "ms",
                    "status": "pass" if check.ok else "fail",
                    "time": at,
                    **({"output": check.error} if check.error else {}),
                }
            ],
            "database:connections": [
                _observed("size", pool.get_size(), "connections", "pass", now),
                _observed("idle", pool.get_idle_size(), "connections", "pass", now),
            ],
            "circuitBreaker:state": [
                {
                    "componentId": breaker.name,
                    "observedValue": breaker.state.value,
                    "status": "fail" if breaker.state is CircuitState.OPEN else "pass",
                    "time": now,
                }
                for breaker in breakers
            ],
            "eventLoop:lag": [
                _observed(
                    "loop", round(lag * 1000, 3), "ms", _warn_if(lag > self.lag_warn_seconds), now
                )
            ],
            "requests:inFlight": [
                _observed("in-flight", self.stats.in_flight, "requests", "pass", now)
                | {"limit": self.max_in_flight}
            ],
            "requests:errorRate": [
                _observed(
                    "5xx", round(rate, 4), "ratio", _warn_if(rate > self.error_rate_warn), now
                )
            ],
        }
        for extra_check in self.extra_checks:
            checks |= await extra_check()
        ready, reason = await self.ready()
        downstream_open = any(
            b.state is CircuitState.OPEN for b in breakers if b is not self.db.breaker
        )
        degraded = downstream_open or any(
            entry["status"] == "warn" for entries in checks.values() for entry in entries
        )
        status: Status = "fail" if not ready else "warn" if degraded else "pass"
        document: dict[str, Any] = {
            "status": status,
            "version": self.version,
            "serviceId": self.service,
            "checks": checks,
        }
        if not ready:
            document["output"] = reason
        return status, document


def _observed(component: str, value: float, unit: str, status: Status, at: str) -> dict[str, Any]:
    return {
        "componentId": component,
        "observedValue": value,
        "observedUnit": unit,
        "status": status,
        "time": at,
    }


def _warn_if(condition: bool) -> Status:  # noqa: FBT001 - reads as prose at the call site
    return "warn" if condition else "pass"


def _now() -> datetime:
    return datetime.now(UTC)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _health_json(body: bytes, status_code: int = 200) -> Response:
    return Response(body, status_code=status_code, media_type=HEALTH_JSON)


async def live(_request: Request) -> Response:
    """The event loop answers: nothing more is checked."""
    return _health_json(_PASS)


async def ready(request: Request) -> Response:
    """200 when the service should receive traffic, 503 otherwise."""
    is_ready, reason = await request.app.state.health.ready()
    if is_ready:
        return _health_json(_PASS)
    return _health_json(orjson.dumps({"status": "fail", "output": reason}), 503)


async def report(request: Request) -> Response:
    """The detailed report; 503 when not ready, 200 when passing or degraded."""
    status, document = await request.app.state.health.report()
    return _health_json(orjson.dumps(document), 503 if status == "fail" else 200)


# Plain Starlette routes: probes need none of FastAPI's parameter handling. Liveness,
# probed most often and the cheapest answer, is matched before the API; readiness and
# the report after it, so that an API request is not matched against them (the two
# failed matches cost ~14,000 instructions per API request).
live_routes = [Route(LIVE_PATH, live, methods=["GET"], include_in_schema=False)]
ready_routes = [
    Route(READY_PATH, ready, methods=["GET"], include_in_schema=False),
    Route(REPORT_PATH, report, methods=["GET"], include_in_schema=False),
]
