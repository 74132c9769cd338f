"""The ops pack's Redis rules and panels read metrics the service exports with Redis on."""

from __future__ import annotations

import httpx

from tests.ops_pack import exported_names, fragment_queries, metric_names
from tests.service_process import running_service
from tests.session_context import CLIENT_HEADERS


def test_every_metric_the_redis_fragment_reads_is_exported(
    database_url: str, redis_url: str, prefix: str
) -> None:
    needed = metric_names(fragment_queries("redis"))
    with (
        running_service(database_url, redis__url=redis_url, redis__key_prefix=prefix) as service,
        httpx.Client(base_url=service.url, headers=CLIENT_HEADERS, timeout=10) as http,
    ):
        for _ in range(3):
            assert http.get("/openapi.json").status_code == 200
        exposition = http.get("/metrics").text
    missing = needed - exported_names(exposition)
    assert not missing, f"used by ops/fragments/redis.toml but not exported: {sorted(missing)}"
