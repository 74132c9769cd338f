"""Prometheus metrics of the worker: messages by outcome, handling time and backlog."""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.responses import Response
from starlette.routing import Route

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request


class ConsumerMetrics:
    """Consumed, failed, retried and dead-lettered counters, duration, backlog gauge."""

    def __init__(self) -> None:
        """Create the families in a registry of their own."""
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.consumed = Counter(
            "messages_consumed_total",
            "Messages finished, by type and outcome (handled, duplicate, ignored, failed).",
            ["type", "outcome"],
            registry=registry,
        )
        self.failed = Counter(
            "messages_failed_total", "Handler failures.", ["type"], registry=registry
        )
        self.retry_counter = Counter(
            "messages_retried_total",
            "Failed messages scheduled again.",
            ["type"],
            registry=registry,
        )
        self.dead = Counter(
            "messages_dead_lettered_total",
            "Messages moved to the dead-letter queue.",
            ["type"],
            registry=registry,
        )
        self.duration = Histogram(
            "message_handling_duration_seconds",
            "Time to handle one message.",
            ["type"],
            registry=registry,
        )
        self.backlog = Gauge(
            "message_backlog",
            "Messages waiting for the worker (at scrape time).",
            registry=registry,
        )

    def handled(self, message_type: str, outcome: str, seconds: float) -> None:
        """Record one finished message."""
        self.consumed.labels(message_type, outcome).inc()
        self.duration.labels(message_type).observe(seconds)
        if outcome == "failed":
            self.failed.labels(message_type).inc()

    def retried(self, message_type: str) -> None:
        """Record a retry."""
        self.retry_counter.labels(message_type).inc()

    def dead_lettered(self, message_type: str) -> None:
        """Record a dead letter."""
        self.dead.labels(message_type).inc()

    def routes(self, backlog: Callable[[], Awaitable[int]]) -> list[Route]:
        """`GET /metrics`, sampling the backlog on each scrape."""

        async def metrics(_request: Request) -> Response:
            with suppress(Exception):  # the broker is down: keep the last value
                self.backlog.set(await backlog())
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        return [Route("/metrics", metrics, methods=["GET"])]
