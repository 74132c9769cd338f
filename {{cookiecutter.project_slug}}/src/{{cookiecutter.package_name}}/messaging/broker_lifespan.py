"""The broker for a process's lifetime: its circuit breaker, connection on first use, close.

Independent of which broker it is: `messaging.broker` is the NATS or the RabbitMQ edition.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.messaging.broker import Broker
from {{ cookiecutter.package_name }}.messaging.envelope import PublishError
from {{ cookiecutter.package_name }}.resilience.breaker import BreakerConfig, CircuitBreaker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings
    from {{ cookiecutter.package_name }}.resilience.breaker import StateChangeCallback


def is_unavailable(exc: BaseException) -> bool:
    """Publishing errors count against the broker, but for messages it refused for good."""
    if isinstance(exc, PublishError):
        return exc.unavailable
    return not isinstance(exc, asyncio.CancelledError)


@asynccontextmanager
async def open_broker(
    settings: BrokerSettings,
    *,
    on_state_change: StateChangeCallback | None = None,
) -> AsyncIterator[Broker]:
    """The broker for as long as the block runs; connects on first use, closes on exit."""
    breaker = CircuitBreaker(
        "broker",
        BreakerConfig.from_settings(settings.breaker),
        is_failure=is_unavailable,
        on_state_change=on_state_change,
    )
    broker = Broker(settings, breaker)
    try:
        yield broker
    finally:
        await broker.close()
