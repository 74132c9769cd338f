"""The worker as a real process: end to end over HTTP, SIGTERM, two relays at once."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
from typing import TYPE_CHECKING

import httpx

from tests.broker_server import queued_messages
from tests.messaging import (
    broker_env,
    count,
    log_lines,
    running_worker,
    wait_for_count,
)
from tests.service_process import running_service
from tests.session_context import CLIENT_HEADERS

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings

TRACING = importlib.util.find_spec("{{ cookiecutter.package_name }}.observability.tracing.spans") is not None
METRICS = importlib.util.find_spec("{{ cookiecutter.package_name }}.messaging.metrics") is not None
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
AUDITED = "SELECT count(*) FROM item_audit"


async def test_event_flows_from_request_to_worker_with_its_trace(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    env = broker_env(broker_settings)
    with (
        running_service(database_url, None, **env) as service,
        running_worker(database_url, broker_settings) as worker,
    ):
        async with httpx.AsyncClient(headers=CLIENT_HEADERS) as client:
            response = await client.post(
                f"{service.url}/items",
                json={"name": "traced", "price_cents": 1},
                headers={
                    "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
                    "X-Request-ID": "req-flow-1",
                },
            )
        assert response.status_code == 201
        await wait_for_count(database_url, AUDITED, 1)
        async with httpx.AsyncClient(base_url=worker.url) as probe:
            assert (await probe.get("/health/live")).status_code == 200
            ready = await probe.get("/health/ready")
            assert ready.json()["checks"] == {"consuming": True, "database": True}
            metrics = await probe.get("/metrics")
        if METRICS:
            assert (
                'messages_consumed_total{outcome="handled",type="item.created"} 1.0' in metrics.text
            )
            assert "message_backlog" in metrics.text
        else:
            assert metrics.status_code == 404
        assert worker.stop() == 0
        lines = [
            line for line in log_lines(worker.output()) if line.get("request_id") == "req-flow-1"
        ]
    events = {line["event"] for line in lines}
    assert {"item_audited", "message_processed"} <= events
    if TRACING:
        assert {line.get("trace_id") for line in lines} == {TRACE_ID}
    processed = [line for line in lines if line["event"] == "message_processed"]
    assert processed[0]["outcome"] == "handled"


async def test_sigterm_with_messages_in_flight_loses_none_and_repeats_none(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    total = 60
    env = broker_env(broker_settings)
    with running_service(database_url, None, **env) as service:
        async with httpx.AsyncClient(base_url=service.url, headers=CLIENT_HEADERS) as client:
            for number in range(total):
                body = {"name": f"n{number}", "price_cents": 1}
                assert (await client.post("/items", json=body)).status_code == 201
        await wait_for_count(
            database_url, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL", total
        )
    outputs = []
    with running_worker(database_url, broker_settings) as worker:
        await wait_for_count_at_least(database_url, AUDITED, 1)
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=30) == 0
        outputs.append(worker.output())
    handled_first = await count(database_url, AUDITED)
    with running_worker(database_url, broker_settings) as worker:
        await wait_for_count(database_url, AUDITED, total)
        assert worker.stop() == 0
        outputs.append(worker.output())
    lines = [line for output in outputs for line in log_lines(output)]
    assert not [line for line in lines if line["event"] == "message_failed"]
    handled = [line for line in lines if line.get("outcome") == "handled"]
    assert len(handled) == total
    assert await count(database_url, "SELECT count(DISTINCT item_id) FROM item_audit") == total
    assert handled_first <= total


async def wait_for_count_at_least(database_url: str, query: str, minimum: int) -> None:
    for _ in range(3000):
        if await count(database_url, query) >= minimum:
            return
        await asyncio.sleep(0.01)
    msg = f"{query!r} never reached {minimum}"
    raise AssertionError(msg)


async def test_two_relays_publish_each_row_once(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    total = 40
    env = broker_env(broker_settings)
    with (
        running_service(database_url, None, **env) as first,
        running_service(database_url, None, **env) as second,
    ):
        async with httpx.AsyncClient(headers=CLIENT_HEADERS) as client:
            for number in range(total):
                url = (first if number % 2 else second).url
                body = {"name": f"r{number}", "price_cents": 1}
                assert (await client.post(f"{url}/items", json=body)).status_code == 201
        await wait_for_count(
            database_url, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL", total
        )
    # No worker ran: every message published is still in the queue (stream), once.
    assert await queued_messages(broker_settings) == total
