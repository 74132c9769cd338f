"""Item events end to end in one process: API -> outbox -> broker -> worker -> database."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit
{% if cookiecutter.broker == "nats" %}
import nats
{%- endif %}
from pydantic import SecretStr

from {{ cookiecutter.package_name }}.app import create_worker
from {{ cookiecutter.package_name }}.items.events import HANDLERS
from {{ cookiecutter.package_name }}.messaging.broker_lifespan import open_broker
from {{ cookiecutter.package_name }}.messaging.consumer import Consumer
from {{ cookiecutter.package_name }}.messaging.envelope import MESSAGE_ID, MESSAGE_TIME, MESSAGE_TYPE, Message
from tests.conftest import make_settings, serving
from tests.messaging import count, wait_for_count
from tests.tcp_proxy import TcpProxy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings
    from {{ cookiecutter.package_name }}.settings import Settings

AUDITED = "SELECT count(*) FROM item_audit"


@asynccontextmanager
async def worker(settings: Settings) -> AsyncIterator[None]:
    """The worker app with its lifespan running (consuming) in this process."""
    app = create_worker(settings)
    async with app.router.lifespan_context(app):
        yield


def item_created(payload: dict[str, object], message_id: uuid.UUID | None = None) -> Message:
    message_id = message_id or uuid.uuid4()
    now = datetime.now(UTC)
    headers = {
        MESSAGE_ID: str(message_id),
        MESSAGE_TYPE: "item.created",
        MESSAGE_TIME: now.isoformat(),
        "x-request-id": "req-test",
    }
    return Message(message_id, "item.created", now, payload, headers)


async def test_created_item_is_audited_by_the_worker(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    settings = make_settings(database_url, broker=broker_settings)
    async with serving(settings) as (_, client), worker(settings):
        response = await client.post(
            "/items",
            json={"name": "lamp", "price_cents": 100},
            headers={"X-Request-ID": "req-e2e-1"},
        )
        assert response.status_code == 201
        item_id = response.json()["id"]
        await wait_for_count(database_url, AUDITED, 1)
        assert (
            await count(
                database_url,
                "SELECT count(*) FROM item_audit WHERE item_id = $1 AND request_id = 'req-e2e-1'",
                item_id,
            )
            == 1
        )
        # Updates and deletes are published too; this worker has no handler for them.
        assert (await client.patch(f"/items/{item_id}", json={"price_cents": 5})).status_code == 200
        assert (await client.delete(f"/items/{item_id}")).status_code == 204
        await wait_for_count(
            database_url, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL", 3
        )
    types = await count(database_url, "SELECT count(DISTINCT type) FROM outbox")
    assert types == 3


async def test_broker_outage_never_fails_a_request_and_loses_no_event(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    """Cut the broker while items are created: 201s, then every event handled once."""
    parts = urlsplit(broker_settings.url.get_secret_value())
    proxy = TcpProxy(broker_settings.url.get_secret_value())
    await proxy.start()
    host = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
    through_proxy = SecretStr(urlunsplit(parts._replace(netloc=f"{host}:{proxy.port}")))
    api = make_settings(
        database_url,
        broker=broker_settings.model_copy(update={"url": through_proxy, "publish_timeout": 1.0}),
    )
    settings = make_settings(database_url, broker=broker_settings)
    try:
        async with serving(api) as (_, client), worker(settings):
            proxy.cut()
            for number in range(10):
                body = {"name": f"cut{number}", "price_cents": 1}
                assert (await client.post("/items", json=body)).status_code == 201
            assert (
                await count(database_url, "SELECT count(*) FROM outbox WHERE published_at IS NULL")
                == 10
            )
            proxy.restore()
            await wait_for_count(database_url, AUDITED, 10, timeout=60)
    finally:
        await proxy.stop()
    assert await count(database_url, "SELECT count(DISTINCT item_id) FROM item_audit") == 10


async def test_rejected_write_emits_no_event(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    settings = make_settings(database_url, broker=broker_settings)
    async with serving(settings) as (_, client):
        assert (
            await client.post("/items", json={"name": "a", "price_cents": 1})
        ).status_code == 201
        assert (
            await client.post("/items", json={"name": "a", "price_cents": 1})
        ).status_code == 409
        assert (await client.patch("/items/999", json={"price_cents": 1})).status_code == 404
        assert (await client.delete("/items/999")).status_code == 404
        assert (
            await client.post("/items", json={"name": "b", "price_cents": -1})
        ).status_code == 422
    assert await count(database_url, "SELECT count(*) FROM outbox") == 1


async def test_every_message_of_a_batch_is_acknowledged(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    """Handled in batches, acknowledged: nothing is left for a worker to get again."""
    settings = make_settings(database_url, broker=broker_settings)
    total = 3 * broker_settings.concurrency + 7  # several batches, the last one partial
    async with open_broker(broker_settings) as broker:
        async with worker(settings):
            await broker.publish([item_created({"id": n, "name": f"n{n}"}) for n in range(total)])
            await wait_for_count(database_url, AUDITED, total)
        # The worker stopped: what it had not acknowledged would be waiting again.
        assert await broker.backlog() == 0
    assert await count(database_url, AUDITED) == total


async def test_redelivered_message_takes_effect_once(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    settings = make_settings(database_url, broker=broker_settings)
    message = item_created({"id": 7, "name": "twice"})
    async with serving(settings) as (app, _):
        consumer = Consumer(app.state.db, HANDLERS, name="test")
        assert await consumer.process(message) == "handled"
        assert await consumer.process(message) == "duplicate"
    assert await count(database_url, AUDITED) == 1
    # The same message published twice goes through the broker and the worker once.
    again = item_created({"id": 8, "name": "again"})
    async with open_broker(broker_settings) as broker, worker(settings):
        await broker.publish([again])
        await broker.publish([again])
        await wait_for_count(database_url, AUDITED, 2)
        await broker.publish([item_created({"id": 9, "name": "after"})])
        await wait_for_count(database_url, AUDITED, 3)
    assert await count(database_url, "SELECT count(*) FROM item_audit WHERE item_id = 8") == 1


async def test_failing_message_is_dead_lettered_and_the_worker_goes_on(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    settings = make_settings(database_url, broker=broker_settings)
    async with open_broker(broker_settings) as broker, worker(settings):
        await broker.publish([item_created({"no": "id"})])  # the handler fails on every delivery
        malformed = item_created({"id": 1, "name": "x"})
        await broker.publish(
            [Message(malformed.id, malformed.type, malformed.time, malformed.payload, {})]
        )
        await broker.publish([item_created({"id": 2, "name": "fine"})])
        await wait_for_count(database_url, AUDITED, 1)
        for _ in range(200):
            if await broker.dead_letter_count() == 2:
                break
            await asyncio.sleep(0.05)
        assert await broker.dead_letter_count() == 2
    assert await count(database_url, "SELECT count(*) FROM processed_messages") == 1
{%- if cookiecutter.broker == "nats" %}


async def test_messages_of_a_dead_worker_come_back_after_the_ack_wait(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    """What a killed worker held unacknowledged is delivered again after `ack_wait_seconds`."""
    broker_settings = broker_settings.model_copy(update={"ack_wait_seconds": 2.0})
    settings = make_settings(database_url, broker=broker_settings)
    prefix = broker_settings.prefix
    async with worker(settings):  # declares the durable consumer with its settings
        pass
    async with open_broker(broker_settings) as broker:
        await broker.publish([item_created({"id": n, "name": f"held{n}"}) for n in range(5)])
    # A worker that takes the messages and dies before acknowledging them.
    client = await nats.connect(broker_settings.url.get_secret_value())
    try:
        js = client.jetstream()
        info = await js.consumer_info(f"{prefix}_events", f"{prefix}_worker")
        assert info.config.ack_wait == 2.0
        held = await js.pull_subscribe_bind(f"{prefix}_worker", f"{prefix}_events")
        assert len(await held.fetch(5, timeout=5)) == 5
    finally:
        await client.close()
    async with worker(settings):
        # Well before the 30 s that used to be fixed.
        await wait_for_count(database_url, AUDITED, 5, timeout=12)
{%- endif %}
{%- if cookiecutter.broker == "rabbitmq" %}


async def test_a_foreign_attempt_header_counts_as_a_first_delivery(
    database_url: str, broker_settings: BrokerSettings
) -> None:
    """`x-attempt` is the worker's own retry count: a publisher's bogus one breaks nothing."""
    settings = make_settings(database_url, broker=broker_settings)
    odd = item_created({"id": 1, "name": "odd"})
    headers = {**odd.headers, "x-attempt": "not-a-number"}
    async with open_broker(broker_settings) as broker:
        async with worker(settings):
            await broker.publish([Message(odd.id, odd.type, odd.time, odd.payload, headers)])
            await broker.publish([item_created({"id": n, "name": f"n{n}"}) for n in range(2, 12)])
            await wait_for_count(database_url, AUDITED, 11)
        assert await broker.backlog() == 0
{%- endif %}
