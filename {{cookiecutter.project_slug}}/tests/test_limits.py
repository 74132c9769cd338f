"""Load shedding, the request deadline and the pool acquire timeout."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from fastapi import Request  # noqa: TC002 - FastAPI reads handler annotations at run time

from tests.conftest import make_settings, serving


async def test_over_the_limit_is_shed_at_once_and_health_is_exempt(database_url: str) -> None:
    settings = make_settings(database_url, limits={"max_in_flight": 3})
    release = asyncio.Event()
    async with serving(settings) as (app, client):

        async def slow() -> dict[str, bool]:
            await release.wait()
            return {"done": True}

        app.add_api_route("/slow", slow)
        held = [asyncio.create_task(client.get("/slow")) for _ in range(3)]
        while app.state.stats.in_flight < 3:  # noqa: ASYNC110 - polls state the app owns
            await asyncio.sleep(0.01)

        shed = await asyncio.gather(*(client.get("/slow") for _ in range(5)))
        assert {r.status_code for r in shed} == {503}
        assert all(r.headers["retry-after"] == "1" for r in shed)
        assert all(r.headers["content-type"] == "application/problem+json" for r in shed)
        assert (await client.get("/health/live")).status_code == 200
        assert (await client.get("/health/ready")).status_code == 200

        release.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200, 200]
        assert app.state.stats.in_flight == 0


async def test_deadline_answers_504_and_returns_a_clean_connection(database_url: str) -> None:
    settings = make_settings(
        database_url, limits={"request_timeout": 0.3}, db={"pool_min_size": 1, "pool_max_size": 1}
    )
    async with serving(settings) as (app, client):
        # Tagged: other suites on the same server may be sleeping too.
        sleep = f"SELECT pg_sleep(5) -- {uuid.uuid4().hex}"

        async def sleepy(request: Request) -> dict[str, object]:
            return {"x": await request.app.state.db.fetchval(sleep)}

        async def quick(request: Request) -> dict[str, object]:
            return {"x": await request.app.state.db.fetchval("SELECT 41 + 1")}

        app.add_api_route("/sleepy", sleepy)
        app.add_api_route("/quick", quick)
        response = await client.get("/sleepy")
        assert response.status_code == 504
        assert response.headers["content-type"] == "application/problem+json"
        # The only pooled connection is back, idle, and its query was cancelled.
        assert (await client.get("/quick")).json() == {"x": 42}
        connection = await asyncpg.connect(database_url)
        try:
            sleeping = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query = $1", sleep
            )
        finally:
            await connection.close()
        assert sleeping == 0


async def test_pool_exhaustion_answers_503_instead_of_hanging(database_url: str) -> None:
    settings = make_settings(
        database_url, db={"pool_min_size": 1, "pool_max_size": 1, "acquire_timeout": 0.2}
    )
    release = asyncio.Event()
    async with serving(settings) as (app, client):

        async def hold(request: Request) -> dict[str, bool]:
            async with request.app.state.db.connection():
                await release.wait()
            return {"held": True}

        async def query(request: Request) -> dict[str, object]:
            return {"x": await request.app.state.db.fetchval("SELECT 1")}

        app.add_api_route("/hold", hold)
        app.add_api_route("/query", query)
        holder = asyncio.create_task(client.get("/hold"))
        while app.state.db.pool.get_idle_size() > 0:  # noqa: ASYNC110 - polls state the app owns
            await asyncio.sleep(0.01)
        blocked = await client.get("/query")
        assert blocked.status_code == 503
        assert blocked.headers["retry-after"] == "1"
        release.set()
        assert (await holder).status_code == 200
        assert (await client.get("/query")).status_code == 200
