"""A Redis outage under load, through a TCP proxy: requests keep being served (fail-open),
the breaker opens, `/health` warns, and everything recovers when Redis returns."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.resilience.breaker import CircuitState
from tests.conftest import serving
from tests.redis.conftest import redis_settings
from tests.tcp_proxy import TcpProxy

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI


async def load(http: httpx.AsyncClient, seconds: float, concurrency: int = 8) -> list[int]:
    statuses: list[int] = []
    deadline = asyncio.get_running_loop().time() + seconds

    async def worker() -> None:
        while asyncio.get_running_loop().time() < deadline:
            statuses.append((await http.get("/nope")).status_code)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def breaker_state(app: FastAPI) -> CircuitState:
    state: CircuitState = app.state.redis.breaker.state
    return state


async def health(http: httpx.AsyncClient) -> tuple[str, dict[str, object]]:
    document = (await http.get("/health")).json()
    return document["status"], document["checks"]["redis:responseTime"][0]


async def test_outage_fails_open_and_recovers(
    database_url: str, redis_url: str, prefix: str
) -> None:
    proxy = TcpProxy(redis_url)
    await proxy.start()
    group = {
        "rate_limit": {"default": {"limit": 100_000, "window_seconds": 60}},
        "breaker": {"wait_in_open_seconds": 0.5, "consecutive_failures": 3},
    }
    settings = redis_settings(database_url, proxy.url, prefix, group)
    try:
        async with serving(settings) as (app, http):
            before = await load(http, 0.3)
            assert set(before) == {404}
            assert (await health(http))[1]["status"] == "pass"

            proxy.cut()
            during = await load(http, 1.0)
            assert set(during) == {404}  # served without a rate limit decision, no 5xx
            # Open, or letting a trial through once its wait is over (the load lasts
            # longer than the wait): never closed while Redis is cut.
            assert breaker_state(app) in {CircuitState.OPEN, CircuitState.HALF_OPEN}
            assert app.state.rate_limiter.failed_open > 0
            status, check = await health(http)
            assert status == "warn"
            assert check["status"] == "warn"
            limited = await http.get("/nope")
            assert "RateLimit" not in limited.headers

            proxy.restore()
            await asyncio.sleep(0.6)  # the breaker lets a trial through
            after = await load(http, 0.5)
            assert set(after) == {404}
            assert breaker_state(app) is CircuitState.CLOSED
            assert "RateLimit" in (await http.get("/nope")).headers
            assert (await health(http))[1]["status"] == "pass"
    finally:
        await proxy.stop()
