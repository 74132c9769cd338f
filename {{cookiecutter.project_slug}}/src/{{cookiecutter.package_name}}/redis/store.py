"""Redis: one pooled redis-py asyncio client per process, behind its own circuit breaker.

Every command the service sends goes through `RedisStore.call`, which admits it through
the breaker, counts it (commands, errors: read by the metrics collector, no per-call
locking), and wraps it in a client span when tracing exports. Connection failures and
timeouts trip the breaker; a Redis error reply (a script error, a wrong type) does not.

Nothing here fails readiness: the features built on Redis (rate limits, idempotency
keys, jobs) each say what they do without it. `/health` reports the latency of a PING
and warns while the breaker is open.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from {{ cookiecutter.package_name }}.redis.scripts import ScriptClient
from {{ cookiecutter.package_name }}.resilience.breaker import BreakerConfig, CircuitBreaker, CircuitState

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
    from contextlib import AbstractContextManager

    from {{ cookiecutter.package_name }}.redis.scripts import Arg, Script
    from {{ cookiecutter.package_name }}.redis.settings import RedisSettings
    from {{ cookiecutter.package_name }}.resilience.breaker import StateChangeCallback

P = ParamSpec("P")
T = TypeVar("T")

log = structlog.get_logger(__name__)

_HEALTH_TIMEOUT = 1.0


def is_redis_failure(exc: BaseException) -> bool:
    """Tell an unreachable or slow Redis (trips the breaker) from an error reply (does not)."""
    return isinstance(
        exc,
        redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | TimeoutError | OSError,
    )


class RedisStore:
    """The service's Redis client: breaker, counters and spans around every command."""

    def __init__(
        self,
        client: aioredis.Redis,
        breaker: CircuitBreaker,
        *,
        scripts: ScriptClient,
        key_prefix: str,
        command_span: Callable[[str], AbstractContextManager[object]] | None = None,
    ) -> None:
        """Take ownership of `client` and `scripts`; `open_redis` closes them."""
        self.client = client
        self.scripts = scripts
        self.breaker = breaker
        self.key_prefix = key_prefix
        self._span = command_span
        self.commands = 0
        self.errors = 0

    def key(self, *parts: str) -> str:
        """A key under this service's prefix: ``key("rl", "default", caller)``."""
        return self.key_prefix + ":".join(parts)

    async def run(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:  # noqa: ANN401
        """Run a request-path script on the lean connection, under the breaker.

        `call`, written out: one coroutine and one argument tuple less per call.
        """
        if self._span is not None:
            return await self.call("EVALSHA", self.scripts.evalsha, script, keys, args)
        breaker = self.breaker
        admitted = breaker.admit()
        self.commands += 1
        try:
            result = await self.scripts.evalsha(script, keys, args)
        except BaseException as exc:
            if is_redis_failure(exc):
                self.errors += 1
            breaker.settle(admitted, exc)
            raise
        breaker.settle(admitted, None)
        return result

    def run_unanswered(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> bool:
        """Send a request-path script whose outcome nobody needs (a write after the answer).

        Redis sends no reply (`ScriptClient.evalsha_unanswered`): nothing to read, match
        or settle, so it is outside the breaker (the call before it was admitted); it
        counts as a command, and its failures are not seen (the next call's are). False,
        sending nothing, when the lean connection cannot (not open, ``CLIENT REPLY``
        refused) or spans are exported: then `await run(...)`.
        """
        if self._span is not None or not self.scripts.evalsha_unanswered(script, keys, args):
            return False
        self.commands += 1
        return True

    @property
    def pool_in_use(self) -> int:
        """Connections checked out of the pool right now."""
        # redis-py has no public counter for this; the set is what its pool checks out.
        return len(self.client.connection_pool._in_use_connections)  # noqa: SLF001

    async def call(
        self, name: str, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await ``fn(*args, **kwargs)`` (one command or script) under the breaker.

        Raises `CircuitOpenError` without touching the network while the breaker is
        open, and whatever redis-py raises otherwise.
        """
        breaker = self.breaker
        admitted = breaker.admit()
        self.commands += 1
        span = self._span
        try:
            if span is None:
                result = await fn(*args, **kwargs)
            else:
                with span(name):
                    result = await fn(*args, **kwargs)
        except BaseException as exc:
            if is_redis_failure(exc):
                self.errors += 1
            breaker.settle(admitted, exc)
            raise
        breaker.settle(admitted, None)
        return result

    async def health_checks(self) -> dict[str, list[dict[str, Any]]]:
        """The `/health` entry: PING latency; `warn` when it fails or the breaker is open."""
        now = datetime.now(UTC).isoformat()
        entry: dict[str, Any] = {"componentType": "datastore", "time": now}
        if self.breaker.state is CircuitState.OPEN:
            entry |= {"status": "warn", "output": "circuit open"}
            return {"redis:responseTime": [entry]}
        started = time.perf_counter()
        try:
            async with asyncio.timeout(_HEALTH_TIMEOUT):
                await self.call("PING", self.client.ping)
        except Exception as exc:  # noqa: BLE001 - any failure is reported, none is fatal
            entry |= {"status": "warn", "output": f"{type(exc).__name__}: {exc}"}
        else:
            entry["status"] = "pass"
        entry |= {"observedValue": round((time.perf_counter() - started) * 1000, 3)}
        entry["observedUnit"] = "ms"
        return {"redis:responseTime": [entry]}


def build_client(settings: RedisSettings, *, client_name: str) -> aioredis.Redis:
    """A client on a bounded pool: callers wait `pool_timeout` for a connection at most."""
    if settings.url is None:
        msg = "no Redis URL configured"
        raise RuntimeError(msg)
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url.get_secret_value(),
        max_connections=settings.max_connections,
        timeout=settings.pool_timeout,
        socket_connect_timeout=settings.connect_timeout,
        socket_timeout=settings.command_timeout,
        health_check_interval=settings.health_check_interval,
        client_name=client_name,
        # One quick retry covers a pooled connection that the server closed while idle;
        # more would only hold callers longer while Redis is down (the breaker's job).
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
    )
    return aioredis.Redis(connection_pool=pool)


@asynccontextmanager
async def open_redis(
    settings: RedisSettings,
    *,
    service: str,
    on_state_change: StateChangeCallback | None = None,
    command_span: Callable[[str], AbstractContextManager[object]] | None = None,
) -> AsyncIterator[RedisStore | None]:
    """Open the client (None without a URL: the Redis features are then off), close it on exit.

    Start-up does not wait for Redis: an unreachable server is logged, and the features
    built on it behave as they do during an outage until it answers.
    """
    if settings.url is None:
        log.warning("redis_not_configured", effect="no rate limits, idempotency keys or jobs")
        yield None
        return
    client = build_client(settings, client_name=service)
    breaker = CircuitBreaker(
        "redis",
        BreakerConfig.from_settings(settings.breaker),
        is_failure=is_redis_failure,
        on_state_change=on_state_change,
    )
    scripts = ScriptClient(
        settings.url.get_secret_value(),
        connect_timeout=settings.connect_timeout,
        command_timeout=settings.command_timeout,
        client_name=service,
    )
    store = RedisStore(
        client,
        breaker,
        scripts=scripts,
        key_prefix=settings.key_prefix,
        command_span=command_span,
    )
    try:
        await store.call("PING", client.ping)
    except Exception as exc:  # noqa: BLE001 - not fatal: see the docstring
        log.warning("redis_unavailable_at_startup", error=f"{type(exc).__name__}: {exc}")
    try:
        yield store
    finally:
        await scripts.aclose()
        await client.aclose()
