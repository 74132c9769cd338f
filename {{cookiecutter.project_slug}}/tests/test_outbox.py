"""The outbox and its relay against a real PostgreSQL and a real broker."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from {{ cookiecutter.package_name }}.messaging.envelope import Message
from {{ cookiecutter.package_name }}.observability.logs.context import request_id_var
from tests.conftest import make_settings, serving
from tests.messaging import (
    count,
    wait_for_count,
)
from tests.tcp_proxy import TcpProxy

if TYPE_CHECKING:
    from fastapi import FastAPI

    from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings

PENDING = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
SENT = "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"


async def add_events(app: FastAPI, count_: int) -> None:
    """Write `count_` events in one transaction, as a request handler would."""
    async with app.state.db.connection() as connection, connection.transaction():
        for number in range(count_):
            await app.state.outbox.add(connection, "test.event", {"number": number})
    app.state.outbox.committed()


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
    parts = urlsplit(broker_settings.url.get_secret_value())
    proxy = TcpProxy(broker_settings.url.get_secret_value())
    await proxy.start()
    netloc = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
    through_proxy = urlunsplit(parts._replace(netloc=f"{netloc}:{proxy.port}"))
    settings = make_settings(
        database_url,
        broker=broker_settings.model_copy(
            update={"url": SecretStr(through_proxy), "publish_timeout": 1.0}
        ),
    )
    try:
        async with serving(settings) as (app, _):
            await add_events(app, 3)
            await wait_for_count(database_url, SENT, 3)
            proxy.cut()
            await add_events(app, 4)  # the writes succeed while the broker is unreachable
            await asyncio.sleep(1.5)
            assert await count(database_url, PENDING) == 4
            proxy.restore()
            await wait_for_count(database_url, SENT, 7, timeout=60)
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
