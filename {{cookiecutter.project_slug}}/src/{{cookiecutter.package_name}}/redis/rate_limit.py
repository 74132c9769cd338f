"""Distributed rate limits: a GCRA bucket per caller and policy, kept in Redis.

GCRA (the generic cell rate algorithm) is a token bucket stored as one number per
key, the "theoretical arrival time": each admitted request pushes it one emission
interval (window / limit) further; a request is refused while it lies more than
`burst` intervals ahead. One Lua script reads, decides and writes atomically in one
round trip, on Redis's clock, so every replica shares one bucket per caller.

The limiter is an `AdmissionStep` of the service middleware: it runs before routing,
so route overrides are matched against the path with Starlette's own path patterns.
Every limited response carries the IETF ``RateLimit-Policy`` and ``RateLimit``
fields (draft-ietf-httpapi-ratelimit-headers); a refusal is 429 with ``Retry-After``.
Without Redis (down, or its breaker open) requests pass (`fail_open`, the default,
counted in `failed_open` and logged once per outage) or get 503.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import structlog
from starlette.routing import compile_path

from {{ cookiecutter.package_name }}.observability.logs.context import user_id_var
from {{ cookiecutter.package_name }}.service.middleware import Rejection

if TYPE_CHECKING:
    import re

    from fastapi import FastAPI
    from starlette.types import Scope

    from {{ cookiecutter.package_name }}.redis.settings import RateLimitSettings, RatePolicy
    from {{ cookiecutter.package_name }}.redis.store import RedisStore

log = structlog.get_logger(__name__)

# KEYS[1] bucket; ARGV: emission interval (ms), burst. Returns {allowed, remaining,
# ms until the bucket is full again, ms until the next request would be allowed}.
GCRA_SCRIPT: Final = """
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now))
return {1, math.floor((tolerance - (new_tat - now)) / interval), new_tat - now, 0}
"""

_PROBLEM_DETAIL: Final = "rate limit exceeded"


@dataclass(frozen=True, slots=True)
class Policy:
    """One named quota, with the header value that announces it."""

    name: str
    interval_ms: float
    burst: int
    policy_header: bytes

    @classmethod
    def of(cls, name: str, policy: RatePolicy) -> Policy:
        """Build from settings: `limit` per `window_seconds`, `burst` (default `limit`) at once."""
        burst = policy.burst or policy.limit
        window = math.ceil(policy.window_seconds)
        header = f'"{name}";q={policy.limit};w={window}'.encode("ascii")
        return cls(name, policy.window_seconds * 1000 / policy.limit, burst, header)


def _route_policies(
    settings: RateLimitSettings,
) -> list[tuple[str | None, re.Pattern[str], Policy]]:
    rules = []
    for index, (rule, policy) in enumerate(settings.routes.items()):
        method, _, template = rule.rpartition(" ")
        name = f"route{index}"
        rules.append((method.upper() or None, compile_path(template)[0], Policy.of(name, policy)))
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
        self._default = Policy.of("default", settings.default)
        self._routes = _route_policies(settings)
        self._exempt = settings.exempt_paths
        self._api_key_header = (
            settings.api_key_header.lower().encode("latin-1") if settings.api_key_header else None
        )
        self._fail_open = settings.fail_open
        self.failed_open = 0
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
        """Take one token from the caller's bucket, or refuse with 429."""
        if scope["path"] in self._exempt:
            return None
        store: RedisStore | None = scope["app"].state.redis
        if store is None:
            return self._unavailable()
        policy = self.policy_for(scope["method"], scope["path"])
        key = store.key("rl", policy.name, caller_key(scope, self._api_key_header))
        try:
            allowed, remaining, reset_ms, retry_ms = await store.call(
                "EVALSHA",
                store.script(GCRA_SCRIPT),
                keys=[key],
                args=[policy.interval_ms, policy.burst],
            )
        except Exception as exc:  # noqa: BLE001 - an open circuit or any redis-py error
            return self._unavailable(exc)
        if self._failing:
            self._failing = False
            log.info("rate_limit_restored")
        reset = math.ceil(reset_ms / 1000)
        response_headers.append((b"ratelimit-policy", policy.policy_header))
        response_headers.append(
            (b"ratelimit", b'"%s";r=%d;t=%d' % (policy.name.encode(), remaining, reset))
        )
        if allowed:
            return None
        retry_after = str(max(1, math.ceil(retry_ms / 1000)))
        return Rejection(429, _PROBLEM_DETAIL, {"Retry-After": retry_after})

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
