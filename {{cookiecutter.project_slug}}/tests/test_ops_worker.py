"""The ops pack's broker rules and panels read metrics the worker and the API really export."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from tests.messaging import broker_env, running_worker
from tests.ops_pack import exported_names, fragment_queries, metric_names
from tests.service_process import running_service
from tests.session_context import CLIENT_HEADERS

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings


def broker_queries(*, worker: bool) -> list[str]:
    """The broker fragment's queries of the worker's job, or of the API's (the relay)."""
    return [query for query in fragment_queries("broker") if ('-worker"' in query) == worker]


def test_every_metric_the_broker_fragment_reads_is_exported_by_the_worker(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    needed = metric_names(broker_queries(worker=True))
    with running_worker(database_url, broker_settings) as worker:
        exposition = httpx.get(f"{worker.url}/metrics", timeout=10).text
    missing = needed - exported_names(exposition)
    assert not missing, f"used by ops/fragments/broker.toml but not exported: {sorted(missing)}"


def test_every_metric_the_broker_fragment_reads_of_the_api_is_exported_by_it(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    needed = metric_names(broker_queries(worker=False))
    assert needed, "the fragment reads the outbox relay's metrics"
    with (
        running_service(database_url, None, **broker_env(broker_settings)) as service,
        httpx.Client(base_url=service.url, headers=CLIENT_HEADERS, timeout=10) as http,
    ):
        exposition = http.get("/metrics").text
    missing = needed - exported_names(exposition)
    assert not missing, f"used by ops/fragments/broker.toml but not exported: {sorted(missing)}"
