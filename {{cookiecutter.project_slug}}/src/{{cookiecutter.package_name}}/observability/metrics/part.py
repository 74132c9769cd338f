"""The metrics part: the service's families, `/metrics`, and the readings of other parts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from {{ cookiecutter.package_name }}.observability.metrics.families import METRICS_PATH, Metrics, routes

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

    from {{ cookiecutter.package_name }}.service.parts import Parts, Reading


class ReadingsCollector(Collector):
    """The parts' plain counters and gauges (`Parts.readings`), read when scraped.

    A part counts with an integer increment on its hot path and takes no metric lock;
    the families are made here, once per scrape.
    """

    def __init__(self, readings: list[Reading]) -> None:
        """Read `readings` (the list itself: parts may add to it after start-up)."""
        self._readings = readings

    def collect(self) -> Iterator[Metric]:
        """One sample of each reading."""
        for reading in self._readings:
            family = CounterMetricFamily if reading.kind == "counter" else GaugeMetricFamily
            yield family(reading.name, reading.documentation, value=reading.read())


def add_metrics(parts: Parts) -> None:
    """Count and time requests, follow breakers, pool and loop lag, serve `/metrics`."""
    metrics = parts.app.state.metrics = Metrics()
    metrics.registry.register(ReadingsCollector(parts.readings))
    parts.hooks.append(metrics)
    parts.on_shed.append(metrics.shed.inc)
    parts.breaker_listeners.append(metrics.breaker_changed)
    parts.readiness_listeners.append(metrics.readiness_checked)
    parts.service_routes.extend(routes)
    parts.exempt_paths.add(METRICS_PATH)

    def sample(lag: float) -> None:
        state = parts.app.state
        metrics.loop_lag.observe(lag)
        metrics.sample(state.db.pool, parts.breakers(), state.stats.in_flight)

    parts.loop_lag_listeners.append(sample)
