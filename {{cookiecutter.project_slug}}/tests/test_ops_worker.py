"""The ops pack's broker rules and panels read metrics the worker really exports."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from tests.messaging import running_worker
from tests.ops_pack import exported_names, fragment_queries, metric_names

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings


def test_every_metric_the_broker_fragment_reads_is_exported_by_the_worker(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    needed = metric_names(fragment_queries("broker"))
    with running_worker(database_url, broker_settings) as worker:
        exposition = httpx.get(f"{worker.url}/metrics", timeout=10).text
    missing = needed - exported_names(exposition)
    assert not missing, f"used by ops/fragments/broker.toml but not exported: {sorted(missing)}"
