"""Distributed rate limits: one promise per policy, kept across replicas through Redis.

The promise, for a policy of `limit` q per `window_seconds` w: **over any w seconds, one
caller gets at most q requests, across all replicas**. That is what the IETF
``RateLimit-Policy`` field announces (``q=..;w=..``, draft-ietf-httpapi-ratelimit-headers),
and it holds exactly while Redis answers (with `fail_open`, requests pass during an
outage; the promise is then suspended, counted in `failed_open`).

How: a GCRA bucket (a token bucket stored as one number, the "theoretical arrival time")
per caller and policy, in Redis, on Redis's clock. `burst` b tokens are there at once;
they come back one per interval T = (w + L) / (q - b + 1), so any w-second span holds at
most b + (q - b) = q grants, including those of leases taken up to L seconds earlier.

Leases (Envoy's rate-limit-quota model): a replica takes tokens from the bucket in
batches and spends them in process, so most requests cost no round trip. A lease is
spent within L = min(`lease_seconds`, w / 10) of being taken (counted from before the
request to Redis was sent), and unspent tokens are dropped, never returned, which is
why the bound holds with leases. A caller's first lease is one token, and it doubles
while leases run out before their time, up to `max_lease` and a quarter of the burst; a
small policy therefore takes one token per request, as an exact limiter would. Checks
of one caller that find the lease empty wait for one shared round trip (coalesced), and
a refusal is remembered until the bucket's next token is due, on Redis's word.

The limiter is an `AdmissionStep` of the service middleware: it runs before routing,
so route overrides are matched against the path with Starlette's own path patterns.
Every limited response carries ``RateLimit-Policy`` and ``RateLimit``; a refusal is 429
with ``Retry-After``. Without Redis (down, or its breaker open) requests pass
(`fail_open`, the default, counted in `failed_open` and logged once per outage) or get
503.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import structlog
from starlette.routing import compile_path

from {{ cookiecutter.package_name }}.observability.logs.context import user_id_var
from {{ cookiecutter.package_name }}.redis.scripts import Script
from {{ cookiecutter.package_name }}.service.middleware import Rejection

if TYPE_CHECKING:
    import re

    from fastapi import FastAPI
    from starlette.types import Scope

    from {{ cookiecutter.package_name }}.redis.settings import RateLimitSettings, RatePolicy
    from {{ cookiecutter.package_name }}.redis.store import RedisStore

log = structlog.get_logger(__name__)

# KEYS[1] bucket; ARGV: interval T (µs), burst, tokens wanted. Takes as many as fit, up
# to the number wanted. Returns {tokens granted, tokens left in the bucket, µs until the
# bucket is full again, µs until the next token (when none was granted)}. Integer µs
# throughout: exact in Lua's doubles, and passed to SET with 17 digits.
LEASE_SCRIPT: Final = Script("""
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = clock[1] * 1000000 + clock[2]
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local room = math.floor((now + burst * interval - tat) / interval)
local granted = math.min(tonumber(ARGV[3]), room)
if granted < 1 then
  return {0, 0, tat - now, tat + interval - burst * interval - now}
end
tat = tat + granted * interval
redis.call('SET', KEYS[1], tat, 'PX', math.ceil((tat - now) / 1000))
return {granted, room - granted, tat - now, 0}
""")

_PROBLEM_DETAIL: Final = "rate limit exceeded"
_SWEEP_AT: Final = 1024  # leases kept before expired ones are swept out


@dataclass(frozen=True, slots=True)
class Policy:
    """One named quota, its bucket's parameters, and the header value that announces it."""

    name: str
    interval_us: int
    burst: int
    lease_seconds: float
    max_lease: int
    policy_header: bytes
    field: bytes  # the RateLimit field, with %d for r and t

    @classmethod
    def of(cls, name: str, policy: RatePolicy, *, lease_seconds: float, max_lease: int) -> Policy:
        """Build from settings: see the module docstring for T, b and L."""
        limit, window = policy.limit, policy.window_seconds
        burst = policy.burst or math.ceil(limit / 2)
        lease = min(lease_seconds, window / 10)
        # Rounded up: a longer interval only makes the promise safer.
        interval = math.ceil((window + lease) * 1_000_000 / (limit - burst + 1))
        header = f'"{name}";q={limit};w={window}'.encode("ascii")
        field = f'"{name}";r=%d;t=%d'.encode("ascii")
        cap = max(1, min(max_lease, burst // 4))
        return cls(name, interval, burst, lease, cap, header, field)


class Lease:
    """What this replica holds of one caller's bucket."""

    __slots__ = ("expires", "refused_until", "remaining", "reset_at", "size", "tokens", "waiters")

    def __init__(self) -> None:
        """An empty lease; the first refill asks for one token."""
        self.tokens = 0
        self.expires = 0.0
        self.remaining = 0
        self.reset_at = 0.0
        self.refused_until = 0.0
        self.size = 1
        # Set while a round trip for this caller is in flight: the checks waiting for it.
        self.waiters: list[asyncio.Future[None]] | None = None


def _route_policies(
    settings: RateLimitSettings,
) -> list[tuple[str | None, re.Pattern[str], Policy]]:
    rules = []
    for index, (rule, policy) in enumerate(settings.routes.items()):
        method, _, template = rule.rpartition(" ")
        name = f"route{index}"
        built = Policy.of(
            name, policy, lease_seconds=settings.lease_seconds, max_lease=settings.max_lease
        )
        rules.append((method.upper() or None, compile_path(template)[0], built))
    return rules


def caller_key(scope: Scope, api_key_header: bytes | None) -> str:
    """Whose bucket (or idempotency key): the principal, an API key (hashed), else the address."""
    user = user_id_var.get()
    if user is not None:
        return "user:" + user
    if api_key_header is not None:
        for name, value in scope["headers"]:
            if name == api_key_header:
                # Hashed: a key name in Redis is readable by whoever can read Redis.
                return "key:" + hashlib.sha256(value).hexdigest()[:32]
    client = scope.get("client")  # already the forwarded address behind trusted proxies
    return "addr:" + (client[0] if client else "unknown")


class RateLimiter:
    """The rate limit `AdmissionStep`; the store is read from ``app.state.redis``."""

    def __init__(self, settings: RateLimitSettings) -> None:
        """Policies and exemptions come from settings; nothing touches Redis yet."""
        self._default = Policy.of(
            "default",
            settings.default,
            lease_seconds=settings.lease_seconds,
            max_lease=settings.max_lease,
        )
        self._routes = _route_policies(settings)
        self._exempt = settings.exempt_paths
        self._api_key_header = (
            settings.api_key_header.lower().encode("latin-1") if settings.api_key_header else None
        )
        self._fail_open = settings.fail_open
        self._leases: dict[str, Lease] = {}
        self._sweep_at = _SWEEP_AT
        self.failed_open = 0
        self.round_trips = 0
        self._failing = False

    def policy_for(self, method: str, path: str) -> Policy:
        """The first route override that matches, else the default policy."""
        for rule_method, pattern, policy in self._routes:
            if (rule_method is None or rule_method == method) and pattern.match(path):
                return policy
        return self._default

    async def admit(
        self, scope: Scope, response_headers: list[tuple[bytes, bytes]]
    ) -> Rejection | None:
        """Spend one token of the caller's lease, taking a new lease when it is empty."""
        path = scope["path"]
        if path in self._exempt:
            return None
        policy = self.policy_for(scope["method"], path) if self._routes else self._default
        key = policy.name + ":" + caller_key(scope, self._api_key_header)
        lease = self._leases.get(key)
        now = time.monotonic()
        if lease is None or lease.tokens <= 0 or lease.expires <= now:
            return await self._take(scope, key, policy, response_headers)
        # The common case, written out: a token of a lease this replica holds.
        lease.tokens -= 1
        response_headers.append((b"ratelimit-policy", policy.policy_header))
        remaining = lease.remaining + lease.tokens
        field = policy.field % (remaining, max(0, math.ceil(lease.reset_at - now)))
        response_headers.append((b"ratelimit", field))
        return None

    async def _take(
        self, scope: Scope, key: str, policy: Policy, response_headers: list[tuple[bytes, bytes]]
    ) -> Rejection | None:
        """Renew the caller's lease (or wait for the renewal in flight), then spend from it."""
        store: RedisStore | None = scope["app"].state.redis
        if store is None:
            return self._unavailable()
        while True:
            now = time.monotonic()
            lease = self._leases.get(key)
            if lease is None:
                if len(self._leases) >= self._sweep_at:
                    self._sweep(now)
                lease = self._leases[key] = Lease()
            if lease.tokens > 0 and lease.expires > now:
                lease.tokens -= 1
                remaining, reset = lease.remaining + lease.tokens, lease.reset_at - now
                response_headers.append((b"ratelimit-policy", policy.policy_header))
                field = policy.field % (remaining, max(0, math.ceil(reset)))
                response_headers.append((b"ratelimit", field))
                return None
            if lease.refused_until > now:
                return self._refuse(policy, lease, now, response_headers)
            if lease.waiters is not None:  # coalesced: one round trip per caller at a time
                waiter = asyncio.get_running_loop().create_future()
                lease.waiters.append(waiter)
                await waiter
                continue
            try:
                await self._refill(store, store.key("rl", key), policy, lease, now)
            except Exception as exc:  # noqa: BLE001 - an open circuit or any Redis error
                return self._unavailable(exc)

    async def _refill(
        self, store: RedisStore, bucket: str, policy: Policy, lease: Lease, now: float
    ) -> None:
        """One round trip: a new lease; the waiters are woken however it ends.

        Cancelled too: the connection drops the reply, and the tokens it took are lost,
        never spent twice.
        """
        if lease.expires > 0 and lease.tokens <= 0 and now < lease.expires:
            lease.size = min(lease.size * 2, policy.max_lease)  # ran out early: ask more
        elif lease.tokens > 0:
            lease.size = max(1, lease.size // 2)  # tokens left at expiry: ask fewer
        lease.waiters = []
        self.round_trips += 1
        try:
            granted, remaining, reset_us, retry_us = await store.run(
                LEASE_SCRIPT, (bucket,), (policy.interval_us, policy.burst, lease.size)
            )
        finally:
            waiters, lease.waiters = lease.waiters, None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        if self._failing:
            self._failing = False
            log.info("rate_limit_restored")
        # From `now`, read before the request was sent: the lease ends no later than L
        # after Redis granted it.
        lease.tokens = granted
        lease.expires = now + policy.lease_seconds if granted else now
        lease.remaining = remaining
        lease.reset_at = now + reset_us / 1_000_000
        # Tokens are taken only, never given back: no token comes sooner than Redis said.
        lease.refused_until = now + retry_us / 1_000_000 if not granted else 0.0

    def _refuse(
        self, policy: Policy, lease: Lease, now: float, response_headers: list[tuple[bytes, bytes]]
    ) -> Rejection:
        reset = max(0, math.ceil(lease.reset_at - now))
        response_headers.append((b"ratelimit-policy", policy.policy_header))
        response_headers.append((b"ratelimit", policy.field % (0, reset)))
        retry_after = str(max(1, math.ceil(lease.refused_until - now)))
        return Rejection(429, _PROBLEM_DETAIL, {"Retry-After": retry_after})

    def _sweep(self, now: float) -> None:
        """Forget callers whose lease and refusal are over (bounds memory to active callers)."""
        for key, lease in list(self._leases.items()):
            if lease.expires <= now and lease.refused_until <= now and lease.waiters is None:
                del self._leases[key]
        self._sweep_at = max(_SWEEP_AT, 2 * len(self._leases))

    def _unavailable(self, exc: BaseException | None = None) -> Rejection | None:
        if not self._failing:
            self._failing = True
            log.warning(
                "rate_limit_unavailable",
                fail_open=self._fail_open,
                error=f"{type(exc).__name__}: {exc}" if exc else "redis not configured",
            )
        if self._fail_open:
            self.failed_open += 1
            return None
        return Rejection(503, "rate limiting is unavailable", {"Retry-After": "1"})


def document_rate_limits(openapi: dict[str, Any], exempt: frozenset[str]) -> dict[str, Any]:
    """Add the 429 answer and the rate limit header fields to every limited operation."""
    headers = {
        "RateLimit-Policy": {
            "description": "The quota policy (draft-ietf-httpapi-ratelimit-headers)",
            "schema": {"type": "string"},
        },
        "RateLimit": {
            "description": "Remaining quota and seconds until it is restored",
            "schema": {"type": "string"},
        },
    }
    too_many = {
        "description": "Too many requests: wait for `Retry-After` seconds",
        "headers": headers
        | {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
        "content": {"application/problem+json": {}},
    }
    for path, operations in openapi.get("paths", {}).items():
        if path in exempt:
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for response in responses.values():
                response.setdefault("headers", {}).update(headers)
            responses.setdefault("429", too_many)
    return openapi


def install_openapi(app: FastAPI, exempt: frozenset[str]) -> None:
    """Make `app.openapi()` describe the rate limits (FastAPI's way to extend the schema)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_rate_limits(build(), exempt)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
