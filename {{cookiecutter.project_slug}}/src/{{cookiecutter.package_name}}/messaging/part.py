"""The messaging part: events written with the data and relayed (API), consumed (worker).

The API writes each event to the outbox table in the transaction that changes the data,
and its relay publishes them; the worker (`python -m <package> worker`) consumes them
with the handlers that other parts add to `Parts.event_handlers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from {{ cookiecutter.package_name }}.messaging.broker_lifespan import open_broker
from {{ cookiecutter.package_name }}.messaging.consumer import Consumer
{%- if cookiecutter.metrics == "prometheus" %}
from {{ cookiecutter.package_name }}.messaging.metrics import ConsumerMetrics
{%- endif %}
from {{ cookiecutter.package_name }}.messaging.outbox import Outbox, Relay
from {{ cookiecutter.package_name }}.messaging.worker import WorkerState, probe_routes
from {{ cookiecutter.package_name }}.service.parts import Reading

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

    from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings
    from {{ cookiecutter.package_name }}.service.parts import Parts

log = structlog.get_logger(__name__)


def add_messaging(parts: Parts, settings: BrokerSettings, *, name: str) -> None:
    """The broker in both processes; the outbox relay in the API; the consumers in the worker."""
    outbox = parts.app.state.outbox = Outbox(trace_headers=parts.trace_headers)

    async def connect(stack: AsyncExitStack) -> None:
        broker = parts.app.state.broker = await stack.enter_async_context(
            open_broker(settings, on_state_change=parts.breaker_changed)
        )
        parts.breaker_sources.append(lambda: (broker.breaker,))

    async def relay(stack: AsyncExitStack) -> None:
        state = parts.app.state
        running = state.relay = await stack.enter_async_context(
            Relay(state.db, outbox, state.broker, settings).running()
        )
        parts.readings.extend(
            [
                Reading(
                    "outbox_published",
                    "Events the outbox relay published.",
                    "counter",
                    lambda: running.published,
                ),
                Reading(
                    "outbox_refused",
                    "Events the broker refused for good, set aside in the outbox table.",
                    "counter",
                    lambda: running.refused,
                ),
                Reading(
                    "outbox_oldest_pending_seconds",
                    "Age of the oldest event the outbox relay last saw unpublished (0: none).",
                    "gauge",
                    running.pending_seconds,
                ),
            ]
        )

    parts.resources += [connect, relay]

    worker = WorkerState()
{%- if cookiecutter.metrics == "prometheus" %}
    metrics = ConsumerMetrics()

    async def backlog() -> int:
        return await worker.broker.backlog() if worker.broker is not None else 0

    parts.worker_routes += [*probe_routes(worker), *metrics.routes(backlog)]
{%- else %}
    metrics = None
    parts.worker_routes += probe_routes(worker)
{%- endif %}

    async def consume(stack: AsyncExitStack) -> None:
        db = worker.db = parts.app.state.db
        broker = worker.broker = parts.app.state.broker
        consumer = Consumer(
            db,
            parts.event_handlers,
            name=name,
            continue_trace=parts.continue_trace,
            observer=metrics,
        )
        broker.subscribe(consumer, metrics)
        await broker.start()
        worker.consuming = True
        log.info("worker_started", port=settings.worker_port)

        def stopping() -> None:
            worker.consuming = False
            log.info("worker_stopping")  # then the broker waits for in-flight handlers

        stack.callback(stopping)

    parts.worker_resources += [connect, consume]
