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
{% if cookiecutter.auth == "jwt" %}
from {{ cookiecutter.package_name }}.auth.settings import AuthSettings
{%- endif %}
from {{ cookiecutter.package_name }}.breaker_config import BreakerSettings
{%- if cookiecutter.redis == "yes" %}
from {{ cookiecutter.package_name }}.redis_settings import RedisSettings
{%- endif %}

ENV_PREFIX = "{{ cookiecutter.__env_prefix }}"
NESTED_DELIMITER = "__"


class Environment(StrEnum):
    """Where the service runs; only `development` may start without a database URL."""

    PRODUCTION = "production"
    STAGING = "staging"
    DEVELOPMENT = "development"
    TEST = "test"


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
    concurrency: int = Field(64, ge=1, le=10_000)
{%- if cookiecutter.broker == "nats" %}
    # A message a worker took and neither acknowledged nor refused (the worker died) is
    # delivered again after this long: longer than the slowest handler should take.
    ack_wait_seconds: float = Field(30.0, gt=0)
{%- endif %}
    max_deliveries: int = Field(5, ge=1, le=100)
    retry_backoff_seconds: float = Field(1.0, gt=0)
    retry_max_backoff_seconds: float = Field(60.0, gt=0)
    worker_port: int = Field(8081, ge=1, le=65535)
    worker_shutdown_seconds: float = Field(15.0, gt=0)
    breaker: BreakerSettings = BreakerSettings()
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
