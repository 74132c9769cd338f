"""Redis settings: the connection, rate limits, idempotency keys and periodic jobs.

The `redis` group of `Settings` (`REDIS__...` under the prefix); see `settings.py`.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from {{ cookiecutter.package_name }}.resilience.config import BreakerSettings


class RatePolicy(BaseModel):
    """At most `limit` requests in any `window_seconds`, of which up to `burst` at once.

    Whole seconds: the ``RateLimit-Policy`` field announces the window as an integer.
    """

    limit: int = Field(100, ge=1)
    window_seconds: int = Field(60, ge=1)
    burst: int | None = Field(None, ge=1)  # None: half the limit, rounded up

    @model_validator(mode="after")
    def _burst_within_limit(self) -> Self:
        if self.burst is not None and self.burst > self.limit:
            msg = "burst must not exceed limit: the burst is part of the limit"
            raise ValueError(msg)
        return self


class RateLimitSettings(BaseModel):
    """Distributed rate limits (GCRA in Redis), per caller and policy."""

    enabled: bool = True
    default: RatePolicy = RatePolicy()
    # "METHOD /template" or "/template" (any method) -> policy; the first match wins.
    routes: dict[str, RatePolicy] = {}
    exempt_paths: frozenset[str] = frozenset(
        {"/health", "/health/live", "/health/ready", "/metrics"}
    )
    api_key_header: str | None = None
    fail_open: bool = True
    # A replica spends tokens it took from Redis within this time (at most a tenth of
    # the window); the refill rate leaves room for it, so the promise holds exactly.
    lease_seconds: float = Field(1.0, gt=0, le=60)
    max_lease: int = Field(64, ge=1)  # tokens per lease at most (and a quarter of the burst)


class IdempotencySettings(BaseModel):
    """Stored answers to unsafe requests that carry an `Idempotency-Key`."""

    ttl_seconds: float = Field(86400.0, gt=0)
    in_flight_seconds: float = Field(60.0, gt=0)
    max_body_bytes: int = Field(1_048_576, ge=1)


class JobSettings(BaseModel):
    """Periodic jobs, each run on one replica at a time under a Redis lock."""

    heartbeat_seconds: float = Field(30.0, ge=0)  # 0: the example job does not run
    lock_seconds: float = Field(10.0, gt=0)


class RedisSettings(BaseModel):
    """Redis: the connection, and the features that share state through it."""

    url: SecretStr | None = None  # None: no rate limits, idempotency keys or jobs
    key_prefix: str = Field("{{ cookiecutter.project_slug }}:", min_length=1)
    max_connections: int = Field(50, ge=1)
    pool_timeout: float = Field(1.0, gt=0)
    connect_timeout: float = Field(1.0, gt=0)
    command_timeout: float = Field(0.5, gt=0)
    health_check_interval: int = Field(30, ge=0)
    breaker: BreakerSettings = BreakerSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    jobs: JobSettings = JobSettings()

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            msg = "must be a redis://, rediss:// or unix:// URL"
            raise ValueError(msg)
        return value
