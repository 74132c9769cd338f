"""The app factory: the one place where the service's parts are wired together.

Read top to bottom, `create_app` is the whole service: logging and tracing, the
routes, the one service middleware (request id, load shedding, deadline, tracing
and metrics hooks, access log), and a lifespan that opens every resource and closes
it again.
"""

from __future__ import annotations

import asyncio
import gc
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI

from {{ cookiecutter.package_name }} import __version__, api_docs, health
from {{ cookiecutter.package_name }}.db import Database, close_pool, create_pool, is_unavailable
from {{ cookiecutter.package_name }}.deadline import Deadlines
from {{ cookiecutter.package_name }}.health import HEALTH_PATHS, Health
from {{ cookiecutter.package_name }}.http_client import build_outbound_client
{%- if cookiecutter.include_example_api == "yes" %}
from {{ cookiecutter.package_name }}.items.routes import router as items_router
{%- endif %}
from {{ cookiecutter.package_name }}.lifecycle import Drain
from {{ cookiecutter.package_name }}.middleware import ServiceMiddleware
from {{ cookiecutter.package_name }}.migrate import run_migrations
from {{ cookiecutter.package_name }}.observability.event_loop import LoopLagMonitor
from {{ cookiecutter.package_name }}.observability.logging import configure_logging, enable_loop_debug
{%- if cookiecutter.metrics == "prometheus" %}
from {{ cookiecutter.package_name }}.observability.metrics import METRICS_PATH, Metrics
from {{ cookiecutter.package_name }}.observability.metrics import routes as metrics_routes
{%- endif %}
{%- if cookiecutter.tracing == "opentelemetry" %}
from {{ cookiecutter.package_name }}.observability.tracing import (
    RequestTracing,
    add_trace_ids,
    configure_tracing,
    end_client_span,
    inject_trace_headers,
    query_span,
)
{%- endif %}
from {{ cookiecutter.package_name }}.problems import install_problem_handlers
from {{ cookiecutter.package_name }}.resilience import BreakerConfig, CircuitBreaker, CircuitState
from {{ cookiecutter.package_name }}.settings import BreakerSettings, Settings, load_settings
from {{ cookiecutter.package_name }}.shedding import RequestStats

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from starlette.routing import BaseRoute

    from {{ cookiecutter.package_name }}.observability.logging import AccessLog

log = structlog.get_logger(__name__)

# Allocations before a young collection, and the two generations' ratios (default 700, 10, 10).
GC_THRESHOLDS = (10_000, 20, 20)


def breaker_config(settings: BreakerSettings) -> BreakerConfig:
    """Translate breaker settings into the breaker's own configuration."""
    return BreakerConfig(
        failure_rate_threshold=settings.failure_rate_threshold,
        sliding_window_size=settings.sliding_window_size,
        minimum_calls=settings.minimum_calls,
        consecutive_failures=settings.consecutive_failures,
        slow_call_duration=settings.slow_call_seconds,
        wait_in_open=settings.wait_in_open_seconds,
        permitted_calls_in_half_open=settings.half_open_calls,
        max_wait_in_half_open=settings.max_wait_in_half_open_seconds,
    )


def add_routes(app: FastAPI, routes: Iterable[BaseRoute]) -> None:
    """Register routes on the app itself; an `APIRouter`'s carry its prefix already.

    `app.include_router` makes FastAPI resolve the router lazily, matching every
    request a second time inside it (~8 µs a request); the same routes added to the
    app are matched once. What only `include_router` applies (its own prefix, tags
    and dependencies arguments, a router's lifespan) needs `include_router`.
    """
    app.router.routes.extend(routes)


def setup_logging(settings: Settings) -> AccessLog:
    """Structured logging for the service and its commands; returns the access log."""
    return configure_logging(
        level=settings.log.level,
        json=settings.log.format == "json",
        service=settings.service_name,
        version=__version__,
        environment=settings.environment.value,
{%- if cookiecutter.tracing == "opentelemetry" %}
        extra_processors=[add_trace_ids],
{%- endif %}
    )


async def migrate(settings: Settings) -> None:
    """`python -m {{ cookiecutter.package_name }} migrate`: apply migrations, logging as the service does."""
    logs = setup_logging(settings)
    log.info("migrations_applied", versions=await run_migrations(settings.dsn))
    logs.flush()


def create_app(settings: Settings) -> FastAPI:
    """Build the service from `settings`."""
    access_log = setup_logging(settings)
{%- if cookiecutter.tracing == "opentelemetry" %}
    tracer_provider = configure_tracing(
        service=settings.service_name, version=__version__, environment=settings.environment.value
    )
{%- endif %}
{%- if cookiecutter.metrics == "prometheus" %}
    metrics = Metrics()
{%- endif %}
    drain = Drain(settings.shutdown.drain_seconds)
    stats = RequestStats(settings.limits.max_in_flight)
    deadlines = Deadlines()

    def breaker_changed(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        log.warning("circuit_state_changed", breaker=breaker.name, old=old.value, new=new.value)
{%- if cookiecutter.metrics == "prometheus" %}
        metrics.breaker_changed(breaker, old, new)
{%- endif %}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.debug:
            enable_loop_debug(asyncio.get_running_loop(), settings.log.slow_callback_ms)
        if settings.migrate_on_startup:
            applied = await run_migrations(settings.dsn)
            log.info("migrations_applied", versions=applied)
        pool = await create_pool(settings.dsn, settings.db, application_name=settings.service_name)
        db_breaker = CircuitBreaker(
            "database",
            breaker_config(settings.db.breaker),
            is_failure=is_unavailable,
            on_state_change=breaker_changed,
        )
        app.state.db = Database(
            pool,
            db_breaker,
            acquire_timeout=settings.db.acquire_timeout,
            deadlines=deadlines,
{%- if cookiecutter.tracing == "opentelemetry" %}
            query_span=query_span if tracer_provider is not None else None,
{%- endif %}
        )
        http_client = build_outbound_client(
            connect_timeout=settings.http_client.connect_timeout,
            read_timeout=settings.http_client.read_timeout,
            total_timeout=settings.http_client.total_timeout,
            max_connections=settings.http_client.max_connections,
            breaker_config=breaker_config(settings.http_client.breaker),
            on_state_change=breaker_changed,
{%- if cookiecutter.tracing == "opentelemetry" %}
            event_hooks={"request": [inject_trace_headers], "response": [end_client_span]},
{%- endif %}
        )
        app.state.http_client = http_client

        def breakers() -> list[CircuitBreaker]:
            return [db_breaker, *http_client.breakers.values()]
{% if cookiecutter.metrics == "prometheus" %}
        def sampled(lag: float) -> None:
            metrics.loop_lag.observe(lag)
            metrics.sample(pool, breakers(), stats.in_flight)

        loop_monitor = LoopLagMonitor(on_sample=sampled)
{%- else %}
        loop_monitor = LoopLagMonitor()
{%- endif %}
        app.state.health = Health(
            db=app.state.db,
            drain=drain,
            stats=stats,
            loop_monitor=loop_monitor,
            breakers=breakers,
            max_in_flight=settings.limits.max_in_flight,
            service=settings.service_name,
            version=__version__,
        )
        loop_monitor.start()
        drain.install()
        # Everything built so far lives as long as the process: collect once, then
        # keep the collector from rescanning it (full collections under load took
        # 40-75 ms each over ~70k start-up objects, and showed as p99 latency).
        gc.collect()
        gc.freeze()
        # Requests free their objects by reference counting; the cycle collector's
        # young-generation passes at the default 700 allocations mostly rescan the
        # objects of requests still in flight (~8% of CPU at 64 connections).
        gc.set_threshold(*GC_THRESHOLDS)
        log.info("started", port=settings.port, environment=settings.environment.value)
        try:
            yield
        finally:
            drain.uninstall()
            await loop_monitor.stop()
            await http_client.aclose()
            await close_pool(pool, settings.db.close_timeout)
{%- if cookiecutter.tracing == "opentelemetry" %}
            if tracer_provider is not None:
                tracer_provider.shutdown()
{%- endif %}
            log.info("stopped")
            access_log.flush()  # queued lines: the loop stops before their batch is due

    app = FastAPI(
        title={{ cookiecutter.project_name | pystr }},
        version=__version__,
        lifespan=lifespan,
        # The docs page is api_docs' own (no CDN); ReDoc would load from a CDN, so it is off.
        docs_url=None,
        redoc_url=None,
        # FastAPI's built-in telemetry switches on with any SDK provider and costs
        # several times what the service middleware's hooks do for the same span and
        # metrics; it checks the providers on every request even while off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.drain = drain
    app.state.stats = stats
    install_problem_handlers(app)
    # Requests are matched against the routes in order: the probes (three plain routes,
    # cheap to rule out) and the API first, the OpenAPI and docs pages that FastAPI
    # registered at creation last.
    docs_routes = app.router.routes[:]
    app.router.routes.clear()
    add_routes(app, health.routes)
{%- if cookiecutter.include_example_api == "yes" %}
    add_routes(app, items_router.routes)
{%- endif %}
{%- if cookiecutter.metrics == "prometheus" %}
    app.state.metrics = metrics
    add_routes(app, metrics_routes)
{%- endif %}
    app.router.routes.extend(docs_routes)
    add_routes(app, api_docs.routes(title=app.title, openapi_url=app.openapi_url or ""))

    # Probes and scrapes are exempt from shedding and deadlines, and not traced or logged.
{%- if cookiecutter.metrics == "prometheus" %}
    exempt = HEALTH_PATHS | {METRICS_PATH}
{%- else %}
    exempt = HEALTH_PATHS
{%- endif %}
    app.add_middleware(
        ServiceMiddleware,
        exempt_paths=exempt,
        log_exempt=settings.log.health_requests,
        access_log=access_log,
        stats=stats,
        deadlines=deadlines,
        timeout=settings.limits.request_timeout,
{%- if cookiecutter.metrics == "prometheus" %}
        on_shed=metrics.shed.inc,
{%- endif %}
{%- if cookiecutter.tracing == "opentelemetry" or cookiecutter.metrics == "prometheus" %}
        # Started in this order and finished in reverse, so that the access line is
        # written while the request's span is current.
        hooks=[
{%- if cookiecutter.tracing == "opentelemetry" %}
            RequestTracing(tracer_provider),
{%- endif %}
{%- if cookiecutter.metrics == "prometheus" %}
            metrics,
{%- endif %}
        ],
{%- endif %}
    )
    return app


def app_from_env() -> FastAPI:
    """Zero-argument factory for uvicorn (`--factory`), used by every worker process."""
    return create_app(load_settings())
