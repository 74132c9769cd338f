"""The outbound HTTP client group of the settings (`HTTP_CLIENT__*`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from {{ cookiecutter.package_name }}.resilience.config import BreakerSettings


class HttpClientSettings(BaseModel):
    """Outbound HTTP client timeouts, pool and breaker (one breaker per downstream host)."""

    connect_timeout: float = Field(2.0, gt=0)
    read_timeout: float = Field(5.0, gt=0)
    total_timeout: float = Field(10.0, gt=0)
    max_connections: int = Field(100, ge=1)
    breaker: BreakerSettings = BreakerSettings()
