"""The outbound client against real HTTP servers on 127.0.0.1 (no mocked transport)."""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import FastAPI

from {{ cookiecutter.package_name }}.outbound.client import (
    DownstreamStatusError,
    HttpClient,
    OutboundClient,
    build_outbound_client,
)
from {{ cookiecutter.package_name }}.resilience.breaker import BreakerConfig, CircuitOpenError, CircuitState
from tests.downstream import Downstream
from tests.fake_clock import FakeClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# Four calls decide; an open breaker waits five (fake) seconds before a trial.
BREAKER = BreakerConfig(sliding_window_size=4, minimum_calls=4, wait_in_open=5.0)


@pytest.fixture
def clock() -> FakeClock:
    """Provide a fresh fake clock."""
    return FakeClock()


@pytest.fixture
async def downstream() -> AsyncIterator[Downstream]:
    """Provide a running downstream server."""
    async with Downstream() as server:
        yield server


@pytest.fixture
async def other_downstream() -> AsyncIterator[Downstream]:
    """Provide a second downstream server, on another port: another breaker."""
    async with Downstream() as server:
        yield server


@pytest.fixture
async def client(clock: FakeClock) -> AsyncIterator[OutboundClient]:
    """Provide an outbound client whose breakers run on the fake clock."""
    outbound = OutboundClient(httpx.AsyncClient(), BREAKER, total_timeout=5.0, clock=clock)
    yield outbound
    await outbound.aclose()


def breaker_state(client: OutboundClient, server: Downstream) -> CircuitState:
    """Read the state of the breaker for ``server``."""
    return client.breakers[f"127.0.0.1:{server.port}"].state


async def test_5xx_answers_open_the_breaker_then_requests_fail_fast(
    client: OutboundClient, downstream: Downstream
) -> None:
    """5xx are raised and counted; once open, no connection is even attempted."""
    downstream.status = HTTPStatus.INTERNAL_SERVER_ERROR
    for _ in range(4):
        with pytest.raises(DownstreamStatusError) as failed:
            await client.get(downstream.url)
        assert failed.value.response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert breaker_state(client, downstream) is CircuitState.OPEN

    with pytest.raises(CircuitOpenError) as rejected:
        await client.get(f"{downstream.url}/another/path")
    assert rejected.value.breaker == f"127.0.0.1:{downstream.port}"
    assert rejected.value.retry_after == pytest.approx(5.0)
    assert downstream.connections == 4


async def test_refused_connections_open_the_breaker(
    client: OutboundClient, downstream: Downstream, clock: FakeClock
) -> None:
    """Connection errors count; the breaker keeps callers away until a trial succeeds."""
    await downstream.stop()
    for _ in range(4):
        with pytest.raises(httpx.ConnectError):
            await client.get(downstream.url)
    assert breaker_state(client, downstream) is CircuitState.OPEN

    await downstream.start()  # back up, but the breaker does not know yet
    with pytest.raises(CircuitOpenError):
        await client.get(downstream.url)
    assert downstream.connections == 0
    clock.advance(5.0)
    response = await client.get(downstream.url)
    assert response.status_code == HTTPStatus.OK
    assert breaker_state(client, downstream) is CircuitState.CLOSED


async def test_4xx_answers_do_not_count(client: OutboundClient, downstream: Downstream) -> None:
    """A 404 is the caller's problem: returned, and the breaker stays closed."""
    downstream.status = HTTPStatus.NOT_FOUND
    for _ in range(10):
        response = await client.get(downstream.url)
        assert response.status_code == HTTPStatus.NOT_FOUND
    breaker = client.breakers[f"127.0.0.1:{downstream.port}"]
    assert breaker.state is CircuitState.CLOSED
    assert breaker.snapshot()["calls"] == 4
    assert breaker.snapshot()["failure_rate"] == 0.0


async def test_each_host_has_its_own_breaker(
    client: OutboundClient, downstream: Downstream, other_downstream: Downstream
) -> None:
    """One failing host does not cut off the others."""
    downstream.status = HTTPStatus.SERVICE_UNAVAILABLE
    for _ in range(4):
        with pytest.raises(DownstreamStatusError):
            await client.get(downstream.url)
    response = await client.get(other_downstream.url)
    assert response.status_code == HTTPStatus.OK
    assert breaker_state(client, downstream) is CircuitState.OPEN
    assert breaker_state(client, other_downstream) is CircuitState.CLOSED
    assert len(client.breakers) == 2


async def test_failed_trial_reopens_and_recovery_closes(
    client: OutboundClient, downstream: Downstream, clock: FakeClock
) -> None:
    """After ``wait_in_open`` one trial goes through: failing re-opens, succeeding closes."""
    downstream.status = HTTPStatus.BAD_GATEWAY
    for _ in range(4):
        with pytest.raises(DownstreamStatusError):
            await client.get(downstream.url)
    clock.advance(5.0)
    with pytest.raises(DownstreamStatusError):
        await client.get(downstream.url)  # the trial, still failing
    assert breaker_state(client, downstream) is CircuitState.OPEN
    assert downstream.hits == 5

    downstream.status = HTTPStatus.OK
    clock.advance(5.0)
    for _ in range(3):
        response = await client.get(downstream.url)
        assert response.status_code == HTTPStatus.OK
    assert breaker_state(client, downstream) is CircuitState.CLOSED
    assert downstream.hits == 8


async def test_total_timeout_cuts_off_a_stalled_server(downstream: Downstream) -> None:
    """A server that never answers costs ``total_timeout``, not ``read_timeout``, and counts."""
    downstream.stall = True
    client = build_outbound_client(
        connect_timeout=1.0,
        read_timeout=30.0,
        total_timeout=0.2,
        max_connections=10,
        breaker_config=BREAKER,
    )
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await client.get(downstream.url)
    elapsed = time.monotonic() - started
    await client.aclose()
    assert 0.15 <= elapsed < 2.0
    snapshot = client.breakers[f"127.0.0.1:{downstream.port}"].snapshot()
    assert snapshot["calls"] == 1
    assert snapshot["failure_rate"] == 100.0


async def test_request_hooks_and_options_reach_the_server(downstream: Downstream) -> None:
    """Event hooks (trace propagation) run on each request; params, headers, JSON are sent."""

    async def add_traceparent(request: httpx.Request) -> None:
        request.headers["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    client = build_outbound_client(
        connect_timeout=1.0,
        read_timeout=1.0,
        total_timeout=2.0,
        max_connections=10,
        breaker_config=BREAKER,
        event_hooks={"request": [add_traceparent]},
    )
    response = await client.post(
        f"{downstream.url}/items",
        params={"dry_run": "true"},
        headers={"x-request-id": "abc"},
        json={"name": "widget"},
    )
    await client.aclose()
    assert response.status_code == HTTPStatus.OK
    received = downstream.requests[0].lower()
    assert received.startswith(b"post /items?dry_run=true http/1.1\r\n")
    assert b"\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-" in received
    assert b"\r\nx-request-id: abc\r\n" in received
    assert received.endswith(b'{"name":"widget"}')


async def test_routes_get_the_app_client(client: OutboundClient) -> None:
    """``HttpClient`` injects the client the lifespan stored on ``app.state.http_client``."""
    app = FastAPI()
    app.state.http_client = client

    @app.get("/probe")
    async def probe(http: HttpClient) -> dict[str, bool]:
        return {"same": http is client}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as caller:
        response = await caller.get("/probe")
    assert response.json() == {"same": True}
