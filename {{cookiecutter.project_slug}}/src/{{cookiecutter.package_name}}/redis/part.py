"""The Redis part: shared rate limits, idempotency keys, locks and periodic jobs.

Without `REDIS__URL` every one of them is off (logged at start-up).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.redis.idempotent_routes import make_idempotent
from {{ cookiecutter.package_name }}.redis.jobs import heartbeat, run_periodic
from {{ cookiecutter.package_name }}.redis.locks import Locks
from {{ cookiecutter.package_name }}.redis.rate_limit import RateLimiter, install_openapi
from {{ cookiecutter.package_name }}.redis.store import open_redis
from {{ cookiecutter.package_name }}.service.parts import Reading

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

    from starlette.routing import BaseRoute

    from {{ cookiecutter.package_name }}.redis.settings import RedisSettings
    from {{ cookiecutter.package_name }}.service.parts import Parts


def add_redis(parts: Parts, settings: RedisSettings, *, service: str) -> None:
    """Rate limit every request, make the declared operations idempotent, run the jobs."""
    configured = settings.url is not None
    limiter = None
    if configured and settings.rate_limit.enabled:
        limiter = RateLimiter(settings.rate_limit)
        parts.admission.append(limiter)
        parts.openapi.append(lambda app: install_openapi(app, settings.rate_limit.exempt_paths))
        failed_open = limiter
        parts.readings.append(
            Reading(
                "rate_limit_failed_open",
                "Requests admitted without a rate limit decision (Redis unavailable).",
                "counter",
                lambda: failed_open.failed_open,
            )
        )
    parts.app.state.rate_limiter = limiter

    def idempotent(routes: list[BaseRoute]) -> list[BaseRoute]:
        # A retried POST /items creates one item: its answer is stored and replayed.
        for method, path in parts.idempotent_operations:
            make_idempotent(
                routes,
                method,
                path,
                settings.idempotency,
                api_key_header=settings.rate_limit.api_key_header,
            )
        return routes

    if configured:
        parts.route_changes.append(idempotent)

    async def open_store(stack: AsyncExitStack) -> None:
        span = parts.client_span
        redis = parts.app.state.redis = await stack.enter_async_context(
            open_redis(
                settings,
                service=service,
                on_state_change=parts.breaker_changed,
                command_span=partial(span, system="redis") if span is not None else None,
            )
        )
        if redis is None:
            return
        parts.breaker_sources.append(lambda: (redis.breaker,))
        parts.health_checks.append(redis.health_checks)
        parts.readings.extend(
            [
                Reading(
                    "redis_commands",
                    "Redis commands and scripts sent.",
                    "counter",
                    lambda: redis.commands,
                ),
                Reading(
                    "redis_errors",
                    "Redis commands that failed to reach Redis.",
                    "counter",
                    lambda: redis.errors,
                ),
                Reading(
                    "redis_pool_in_use",
                    "Redis connections checked out.",
                    "gauge",
                    lambda: redis.pool_in_use,
                ),
            ]
        )
        locks = parts.app.state.locks = Locks(redis, ttl=settings.jobs.lock_seconds)
        jobs = {"heartbeat": (settings.jobs.heartbeat_seconds, heartbeat(redis))}
        await stack.enter_async_context(run_periodic(redis, locks, jobs))

    parts.resources.append(open_store)
