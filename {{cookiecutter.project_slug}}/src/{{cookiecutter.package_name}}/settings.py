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
from {{ cookiecutter.package_name }}.database.settings import DatabaseSettings
{%- if cookiecutter.broker != "none" %}
from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings
{%- endif %}
from {{ cookiecutter.package_name }}.outbound.settings import HttpClientSettings
{%- if cookiecutter.redis == "yes" %}
from {{ cookiecutter.package_name }}.redis.settings import RedisSettings
{%- endif %}

ENV_PREFIX = "{{ cookiecutter.__env_prefix }}"
NESTED_DELIMITER = "__"


class Environment(StrEnum):
    """Where the service runs; only `development` may start without a database URL."""

    PRODUCTION = "production"
    STAGING = "staging"
    DEVELOPMENT = "development"
    TEST = "test"


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
