"""The outbox and its relay against a real PostgreSQL and a real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from {{ cookiecutter.package_name }}.messaging.envelope import Message
from {{ cookiecutter.package_name }}.observability.logs.context import request_id_var
from {{ cookiecutter.package_name }}.resilience.breaker import CircuitState
from tests.broker_server import queued_messages
from tests.conftest import make_settings, serving
from tests.messaging import (
    count,
    wait_for_count,
)
from tests.tcp_proxy import TcpProxy

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from fastapi import FastAPI

    from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings

PENDING = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
SENT = "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"


async def add_events(app: FastAPI, count_: int, padding: int = 0) -> None:
    """Write `count_` events in one transaction, as a request handler would."""
    async with app.state.db.connection() as connection, connection.transaction():
        for number in range(count_):
            payload = {"number": number, "padding": "x" * padding}
            await app.state.outbox.add(connection, "test.event", payload)
    app.state.outbox.committed()


def through_proxy(settings: BrokerSettings, proxy: TcpProxy, **overrides: object) -> BrokerSettings:
    """`settings` with the broker reached through `proxy` (started)."""
    parts = urlsplit(settings.url.get_secret_value())
    netloc = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
    url = urlunsplit(parts._replace(netloc=f"{netloc}:{proxy.port}"))
    return settings.model_copy(update={"url": SecretStr(url), **overrides})


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float) -> None:  # noqa: ASYNC109
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            msg = f"not true after {timeout}s"
            raise AssertionError(msg)
        await asyncio.sleep(0.05)


async def test_relay_publishes_every_row_and_marks_it_sent(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    settings = make_settings(database_url, broker=broker_settings)
    async with serving(settings) as (app, _):
        token = request_id_var.set("req-outbox-1")
        try:
            await add_events(app, 5)
        finally:
            request_id_var.reset(token)
        await wait_for_count(database_url, SENT, 5)
    assert await count(database_url, PENDING) == 0
    headers = await count(
        database_url, "SELECT count(*) FROM outbox WHERE headers->>'x-request-id' = 'req-outbox-1'"
    )
    assert headers == 5


async def test_rolled_back_transaction_leaves_no_event(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    settings = make_settings(database_url, broker=broker_settings)
    async with serving(settings) as (app, _):
        try:
            async with app.state.db.connection() as connection, connection.transaction():
                await app.state.outbox.add(connection, "test.event", {"n": 1})
                raise RuntimeError("the change failed")  # noqa: EM101, TRY003, TRY301
        except RuntimeError:
            pass
    assert await count(database_url, "SELECT count(*) FROM outbox") == 0


async def test_broker_outage_delays_events_and_loses_none(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    """Cut the broker's TCP connections: rows wait, then all are published once it is back."""
    proxy = TcpProxy(broker_settings.url.get_secret_value())
    await proxy.start()
    settings = make_settings(
        database_url, broker=through_proxy(broker_settings, proxy, publish_timeout=1.0)
    )
    try:
        async with serving(settings) as (app, _):
            await add_events(app, 3)
            await wait_for_count(database_url, SENT, 3)
            proxy.cut()
            await add_events(app, 4)  # the writes succeed while the broker is unreachable
            await asyncio.sleep(1.5)
            assert await count(database_url, PENDING) == 4
            # What outbox_oldest_pending_seconds exports (OutboxNotPublishing reads it).
            waited = app.state.relay.pending_seconds()
            assert 1.0 <= waited < 30, waited
            proxy.restore()
            await wait_for_count(database_url, SENT, 7, timeout=60)

            async def nothing_waits() -> bool:
                return bool(app.state.relay.pending_seconds() == 0)

            await wait_until(nothing_waits, timeout=10)
            assert app.state.relay.published == 7
    finally:
        await proxy.stop()


async def test_broker_outage_never_opens_the_database_circuit(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    """Publish failures count against the broker's breaker, never the database's."""
    proxy = TcpProxy(broker_settings.url.get_secret_value())
    await proxy.start()
    proxy.cut()
    settings = make_settings(
        database_url, broker=through_proxy(broker_settings, proxy, publish_timeout=0.5)
    )
    try:
        async with serving(settings) as (app, client):
            await add_events(app, 3)
            broker_breaker = app.state.broker.breaker

            async def broker_circuit_opened() -> bool:
                return bool(broker_breaker.state is CircuitState.OPEN)

            # Five failed relay passes open the broker's circuit (and, counted against
            # the database, would have opened the database's too).
            await wait_until(broker_circuit_opened, timeout=30)
            assert app.state.db.breaker.state is CircuitState.CLOSED
            ready = await client.get("/health/ready")
            assert ready.status_code == 200, ready.text
            assert await count(database_url, PENDING) == 3
            proxy.restore()
            await wait_for_count(database_url, SENT, 3, timeout=60)
    finally:
        await proxy.stop()


async def test_rows_the_broker_took_before_a_failure_are_not_published_again(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    """The connection stalls in the middle of a batch: what the broker confirmed is sent."""
    proxy = TcpProxy(broker_settings.url.get_secret_value())
    await proxy.start()
    settings = make_settings(
        database_url, broker=through_proxy(broker_settings, proxy, publish_timeout=1.0)
    )
    padding = 4000
    try:
        async with serving(settings) as (app, _):
            await add_events(app, 1)
            await wait_for_count(database_url, SENT, 1)
            # About three of the next ten messages reach the broker; the rest are lost.
            proxy.stall_after(int(3.5 * padding))
            await add_events(app, 10, padding=padding)

            async def some_taken_and_marked() -> bool:
                sent = await count(database_url, SENT)
                return 1 < sent < 11 and sent == await queued_messages(broker_settings)

            await wait_until(some_taken_and_marked, timeout=20)
            proxy.cut()  # the stalled connection is useless now: the client reconnects
            proxy.restore()
            await wait_for_count(database_url, SENT, 11, timeout=60)
        # Each row reached the broker once (RabbitMQ keeps duplicates; JetStream would
        # drop them by message id).
        assert await queued_messages(broker_settings) == 11
    finally:
        await proxy.stop()


{%- if cookiecutter.broker == "nats" %}


async def test_an_event_over_max_payload_is_set_aside_and_holds_up_nothing(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    """NATS refuses a message over its max_payload for good: the relay sets it aside."""
    settings = make_settings(database_url, broker=broker_settings)
    refused = "SELECT count(*) FROM outbox WHERE refused_at IS NOT NULL AND refusal LIKE $1"
    async with serving(settings) as (app, _):
        await add_events(app, 1)
        await wait_for_count(database_url, SENT, 1)
        limit = app.state.broker.client.connection.max_payload  # known once connected
        await add_events(app, 1, padding=limit)
        await add_events(app, 3)
        await wait_for_count(database_url, SENT, 4)
        assert await count(database_url, refused, "%max_payload%") == 1
        assert app.state.relay.refused == 1
        assert app.state.broker.breaker.state is CircuitState.CLOSED  # the broker is fine

        async def nothing_waits() -> bool:
            return bool(app.state.relay.pending_seconds() == 0)

        await wait_until(nothing_waits, timeout=10)
        # Queued again by an operator (the runbook's statement): refused again, once.
        await count(database_url, "UPDATE outbox SET refused_at = NULL RETURNING 1")
        app.state.outbox.committed()

        async def refused_twice() -> bool:
            return bool(app.state.relay.refused == 2)

        await wait_until(refused_twice, timeout=10)
    assert await queued_messages(broker_settings) == 4
{%- endif %}


async def test_unreachable_broker_at_start_fails_fast_and_holds_no_transaction(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    """The first connect is bounded by the publish timeout; no transaction waits on it."""
    proxy = TcpProxy(broker_settings.url.get_secret_value())
    await proxy.start()
    proxy.cut()
    service = f"outbox-start-{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        database_url,
        service_name=service,
        broker=through_proxy(broker_settings, proxy, publish_timeout=1.0),
    )
    # A transaction waiting on the broker would sit idle for the connect attempt (a
    # second here); the relay's own claim is idle only between its statements.
    idle_in_transaction = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
        "AND state LIKE 'idle in transaction%' "
        "AND clock_timestamp() - xact_start > interval '0.5 seconds'"
    )
    try:
        async with serving(settings) as (app, _):
            await add_events(app, 2)
            broker_breaker = app.state.broker.breaker
            seen_in_transaction = 0

            async def broker_circuit_opened() -> bool:
                nonlocal seen_in_transaction
                seen_in_transaction += await count(database_url, idle_in_transaction, service)
                return bool(broker_breaker.state is CircuitState.OPEN)

            # Five connect attempts of at most a second each (the client alone would
            # retry one for about two minutes).
            await wait_until(broker_circuit_opened, timeout=30)
            assert seen_in_transaction == 0
            assert app.state.db.breaker.state is CircuitState.CLOSED
    finally:
        await proxy.stop()


def test_message_decodes_what_the_relay_sends() -> None:
    message = Message.decode(
        {
            "message-id": "0b0f3f0e-5f5e-4a8e-9a55-8f6e3cc1b2a1",
            "message-type": "item.created",
            "message-time": "2026-01-01T00:00:00+00:00",
            "x-request-id": "abc",
        },
        b'{"id": 1}',
    )
    assert message.type == "item.created"
    assert message.payload == {"id": 1}
    assert message.request_id == "abc"
