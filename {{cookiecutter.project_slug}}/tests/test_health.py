"""Probes: liveness, readiness (database, breaker, draining) and the health+json report."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tests.conftest import make_settings, serving
from tests.tcp_proxy import TcpProxy

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI

HEALTH_JSON = "application/health+json"
# Members the draft (draft-inadarei-api-health-check) defines for a check entry.
CHECK_MEMBERS = {
    "componentId", "componentType", "observedValue", "observedUnit", "status",
    "affectedEndpoints", "time", "output", "links",
}  # fmt: skip


def assert_health_document(body: dict[str, Any]) -> None:
    assert body["status"] in {"pass", "warn", "fail"}
    for name, entries in body["checks"].items():
        assert ":" in name or name.isidentifier(), name
        assert isinstance(entries, list)
        assert entries, name
        for entry in entries:
            assert set(entry) <= CHECK_MEMBERS | {"limit"}, set(entry) - CHECK_MEMBERS
            assert entry["status"] in {"pass", "warn", "fail"}
            datetime.fromisoformat(entry["time"])


async def test_live_and_ready_pass(client: httpx.AsyncClient) -> None:
    for path in ("/health/live", "/health/ready"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == HEALTH_JSON
        assert response.json() == {"status": "pass"}


async def test_report_has_every_component(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == HEALTH_JSON
    body = response.json()
    assert_health_document(body)
    assert body["status"] == "pass"
    checks = body["checks"]
    assert checks["database:responseTime"][0]["observedUnit"] == "ms"
    assert checks["database:responseTime"][0]["status"] == "pass"
    assert {e["componentId"] for e in checks["database:connections"]} == {"size", "idle"}
    # The database's breaker, then one per downstream host called so far (with auth=jwt,
    # the identity provider's).
    breakers = [e["componentId"] for e in checks["circuitBreaker:state"]]
    assert breakers[0] == "database"
    assert all(name.startswith("127.0.0.1:") for name in breakers[1:])
    assert checks["circuitBreaker:state"][0]["observedValue"] == "closed"
    assert checks["eventLoop:lag"][0]["observedUnit"] == "ms"
    assert checks["requests:inFlight"][0]["observedValue"] >= 0


async def test_draining_fails_readiness_not_liveness(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    app.state.drain.draining = True
    ready = await client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json() == {"status": "fail", "output": "draining for shutdown"}
    assert (await client.get("/health/live")).status_code == 200
    report = await client.get("/health")
    assert report.status_code == 503
    assert report.json()["status"] == "fail"


async def test_unreachable_database_fails_readiness_not_liveness(database_url: str) -> None:
    proxy = TcpProxy(database_url)
    await proxy.start()
    try:
        settings = make_settings(proxy.url, db={"pool_min_size": 0, "acquire_timeout": 0.5})
        async with serving(settings) as (_, client):
            assert (await client.get("/health/ready")).status_code == 200
            proxy.cut()
            await asyncio.sleep(1.1)  # past the cached check
            ready = await client.get("/health/ready")
            assert ready.status_code == 503
            assert "database" in ready.json()["output"]
            assert (await client.get("/health/live")).status_code == 200
            report = (await client.get("/health")).json()
            assert_health_document(report)
            assert report["checks"]["database:responseTime"][0]["status"] == "fail"
    finally:
        await proxy.stop()


async def test_probe_stampede_shares_one_check(database_url: str) -> None:
    settings = make_settings(database_url, db={"pool_min_size": 1, "pool_max_size": 1})
    async with serving(settings) as (_, client):
        responses = await asyncio.gather(*(client.get("/health/ready") for _ in range(50)))
        assert {r.status_code for r in responses} == {200}
