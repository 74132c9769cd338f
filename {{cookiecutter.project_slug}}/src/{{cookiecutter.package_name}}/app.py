"""The app factory: the one place where the service's parts are wired together.

Read top to bottom, `create_app` is the whole service: logging and tracing, the
routes, the one service middleware (request id, load shedding, deadline, tracing
and metrics hooks, access log), and a lifespan that opens every resource and closes
it again.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack, asynccontextmanager
{%- if cookiecutter.redis == "yes" and cookiecutter.tracing == "opentelemetry" %}
from functools import partial
{%- endif %}
from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI

from {{ cookiecutter.package_name }} import __version__, api_docs, health
{%- if cookiecutter.auth == "jwt" %}
from {{ cookiecutter.package_name }}.auth.keys import open_key_set
from {{ cookiecutter.package_name }}.auth.openapi import document_security
from {{ cookiecutter.package_name }}.auth.propagation import add_user_baggage
{%- if cookiecutter.include_example_api == "yes" %}
from {{ cookiecutter.package_name }}.auth.scopes import require, requiring
{%- endif %}
from {{ cookiecutter.package_name }}.auth.verifier import Authenticator
{%- endif %}
from {{ cookiecutter.package_name }}.collector import GarbageCollector
from {{ cookiecutter.package_name }}.db import open_database
from {{ cookiecutter.package_name }}.deadline import Deadlines
from {{ cookiecutter.package_name }}.health import HEALTH_PATHS, Health
from {{ cookiecutter.package_name }}.http_client import open_outbound_client
{%- if cookiecutter.redis == "yes" and cookiecutter.include_example_api == "yes" %}
from {{ cookiecutter.package_name }}.idempotent_routes import make_idempotent
{%- endif %}
{%- if cookiecutter.broker != "none" and cookiecutter.include_example_api == "yes" %}
from {{ cookiecutter.package_name }}.items.events import HANDLERS as ITEM_EVENT_HANDLERS
{%- endif %}
{%- if cookiecutter.include_example_api == "yes" %}
from {{ cookiecutter.package_name }}.items.routes import router as items_router
{%- endif %}
{%- if cookiecutter.redis == "yes" %}
from {{ cookiecutter.package_name }}.jobs import heartbeat, run_periodic
{%- endif %}
from {{ cookiecutter.package_name }}.lifecycle import Drain
{%- if cookiecutter.redis == "yes" %}
from {{ cookiecutter.package_name }}.locks import Locks
{%- endif %}
{%- if cookiecutter.broker != "none" %}
from {{ cookiecutter.package_name }}.messaging.broker_lifespan import open_broker
from {{ cookiecutter.package_name }}.messaging.consumer import Consumer
{%- if cookiecutter.metrics == "prometheus" %}
from {{ cookiecutter.package_name }}.messaging.metrics import ConsumerMetrics
{%- endif %}
from {{ cookiecutter.package_name }}.messaging.outbox import Outbox, Relay
from {{ cookiecutter.package_name }}.messaging.worker import WorkerState, probe_routes
{%- endif %}
from {{ cookiecutter.package_name }}.middleware import ServiceMiddleware
from {{ cookiecutter.package_name }}.migrate import run_migrations
{%- if cookiecutter.tracing == "opentelemetry" %}
from {{ cookiecutter.package_name }}.observability.client_spans import (
    end_client_span,
    inject_trace_headers,
    query_span,
)
{%- endif %}
from {{ cookiecutter.package_name }}.observability.event_loop import LoopLagMonitor
from {{ cookiecutter.package_name }}.observability.log_config import configure_logging, enable_loop_debug
{%- if cookiecutter.metrics == "prometheus" %}
from {{ cookiecutter.package_name }}.observability.metrics import METRICS_PATH, Metrics
from {{ cookiecutter.package_name }}.observability.metrics import routes as metrics_routes
{%- endif %}
{%- if cookiecutter.redis == "yes" and cookiecutter.metrics == "prometheus" %}
from {{ cookiecutter.package_name }}.observability.redis_metrics import RedisCollector
{%- endif %}
{%- if cookiecutter.tracing == "opentelemetry" %}
from {{ cookiecutter.package_name }}.observability.trace_export import configure_tracing
from {{ cookiecutter.package_name }}.observability.tracing import (
    RequestTracing,
    add_trace_ids,
{%- if cookiecutter.broker != "none" %}
    continue_trace,
    trace_headers,
{%- endif %}
)
{%- endif %}
from {{ cookiecutter.package_name }}.openapi import document_problems
from {{ cookiecutter.package_name }}.problems import install_problem_handlers
{%- if cookiecutter.redis == "yes" %}
from {{ cookiecutter.package_name }}.rate_limit import RateLimiter, install_openapi
from {{ cookiecutter.package_name }}.redis_store import open_redis
{%- endif %}
from {{ cookiecutter.package_name }}.settings import Settings, load_settings
from {{ cookiecutter.package_name }}.shedding import RequestStats

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable
{% if cookiecutter.broker != "none" %}
    from starlette.applications import Starlette
{%- endif %}
    from starlette.routing import BaseRoute

    from {{ cookiecutter.package_name }}.observability.access_log import AccessLog
    from {{ cookiecutter.package_name }}.resilience import CircuitBreaker, CircuitState

log = structlog.get_logger(__name__)


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
{%- if cookiecutter.redis == "yes" %}
    # Without a Redis URL there are no rate limits, idempotency keys or jobs (logged).
    redis_on = settings.redis.url is not None
    rate_limiter = (
        RateLimiter(settings.redis.rate_limit)
        if redis_on and settings.redis.rate_limit.enabled
        else None
    )
{%- endif %}
{%- if cookiecutter.auth == "jwt" %}
    authenticator = Authenticator(settings.auth)  # its keys arrive with the lifespan
{%- endif %}

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
        # Each resource is opened by one line and closed in reverse order on the way out.
        async with AsyncExitStack() as stack:
            stack.callback(access_log.flush)
            stack.callback(log.info, "stopped")
{%- if cookiecutter.tracing == "opentelemetry" %}
            if tracer_provider is not None:
                stack.callback(tracer_provider.shutdown)  # flushes the last spans
{%- endif %}
            db = app.state.db = await stack.enter_async_context(
                open_database(
                    settings,
                    deadlines=deadlines,
                    on_state_change=breaker_changed,
{%- if cookiecutter.tracing == "opentelemetry" %}
                    query_span=query_span if tracer_provider is not None else None,
{%- endif %}
                )
            )
            http_client = app.state.http_client = await stack.enter_async_context(
                open_outbound_client(
                    settings.http_client,
                    on_state_change=breaker_changed,
{%- if cookiecutter.tracing == "opentelemetry" and cookiecutter.auth == "jwt" %}
                    event_hooks={
                        "request": [inject_trace_headers, add_user_baggage],
                        "response": [end_client_span],
                    },
{%- elif cookiecutter.tracing == "opentelemetry" %}
                    event_hooks={"request": [inject_trace_headers], "response": [end_client_span]},
{%- elif cookiecutter.auth == "jwt" %}
                    event_hooks={"request": [add_user_baggage]},
{%- endif %}
                )
            )
{%- if cookiecutter.auth == "jwt" %}
            # The identity provider's keys, fetched through the outbound client (its
            # timeouts and breaker); start-up goes on if the provider is down.
            authenticator.keys = await stack.enter_async_context(
                open_key_set(settings.auth, http_client)
            )
{%- endif %}

{%- if cookiecutter.redis == "yes" %}
            redis = app.state.redis = await stack.enter_async_context(
                open_redis(
                    settings.redis,
                    service=settings.service_name,
                    on_state_change=breaker_changed,
{%- if cookiecutter.tracing == "opentelemetry" %}
                    command_span=partial(query_span, system="redis")
                    if tracer_provider is not None
                    else None,
{%- endif %}
                )
            )
            if redis is not None:
                locks = app.state.locks = Locks(redis, ttl=settings.redis.jobs.lock_seconds)
                jobs = {"heartbeat": (settings.redis.jobs.heartbeat_seconds, heartbeat(redis))}
                await stack.enter_async_context(run_periodic(redis, locks, jobs))
{%- if cookiecutter.metrics == "prometheus" %}
                collector = RedisCollector(redis, rate_limiter)
                metrics.registry.register(collector)
                stack.callback(metrics.registry.unregister, collector)
{%- endif %}
{%- endif %}
{%- if cookiecutter.broker != "none" %}
            broker = app.state.broker = await stack.enter_async_context(
                open_broker(settings.broker, on_state_change=breaker_changed)
            )
{%- if cookiecutter.tracing == "opentelemetry" %}
            outbox = app.state.outbox = Outbox(trace_headers=trace_headers)
{%- else %}
            outbox = app.state.outbox = Outbox()
{%- endif %}
            await stack.enter_async_context(Relay(db, outbox, broker, settings.broker).running())
{%- endif %}

            def breakers() -> list[CircuitBreaker]:
                return [
                    db.breaker,
                    *http_client.breakers.values(),
{%- if cookiecutter.redis == "yes" %}
                    *([redis.breaker] if redis is not None else []),
{%- endif %}
{%- if cookiecutter.broker != "none" %}
                    broker.breaker,
{%- endif %}
                ]
{% if cookiecutter.metrics == "prometheus" %}
            def sampled(lag: float) -> None:
                metrics.loop_lag.observe(lag)
                metrics.sample(db.pool, breakers(), stats.in_flight)

            loop_monitor = LoopLagMonitor(on_sample=sampled)
{%- else %}
            loop_monitor = LoopLagMonitor()
{%- endif %}
            app.state.health = Health(
                db=db,
                drain=drain,
                stats=stats,
                loop_monitor=loop_monitor,
                breakers=breakers,
{%- if cookiecutter.redis == "yes" %}
                extra_checks=[redis.health_checks] if redis is not None else [],
{%- endif %}
                max_in_flight=settings.limits.max_in_flight,
                service=settings.service_name,
                version=__version__,
{%- if cookiecutter.metrics == "prometheus" %}
                on_ready=metrics.readiness_checked,
{%- endif %}
            )
            await stack.enter_async_context(loop_monitor.running())
            stack.enter_context(drain.installed())
            # Last: everything built so far lives as long as the process and is frozen.
            await stack.enter_async_context(GarbageCollector().running())
            log.info("started", port=settings.port, environment=settings.environment.value)
            yield

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
{%- if cookiecutter.include_example_api == "yes" %}
    # The messaging outbox, when the lifespan opens one. Set here so that reading it on
    # every item request is a plain lookup: a missing attribute of `app.state` costs a
    # raised and caught AttributeError each time.
    app.state.outbox = None
{%- endif %}
{%- if cookiecutter.redis == "yes" %}
    app.state.rate_limiter = rate_limiter
{%- endif %}
    install_problem_handlers(app)
    document_problems(app)
    # Requests are matched against the routes in order: the probes (three plain routes,
    # cheap to rule out) and the API first, the OpenAPI and docs pages that FastAPI
    # registered at creation last.
    docs_routes = app.router.routes[:]
    app.router.routes.clear()
    add_routes(app, health.routes)
{%- if cookiecutter.include_example_api == "yes" and cookiecutter.auth == "jwt" %}
    # Any valid token reads items; creating, changing and deleting them needs a scope.
    add_routes(app, requiring(require("items:write"), items_router.routes))
{%- elif cookiecutter.include_example_api == "yes" %}
    add_routes(app, items_router.routes)
{%- endif %}
{%- if cookiecutter.metrics == "prometheus" %}
    app.state.metrics = metrics
    add_routes(app, metrics_routes)
{%- endif %}
    app.router.routes.extend(docs_routes)
    add_routes(app, api_docs.routes(title=app.title, openapi_url=app.openapi_url or ""))
{%- if cookiecutter.redis == "yes" %}
    if rate_limiter is not None:
        install_openapi(app, settings.redis.rate_limit.exempt_paths)
{%- if cookiecutter.include_example_api == "yes" %}
    if redis_on:
        # A retried POST /items creates one item: its answer is stored and replayed.
        make_idempotent(
            app.router.routes,
            "POST",
            "/items",
            settings.redis.idempotency,
            api_key_header=settings.redis.rate_limit.api_key_header,
        )
{%- endif %}
{%- endif %}
{%- if cookiecutter.auth == "jwt" %}
    document_security(app, settings.auth)
{%- endif %}

    # Probes and scrapes are exempt from shedding and deadlines, and not traced or logged.
{%- if cookiecutter.metrics == "prometheus" %}
    exempt = HEALTH_PATHS | {METRICS_PATH}
{%- else %}
    exempt = HEALTH_PATHS
{%- endif %}
{%- if cookiecutter.auth == "jwt" %}
    # Every other request shows a bearer token first; a probe or scrape path taken out
    # of auth.public_paths is authenticated (and so logged and traced) like the API.
    exempt &= settings.auth.public_paths
{%- endif %}
    app.add_middleware(
        ServiceMiddleware,
        exempt_paths=exempt,
        log_exempt=settings.log.health_requests,
        access_log=access_log,
        stats=stats,
        deadlines=deadlines,
        timeout=settings.limits.request_timeout,
        max_body_bytes=settings.limits.max_body_bytes,
{%- if cookiecutter.metrics == "prometheus" %}
        on_shed=metrics.shed.inc,
{%- endif %}
{%- if cookiecutter.auth == "jwt" and cookiecutter.redis == "yes" %}
        # Authentication first: the rate limiter keys on the caller it names.
        admission=[authenticator, *([rate_limiter] if rate_limiter is not None else [])],
{%- elif cookiecutter.auth == "jwt" %}
        admission=[authenticator],
{%- elif cookiecutter.redis == "yes" %}
        admission=[rate_limiter] if rate_limiter is not None else [],
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
{%- if cookiecutter.broker != "none" %}


def create_worker(settings: Settings) -> Starlette:
    """Build the worker: the consumers, and probes{% if cookiecutter.metrics == "prometheus" %} and metrics{% endif %} on their own port."""
    from starlette.applications import Starlette  # noqa: PLC0415 - the API process never needs it

    logs = setup_logging(settings)
{%- if cookiecutter.tracing == "opentelemetry" %}
    tracer_provider = configure_tracing(
        service=settings.service_name, version=__version__, environment=settings.environment.value
    )
{%- endif %}
{%- if cookiecutter.metrics == "prometheus" %}
    metrics = ConsumerMetrics()
{%- endif %}
    state = WorkerState()

    def breaker_changed(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        log.warning("circuit_state_changed", breaker=breaker.name, old=old.value, new=new.value)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if settings.migrate_on_startup:
            log.info("migrations_applied", versions=await run_migrations(settings.dsn))
        async with AsyncExitStack() as stack:
            stack.callback(logs.flush)
            stack.callback(log.info, "worker_stopped")
{%- if cookiecutter.tracing == "opentelemetry" %}
            if tracer_provider is not None:
                stack.callback(tracer_provider.shutdown)
{%- endif %}
            db = state.db = await stack.enter_async_context(
                open_database(settings, deadlines=Deadlines(), on_state_change=breaker_changed)
            )
            broker = state.broker = await stack.enter_async_context(
                open_broker(settings.broker, on_state_change=breaker_changed)
            )
            consumer = Consumer(
                db,
{%- if cookiecutter.include_example_api == "yes" %}
                ITEM_EVENT_HANDLERS,
{%- else %}
                {},  # add handlers by message type here
{%- endif %}
                name=settings.service_name,
{%- if cookiecutter.tracing == "opentelemetry" %}
                continue_trace=continue_trace,
{%- endif %}
{%- if cookiecutter.metrics == "prometheus" %}
                observer=metrics,
{%- endif %}
            )
{%- if cookiecutter.metrics == "prometheus" %}
            broker.subscribe(consumer, metrics)
{%- else %}
            broker.subscribe(consumer, None)
{%- endif %}
            await broker.start()
            state.consuming = True
            log.info("worker_started", port=settings.broker.worker_port)
            yield
            state.consuming = False
            log.info("worker_stopping")

{%- if cookiecutter.metrics == "prometheus" %}

    async def backlog() -> int:
        return await state.broker.backlog() if state.broker is not None else 0

    return Starlette(routes=[*probe_routes(state), *metrics.routes(backlog)], lifespan=lifespan)
{%- else %}

    return Starlette(routes=probe_routes(state), lifespan=lifespan)
{%- endif %}


def worker_from_env() -> Starlette:
    """Zero-argument factory for the worker's uvicorn (`python -m ... worker`)."""
    return create_worker(load_settings())
{%- endif %}
