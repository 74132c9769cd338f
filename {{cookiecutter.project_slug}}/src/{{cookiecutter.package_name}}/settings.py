"""Service settings, read once from the environment.

Every field maps to an environment variable: `ENV_PREFIX`, then the field name, with
`__` between a group and its field (`DB__POOL_MAX_SIZE` under the prefix). The README's
configuration table lists them all with their defaults.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "{{ cookiecutter.__env_prefix }}"
NESTED_DELIMITER = "__"


class Environment(StrEnum):
    """Where the service runs; only `development` may start without a database URL."""

    PRODUCTION = "production"
    STAGING = "staging"
    DEVELOPMENT = "development"
    TEST = "test"


class BreakerSettings(BaseModel):
    """Circuit breaker thresholds (resilience4j semantics, shorter waits for a web service)."""

    failure_rate_threshold: float = Field(50.0, gt=0, le=100)
    sliding_window_size: int = Field(20, ge=1)
    minimum_calls: int = Field(10, ge=1)
    consecutive_failures: int | None = Field(5, ge=1)
    slow_call_seconds: float | None = Field(None, gt=0)
    wait_in_open_seconds: float = Field(5.0, gt=0)
    half_open_calls: int = Field(1, ge=1)
    max_wait_in_half_open_seconds: float = Field(10.0, gt=0)


class DatabaseSettings(BaseModel):
    """asyncpg pool sizing, timeouts and PgBouncer compatibility."""

    pool_min_size: int = Field(2, ge=0)
    pool_max_size: int = Field(10, ge=1)
    max_inactive_connection_lifetime: float = Field(300.0, ge=0)
    acquire_timeout: float = Field(2.0, gt=0)
    command_timeout: float = Field(10.0, gt=0)
    statement_timeout_ms: int = Field(5000, ge=0)
    statement_cache_size: int = Field(1024, ge=0)
    pgbouncer: bool = False
    close_timeout: float = Field(10.0, gt=0)
    breaker: BreakerSettings = BreakerSettings()

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Self:
        if self.pool_min_size > self.pool_max_size:
            msg = (
                f"pool_min_size ({self.pool_min_size}) exceeds pool_max_size ({self.pool_max_size})"
            )
            raise ValueError(msg)
        return self


class HttpClientSettings(BaseModel):
    """Outbound HTTP client timeouts, pool and breaker (one breaker per downstream host)."""

    connect_timeout: float = Field(2.0, gt=0)
    read_timeout: float = Field(5.0, gt=0)
    total_timeout: float = Field(10.0, gt=0)
    max_connections: int = Field(100, ge=1)
    breaker: BreakerSettings = BreakerSettings()


class LimitSettings(BaseModel):
    """Load shedding, the per-request deadline and the request body limit."""

    max_in_flight: int = Field(256, ge=1)
    request_timeout: float = Field(10.0, gt=0)
    max_body_bytes: int = Field(1_048_576, ge=1)


class ShutdownSettings(BaseModel):
    """Graceful shutdown: keep serving while readiness fails, then drain in-flight work."""

    drain_seconds: float = Field(5.0, ge=0)
    timeout_seconds: float = Field(20.0, gt=0)


class LogSettings(BaseModel):
    """Structured logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"
    health_requests: bool = False
    slow_callback_ms: float = Field(100.0, gt=0)

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value
{%- if cookiecutter.redis == "yes" %}


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
{%- endif %}
{%- if cookiecutter.broker != "none" %}


class BrokerSettings(BaseModel):
    """The message broker: outbox relay, worker concurrency, retries and dead letters."""
{% if cookiecutter.broker == "rabbitmq" %}
    url: SecretStr = SecretStr("amqp://guest:guest@localhost:5672/")
{%- else %}
    url: SecretStr = SecretStr("nats://localhost:4222")
{%- endif %}
    # Exchange/queue (RabbitMQ) or stream/subject (NATS) names all start with it.
    prefix: str = Field("{{ cookiecutter.project_slug }}", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    publish_timeout: float = Field(5.0, gt=0)
    relay_batch_size: int = Field(100, ge=1, le=10_000)
    relay_poll_seconds: float = Field(0.5, gt=0)
    relay_max_backoff_seconds: float = Field(30.0, gt=0)
    outbox_retention_hours: float = Field(72.0, gt=0)
    concurrency: int = Field(16, ge=1, le=10_000)
    max_deliveries: int = Field(5, ge=1, le=100)
    retry_backoff_seconds: float = Field(1.0, gt=0)
    retry_max_backoff_seconds: float = Field(60.0, gt=0)
    worker_port: int = Field(8081, ge=1, le=65535)
    worker_shutdown_seconds: float = Field(15.0, gt=0)
    breaker: BreakerSettings = BreakerSettings()
{%- endif %}


{%- if cookiecutter.auth == "jwt" %}


# Signature algorithms a token may use: asymmetric only, so no shared secret can be
# confused with a provider's public key; "none" is never accepted.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
PUBLIC_PATHS = frozenset(
    {"/health/live", "/health/ready", "/health", "/metrics", "/docs", "/docs/oauth2-redirect"}
    | {"/redoc", "/openapi.json", "/docs/assets/"}
)


class AuthSettings(BaseModel):
    """Bearer token (JWT) verification: the issuer whose keys sign callers' tokens."""

    # Required: a resource server that skips `iss` or `aud` accepts tokens minted for others.
    issuer: str
    audience: str
    jwks_url: str | None = None
    algorithms: frozenset[str] = frozenset({"RS256", "ES256"})
    leeway_seconds: float = Field(30.0, ge=0, le=300)
    refresh_seconds: float = Field(300.0, gt=0)
    min_refresh_interval_seconds: float = Field(10.0, gt=0)
    max_token_bytes: int = Field(8192, ge=256)
    verified_token_cache_size: int = Field(1024, ge=0)  # 0: every request verifies in full
    realm: str | None = None
    public_paths: frozenset[str] = PUBLIC_PATHS

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: frozenset[str]) -> frozenset[str]:
        refused = sorted(value - ASYMMETRIC_ALGORITHMS)
        if refused or not value:
            allowed = ", ".join(sorted(ASYMMETRIC_ALGORITHMS))
            msg = f"only asymmetric algorithms are accepted ({allowed}); refused: {refused}"
            raise ValueError(msg)
        return value

    @field_validator("issuer", "jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            msg = "must be an https:// (or http://) URL"
            raise ValueError(msg)
        return value

{%- endif %}


class Settings(BaseSettings):
    """All settings of the service. Build with `load_settings()` to get readable errors."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    service_name: str = "{{ cookiecutter.project_slug }}"
    environment: Environment = Environment.PRODUCTION
    debug: bool = False
    host: str = "0.0.0.0"  # noqa: S104 - a container must listen beyond loopback
    port: int = Field({{ cookiecutter.http_port }}, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    proxy_headers: bool = True
    forwarded_allow_ips: str = "127.0.0.1"
    database_url: SecretStr | None = None
    migrate_on_startup: bool = True
    db: DatabaseSettings = DatabaseSettings()
    http_client: HttpClientSettings = HttpClientSettings()
    limits: LimitSettings = LimitSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    log: LogSettings = LogSettings()
{%- if cookiecutter.redis == "yes" %}
    redis: RedisSettings = RedisSettings()
{%- endif %}
{%- if cookiecutter.broker != "none" %}
    broker: BrokerSettings = BrokerSettings()
{%- endif %}
{%- if cookiecutter.auth == "jwt" %}
    auth: AuthSettings
{%- endif %}

    @field_validator("database_url")
    @classmethod
    def _postgres_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            msg = "must be a postgresql:// URL"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _database_required(self) -> Self:
        if self.database_url is None and self.environment is not Environment.DEVELOPMENT:
            msg = "database_url is required outside development"
            raise ValueError(msg)
        return self

    @property
    def dsn(self) -> str:
        """The database URL in clear, for the driver only: never log it."""
        if self.database_url is None:
            msg = "no database URL configured"
            raise RuntimeError(msg)
        return self.database_url.get_secret_value()


class SettingsError(Exception):
    """Settings could not be loaded; the message names each bad environment variable."""


def load_settings() -> Settings:
    """Read the settings from the environment, turning validation errors into `SettingsError`."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """One line per problem: `PREFIX_VAR: what is wrong (got 'value')`."""
    lines = []
    for error in exc.errors():
        location = [str(part) for part in error["loc"] if not isinstance(part, int)]
        variable = ENV_PREFIX + NESTED_DELIMITER.join(location).upper() if location else ""
        if not variable and "database_url" in error["msg"]:
            variable = ENV_PREFIX + "DATABASE_URL"
        message = error["msg"].removeprefix("Value error, ")
        value = error["input"]
        # Echo scalar inputs to help the operator, never a URL (it may hold a password).
        scalar = isinstance(value, str | int | float) and "URL" not in variable
        shown = f" (got {value!r})" if scalar else ""
        lines.append(f"{variable or 'settings'}: {message}{shown}")
    return "; ".join(lines)
