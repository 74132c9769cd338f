"""The app factory: the one place where the service's parts are put together.

Read top to bottom, this module is the whole service. `add_defaults` gives every
process the same base (logs, traces, metrics, the database); `create_app` adds the
outbound client and the options' parts (`add_options`), then builds the API: the
probes and routes, the one service middleware (request id, shedding, deadline, the
parts' admission steps and hooks, access log) and a lifespan that opens every
resource the parts offer and closes them again in reverse order. Each part offers
itself through `service.parts.Parts`, the extension points.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI

from {{ cookiecutter.package_name }} import __version__
{%- if cookiecutter.auth == "jwt" %}
from {{ cookiecutter.package_name }}.auth.part import add_auth
{%- endif %}
from {{ cookiecutter.package_name }}.database.migrate import run_migrations
from {{ cookiecutter.package_name }}.database.part import add_database
from {{ cookiecutter.package_name }}.health import probes
from {{ cookiecutter.package_name }}.health.probes import HEALTH_PATHS, Health
{%- if cookiecutter.include_example_api == "yes" %}
from {{ cookiecutter.package_name }}.items.part import add_items
{%- endif %}
from {{ cookiecutter.package_name }}.lifecycle.collector import GarbageCollector
from {{ cookiecutter.package_name }}.lifecycle.drain import Drain
{%- if cookiecutter.broker != "none" %}
from {{ cookiecutter.package_name }}.messaging.part import add_messaging
{%- endif %}
from {{ cookiecutter.package_name }}.observability.event_loop import LoopLagMonitor
from {{ cookiecutter.package_name }}.observability.logs.config import configure_logging, enable_loop_debug
{%- if cookiecutter.metrics == "prometheus" %}
from {{ cookiecutter.package_name }}.observability.metrics.part import add_metrics
{%- endif %}
{%- if cookiecutter.tracing == "opentelemetry" %}
from {{ cookiecutter.package_name }}.observability.tracing.part import add_tracing
{%- endif %}
from {{ cookiecutter.package_name }}.outbound.part import add_outbound_client
{%- if cookiecutter.redis == "yes" %}
from {{ cookiecutter.package_name }}.redis.part import add_redis
{%- endif %}
from {{ cookiecutter.package_name }}.resilience.deadline import Deadlines
from {{ cookiecutter.package_name }}.resilience.shedding import RequestStats
from {{ cookiecutter.package_name }}.service import api_docs
from {{ cookiecutter.package_name }}.service.middleware import ServiceMiddleware
from {{ cookiecutter.package_name }}.service.openapi import document_problems
from {{ cookiecutter.package_name }}.service.parts import Parts, open_all
from {{ cookiecutter.package_name }}.service.problems import install_problem_handlers
from {{ cookiecutter.package_name }}.settings import Settings, load_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from {{ cookiecutter.package_name }}.observability.logs.access import AccessLog
    from {{ cookiecutter.package_name }}.resilience.breaker import CircuitBreaker, CircuitState

log = structlog.get_logger(__name__)


def setup_logging(settings: Settings, parts: Parts | None = None) -> AccessLog:
    """Structured logging for the service and its commands; returns the access log."""
    return configure_logging(
        level=settings.log.level,
        json=settings.log.format == "json",
        service=settings.service_name,
        version=__version__,
        environment=settings.environment.value,
        extra_processors=parts.log_processors if parts is not None else (),
    )


def log_breaker_change(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
    """Every breaker's state changes are logged."""
    log.warning("circuit_state_changed", breaker=breaker.name, old=old.value, new=new.value)


def add_defaults(parts: Parts, settings: Settings, deadlines: Deadlines) -> AccessLog:
    """What every process of the service has: traces, metrics, logs, the database."""
    parts.breaker_listeners.append(log_breaker_change)
{%- if cookiecutter.tracing == "opentelemetry" %}
    add_tracing(
        parts,
        service=settings.service_name,
        version=__version__,
        environment=settings.environment.value,
    )
{%- endif %}
{%- if cookiecutter.metrics == "prometheus" %}
    add_metrics(parts)
{%- endif %}
    access_log = setup_logging(settings, parts)
    add_database(
        parts,
        settings.dsn,
        settings.db,
        application_name=settings.service_name,
        deadlines=deadlines,
    )
    return access_log


async def migrate(settings: Settings) -> None:
    """`python -m {{ cookiecutter.package_name }} migrate`: apply migrations, logging as the service does."""
    logs = setup_logging(settings)
    log.info("migrations_applied", versions=await run_migrations(settings.dsn))
    logs.flush()


def create_app(settings: Settings) -> FastAPI:
    """Build the service from `settings`."""
    app = FastAPI(
        title={{ cookiecutter.project_name | pystr }},
        version=__version__,
        # The docs page is api_docs' own (no CDN); ReDoc would load from a CDN, so it is off.
        docs_url=None,
        redoc_url=None,
        # FastAPI's built-in telemetry switches on with any SDK provider and costs
        # several times what the service middleware's hooks do for the same span and
        # metrics; it checks the providers on every request even while off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    parts = Parts(app)
    deadlines = Deadlines()
    access_log = add_defaults(parts, settings, deadlines)
    add_outbound_client(parts, settings.http_client)
    add_options(parts, settings)

    drain = app.state.drain = Drain(settings.shutdown.drain_seconds)
    stats = app.state.stats = RequestStats(settings.limits.max_in_flight)
    app.state.settings = settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.debug:
            enable_loop_debug(asyncio.get_running_loop(), settings.log.slow_callback_ms)
        if settings.migrate_on_startup:
            log.info("migrations_applied", versions=await run_migrations(settings.dsn))
        async with AsyncExitStack() as stack:
            stack.callback(access_log.flush)
            stack.callback(log.info, "stopped")
            await open_all(parts.resources, stack)
            loop_monitor = LoopLagMonitor(on_sample=parts.loop_lag)
            app.state.health = Health(
                db=app.state.db,
                drain=drain,
                stats=stats,
                loop_monitor=loop_monitor,
                breakers=parts.breakers,
                extra_checks=parts.health_checks,
                max_in_flight=settings.limits.max_in_flight,
                service=settings.service_name,
                version=__version__,
                on_ready=parts.readiness,
            )
            await stack.enter_async_context(loop_monitor.running())
            stack.enter_context(drain.installed())
            # Last: everything built so far lives as long as the process and is frozen.
            await stack.enter_async_context(GarbageCollector().running())
            log.info("started", port=settings.port, environment=settings.environment.value)
            yield

    app.router.lifespan_context = lifespan
    install_problem_handlers(app)
    document_problems(app)
    # Requests are matched against the routes in order: liveness and the API first,
    # then the other probes, the OpenAPI and docs pages that FastAPI registered at
    # creation last. Routes are added to the app itself: `include_router` would match
    # every request a second time inside the router.
    docs_routes = app.router.routes[:]
    app.router.routes[:] = [
        *probes.live_routes,
        *parts.api_routes(),
        *probes.ready_routes,
        *parts.service_routes,
        *docs_routes,
        *api_docs.routes(title=app.title, openapi_url=app.openapi_url or ""),
    ]
    for document in parts.openapi:
        document(app)
    # Probes and scrapes are exempt from shedding and deadlines, and not traced or logged.
    parts.exempt_paths |= HEALTH_PATHS
    app.add_middleware(
        ServiceMiddleware,
        exempt_paths=parts.exempt(),
        log_exempt=settings.log.health_requests,
        access_log=access_log,
        stats=stats,
        deadlines=deadlines,
        timeout=settings.limits.request_timeout,
        max_body_bytes=settings.limits.max_body_bytes,
        on_shed=parts.shed if parts.on_shed else None,
        admission=parts.admission,
        # Started in this order and finished in reverse.
        hooks=parts.hooks,
    )
    return app


def app_from_env() -> FastAPI:
    """Zero-argument factory for uvicorn (`--factory`), used by every worker process."""
    return create_app(load_settings())


def add_options(parts: Parts, settings: Settings) -> None:
    """The parts that the template's options chose, in order: each may use those before it."""
{%- if cookiecutter.auth == "jwt" %}
    add_auth(parts, settings.auth)  # first: the rate limiter keys on the caller it names
{%- endif %}
{%- if cookiecutter.redis == "yes" %}
    add_redis(parts, settings.redis, service=settings.service_name)
{%- endif %}
{%- if cookiecutter.include_example_api == "yes" %}
    add_items(parts)
{%- endif %}
{%- if cookiecutter.broker != "none" %}
    add_messaging(parts, settings.broker, name=settings.service_name)


def create_worker(settings: Settings) -> FastAPI:
    """Build the worker: the same parts, its consumers, and probes and metrics on their own port."""
    # Probes and /metrics only: no OpenAPI, docs or built-in telemetry (see create_app).
    worker = FastAPI(
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    parts = Parts(worker)
    logs = add_defaults(parts, settings, Deadlines())
    add_options(parts, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_startup:
            log.info("migrations_applied", versions=await run_migrations(settings.dsn))
        async with AsyncExitStack() as stack:
            stack.callback(logs.flush)
            stack.callback(log.info, "worker_stopped")
            await open_all(parts.worker_resources, stack)
            yield

    worker.router.lifespan_context = lifespan
    worker.router.routes.extend(parts.worker_routes)
    return worker


def worker_from_env() -> FastAPI:
    """Zero-argument factory for the worker's uvicorn (`python -m ... worker`)."""
    return create_worker(load_settings())
{%- endif %}
