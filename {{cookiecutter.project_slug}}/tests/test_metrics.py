"""Prometheus metrics: known requests give known counts, labelled by route template."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_settings, serving
from tests.service_process import running_service
from tests.session_context import CLIENT_HEADERS

if TYPE_CHECKING:
    from pathlib import Path

    from fastapi import FastAPI


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def add_thing_route(app: FastAPI) -> None:
    async def thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    app.add_api_route("/things/{thing_id}", thing)


async def test_counts_and_latency_by_route_template(database_url: str) -> None:
    async with serving(make_settings(database_url)) as (app, client):
        add_thing_route(app)
        for thing_id in (1, 2, 3):
            assert (await client.get(f"/things/{thing_id}")).status_code == 200
        assert (await client.get("/things/not-a-number")).status_code == 422
        assert (await client.get("/no/such/path")).status_code == 404
        await client.get("/health/live")
        await asyncio.sleep(0.6)  # one loop-lag sample refreshes the state gauges

        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        found = samples(response.text)

    route = "/things/{thing_id}"
    assert value(found, "http_requests_total", method="GET", route=route, status="200") == 3
    assert value(found, "http_requests_total", method="GET", route=route, status="422") == 1
    assert value(found, "http_requests_total", method="GET", route="other", status="404") == 1
    latency = "http_request_duration_seconds_count"
    assert value(found, latency, method="GET", route=route, status="200") == 3
    assert value(found, latency, method="GET", route=route, status="422") == 1
    # The request counter is read off the histogram: the same label sets, the same counts.
    totals = {key[1]: count for key, count in found.items() if key[0] == "http_requests_total"}
    counts = {key[1]: count for key, count in found.items() if key[0] == latency}
    assert totals == counts
    # Raw paths never become labels; probes and scrapes are not counted.
    labels = {dict(key[1]).get("route") for key in found if key[0] == "http_requests_total"}
    assert labels == {route, "other"}
    assert value(found, "http_requests_in_flight") == 0
    assert value(found, "db_pool_connections") >= 1
    assert value(found, "circuit_breaker_state", breaker="database") == 0
    assert value(found, "event_loop_lag_seconds_count") >= 1


async def test_shed_requests_are_counted(database_url: str) -> None:
    release = asyncio.Event()
    settings = make_settings(database_url, limits={"max_in_flight": 1})
    async with serving(settings) as (app, client):

        async def slow() -> dict[str, bool]:
            await release.wait()
            return {"ok": True}

        app.add_api_route("/slow", slow)
        held = asyncio.create_task(client.get("/slow"))
        while app.state.stats.in_flight < 1:  # noqa: ASYNC110 - polls state the app owns
            await asyncio.sleep(0.01)
        assert (await client.get("/slow")).status_code == 503
        release.set()
        await held
        found = samples((await client.get("/metrics")).text)
    assert value(found, "http_requests_shed_total") == 1


def requests_total(http: httpx.Client) -> float:
    """`http_requests_total` over every worker, from one scrape (scrapes are not counted)."""
    found = samples(http.get("/metrics").text)
    return sum(v for (name, _), v in found.items() if name == "http_requests_total")


def test_several_workers_report_one_total(database_url: str, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with running_service(database_url, workers="2", extra_env=env) as service:
        # What a worker killed just after creating a file leaves (prometheus_client
        # sizes it a moment later): the scrape must still answer, with every count.
        (metrics_dir / "counter_999999.db").touch()
        with httpx.Client(base_url=service.url, headers=CLIENT_HEADERS, timeout=10) as http:
            # New connections spread over both workers.
            for _ in range(40):
                assert http.get("/openapi.json", headers={"connection": "close"}).status_code == 200
            # A worker counts a request just after answering it: the last count can land a
            # moment after the next scrape (served by the other worker) has started.
            deadline = time.monotonic() + 5
            while (total := requests_total(http)) < 40 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert service.stop() == 0
    assert total == 40


async def test_readiness_results_are_counted(database_url: str) -> None:
    """Probes are not counted as requests; their results are, for the ReadinessFailing alert."""
    async with serving(make_settings(database_url)) as (app, client):
        assert (await client.get("/health/ready")).status_code == 200
        assert (await client.get("/health/ready")).status_code == 200
        app.state.drain.draining = True
        assert (await client.get("/health/ready")).status_code == 503
        found = samples((await client.get("/metrics")).text)
    assert value(found, "readiness_checks_total", ready="true") == 2
    assert value(found, "readiness_checks_total", ready="false") == 1
    assert not [key for key in found if dict(key[1]).get("route", "").startswith("/health")]
