"""Redis settings: the connection, rate limits, idempotency keys and periodic jobs.

The `redis` group of `Settings` (`REDIS__...` under the prefix); see `settings.py`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr, field_validator

from {{ cookiecutter.package_name }}.resilience.config import BreakerSettings


class RatePolicy(BaseModel):
    """Requests a caller may make: `limit` per `window_seconds`, up to `burst` at once."""

    limit: int = Field(100, ge=1)
    window_seconds: float = Field(60.0, gt=0)
    burst: int | None = Field(None, ge=1)  # None: the limit itself


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
