"""The broker group of the settings (`BROKER__*`): relay, worker, retries, dead letters."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from {{ cookiecutter.package_name }}.resilience.config import BreakerSettings


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
    relay_batch_size: int = Field(500, ge=1, le=10_000)
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
