"""A downstream outage seen through the whole app: fail fast with 503, then recover."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.outbound.client import HttpClient  # noqa: TC001 - FastAPI resolves it at run time
from tests.conftest import make_settings, serving
from tests.downstream import Downstream

if TYPE_CHECKING:
    from fastapi import FastAPI

BREAKER = {"minimum_calls": 3, "sliding_window_size": 3, "wait_in_open_seconds": 0.3}


def add_proxy_route(app: FastAPI, downstream: Downstream) -> None:
    """A route that answers with what the downstream service says."""

    async def relay(http: HttpClient) -> dict[str, str]:
        response = await http.get(f"{downstream.url}/quote")
        return {"downstream": response.text}

    app.add_api_route("/relay", relay)


async def test_downstream_failure_opens_its_circuit_and_recovery_closes_it(
    database_url: str,
) -> None:
    settings = make_settings(database_url, http_client={"breaker": BREAKER})
    async with Downstream() as downstream, serving(settings) as (app, client):
        add_proxy_route(app, downstream)
        assert (await client.get("/relay")).json() == {"downstream": "OK"}

        downstream.status = HTTPStatus.INTERNAL_SERVER_ERROR
        # With the earlier success, two failures make 2 of 3 calls: over 50 %, open.
        failed = [await client.get("/relay") for _ in range(2)]
        assert [r.status_code for r in failed] == [502, 502]
        assert failed[0].headers["content-type"] == "application/problem+json"
        hits = downstream.hits
        rejected = await client.get("/relay")
        assert rejected.status_code == 503
        assert rejected.headers["content-type"] == "application/problem+json"
        assert int(rejected.headers["retry-after"]) >= 1
        assert downstream.hits == hits, "an open circuit must not call the downstream"
        # A dependency's outage degrades the report but keeps the pod in the load balancer.
        assert (await client.get("/health/ready")).status_code == 200
        assert (await client.get("/health")).json()["status"] == "warn"

        downstream.status = HTTPStatus.OK
        await asyncio.sleep(0.35)
        assert (await client.get("/relay")).json() == {"downstream": "OK"}
        assert (await client.get("/relay")).status_code == 200


async def test_unreachable_downstream_is_502_then_503(database_url: str) -> None:
    settings = make_settings(database_url, http_client={"breaker": BREAKER})
    downstream = Downstream()
    await downstream.start()
    await downstream.stop()  # a port nobody listens on: connections are refused
    async with serving(settings) as (app, client):
        add_proxy_route(app, downstream)
        statuses = [(await client.get("/relay")).status_code for _ in range(4)]
    assert statuses == [502, 502, 502, 503]
