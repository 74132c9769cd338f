"""The database dies while requests hold connections: 503 + Retry-After, never 500.

A TCP proxy between the pool and PostgreSQL resets every connection in the middle of a
query, or exactly when the pool resets a connection it is taking back (release), many
times over with requests in flight.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from fastapi import Request  # noqa: TC002 - FastAPI reads handler annotations at run time

from {{ cookiecutter.package_name }}.resilience.breaker import CircuitState
from tests.conftest import make_settings, serving
from tests.tcp_proxy import TcpProxy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx
    from fastapi import FastAPI

# asyncpg's reset query, sent when a connection goes back to the pool.
RESET_QUERY_MARKER = b"pg_advisory_unlock_all"


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    tcp_proxy = TcpProxy(database_url)
    await tcp_proxy.start()
    yield tcp_proxy
    await tcp_proxy.stop()


def add_routes(app: FastAPI) -> None:
    async def ping(request: Request) -> dict[str, int]:
        return {"one": await request.app.state.db.fetchval("SELECT 1")}

    async def slow(request: Request) -> dict[str, object]:
        return {"x": await request.app.state.db.fetchval("SELECT pg_sleep(0.02)::text")}

    app.add_api_route("/db-ping", ping)
    app.add_api_route("/db-slow", slow)


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1


async def test_connection_lost_during_release_is_503_and_a_breaker_failure(
    proxy: TcpProxy,
) -> None:
    breaker = {
        "consecutive_failures": 3,
        "minimum_calls": 100,
        "sliding_window_size": 100,
        "wait_in_open_seconds": 60,
    }
    settings = make_settings(proxy.url, db={"breaker": breaker, "pool_min_size": 1})
    async with serving(settings) as (app, client):
        add_routes(app)
        assert (await client.get("/db-ping")).status_code == 200
        proxy.cut_on(RESET_QUERY_MARKER)
        for _ in range(3):
            # The query succeeded; giving the connection back failed.
            assert_unavailable(await client.get("/db-ping"))
        assert app.state.db.breaker.state is CircuitState.OPEN


async def test_cuts_with_requests_in_flight_answer_200_or_503(proxy: TcpProxy) -> None:
    # A breaker that stays closed, so that every request really meets the cut.
    breaker = {"consecutive_failures": None, "minimum_calls": 10_000, "sliding_window_size": 10_000}
    settings = make_settings(
        proxy.url, db={"breaker": breaker, "pool_min_size": 2, "acquire_timeout": 1.0}
    )
    async with serving(settings) as (app, client):
        add_routes(app)
        statuses: list[int] = []
        for round_number in range(40):
            requests = [
                asyncio.create_task(client.get("/db-slow" if i % 2 else "/db-ping"))
                for i in range(6)
            ]
            if round_number % 2:
                # From before the first query to well into the slow ones.
                await asyncio.sleep((round_number % 7) * 0.005)
                proxy.cut()
                proxy.restore()
            else:
                proxy.cut_on(RESET_QUERY_MARKER)
            responses = await asyncio.gather(*requests)
            proxy.cut_on(None)
            for response in responses:
                statuses.append(response.status_code)
                if response.status_code != 200:
                    assert_unavailable(response)
        assert 503 in statuses
        # The pool heals by itself once the network does.
        assert (await client.get("/db-ping")).status_code == 200
