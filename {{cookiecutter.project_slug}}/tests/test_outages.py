"""Database outage: fail fast with 503 once the breaker opens, recover without a restart."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from fastapi import Request  # noqa: TC002 - FastAPI reads handler annotations at run time

from {{ cookiecutter.package_name }}.resilience.breaker import CircuitState
from tests.conftest import make_settings, serving
from tests.tcp_proxy import TcpProxy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI

import pytest

BREAKER = {
    "minimum_calls": 4,
    "sliding_window_size": 4,
    "consecutive_failures": 3,
    "wait_in_open_seconds": 0.5,
}


def breaker_state(app: FastAPI) -> CircuitState:
    state: CircuitState = app.state.db.breaker.state
    return state


def add_db_route(app: FastAPI) -> None:
    """A route that needs the database, whatever example API the project has."""

    async def ping(request: Request) -> dict[str, int]:
        return {"one": await request.app.state.db.fetchval("SELECT 1")}

    app.add_api_route("/db-ping", ping)


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    tcp_proxy = TcpProxy(database_url)
    await tcp_proxy.start()
    yield tcp_proxy
    await tcp_proxy.stop()


async def test_outage_opens_breaker_fails_fast_and_recovers(proxy: TcpProxy) -> None:
    settings = make_settings(
        proxy.url, db={"breaker": BREAKER, "acquire_timeout": 1.0, "pool_min_size": 1}
    )
    async with serving(settings) as (app, client):
        add_db_route(app)
        assert (await client.get("/db-ping")).json() == {"one": 1}

        proxy.cut()
        failures = [await client.get("/db-ping") for _ in range(4)]
        assert {r.status_code for r in failures} == {503}
        assert breaker_state(app) is CircuitState.OPEN

        started = time.perf_counter()
        rejected = await client.get("/db-ping")
        elapsed = time.perf_counter() - started
        assert rejected.status_code == 503
        assert rejected.headers["content-type"] == "application/problem+json"
        assert int(rejected.headers["retry-after"]) >= 1
        assert "circuit" in rejected.json()["detail"]
        # Rejected without touching the network: far below the 1 s acquire timeout.
        assert elapsed < 0.5
        assert (await client.get("/health/ready")).status_code == 503
        assert (await client.get("/health/live")).status_code == 200

        proxy.restore()
        recovered = False
        for _ in range(100):
            if (await client.get("/db-ping")).status_code == 200:
                recovered = True
                break
            await asyncio.sleep(0.05)
        assert recovered, "the service did not recover by itself"
        assert breaker_state(app) is CircuitState.CLOSED
        await asyncio.sleep(1.1)  # readiness caches its database check for a second
        assert (await client.get("/health/ready")).status_code == 200


async def test_client_errors_do_not_open_the_breaker(database_url: str) -> None:
    async with serving(make_settings(database_url, db={"breaker": BREAKER})) as (app, client):

        async def bad_sql(request: Request) -> dict[str, int]:
            return {"x": await request.app.state.db.fetchval("SELECT 1/0")}

        app.add_api_route("/bad-sql", bad_sql)
        for _ in range(10):
            response = await client.get("/bad-sql")
            assert response.status_code == 500
        assert breaker_state(app) is CircuitState.CLOSED
