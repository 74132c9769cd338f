"""Prometheus metrics of the Redis client and the rate limiter, read at scrape time.

The client and the limiter keep plain counters (an integer increment per command);
this collector turns them into metric families when `/metrics` is scraped, so the
request path takes no metric lock for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

    from {{ cookiecutter.package_name }}.rate_limit import RateLimiter
    from {{ cookiecutter.package_name }}.redis_store import RedisStore


class RedisCollector(Collector):
    """Commands, errors and connections in use; requests let through without Redis."""

    def __init__(self, store: RedisStore, limiter: RateLimiter | None) -> None:
        """Observe `store` and, when rate limiting is on, `limiter`."""
        self._store = store
        self._limiter = limiter

    def collect(self) -> Iterator[Metric]:
        """One sample of each family."""
        store = self._store
        yield CounterMetricFamily(
            "redis_commands", "Redis commands and scripts sent.", value=store.commands
        )
        yield CounterMetricFamily(
            "redis_errors", "Redis commands that failed to reach Redis.", value=store.errors
        )
        yield GaugeMetricFamily(
            "redis_pool_in_use", "Redis connections checked out.", value=store.pool_in_use
        )
        if self._limiter is not None:
            yield CounterMetricFamily(
                "rate_limit_failed_open",
                "Requests admitted without a rate limit decision (Redis unavailable).",
                value=self._limiter.failed_open,
            )
