"""The database group of the settings (`DB__*`): pool sizing, timeouts, PgBouncer mode."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, Field, model_validator

from {{ cookiecutter.package_name }}.resilience.config import BreakerSettings


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
