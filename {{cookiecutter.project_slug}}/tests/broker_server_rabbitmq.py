"""A real RabbitMQ for the tests: `RABBITMQ_URL`, or a clear failure saying how to get one.

There is no RabbitMQ in a wheel; each run uses its own exchange and queue names (a random
prefix), so runs sharing a server never see each other's messages.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING

import aio_pika

if TYPE_CHECKING:
    from collections.abc import Iterator

    from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings

URL_VARIABLE = "RABBITMQ_URL"


@contextmanager
def broker_server() -> Iterator[str]:
    """Yield the URL of the RabbitMQ server to test against."""
    configured = os.environ.get(URL_VARIABLE)
    if not configured:
        msg = (
            "RABBITMQ_URL is not set: the messaging tests need a real RabbitMQ. Start one, "
            "e.g. `docker run -d -p 5672:5672 rabbitmq:4-alpine` or `apt-get install "
            "rabbitmq-server`, then `export RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/`."
        )
        raise RuntimeError(msg)
    yield configured


async def delete_topology(settings: BrokerSettings) -> None:
    """Delete this test run's exchange and queues."""
    connection = await aio_pika.connect(settings.url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        for suffix in ("events", "retry", "dead"):
            await channel.queue_delete(f"{settings.prefix}.{suffix}")
        await channel.exchange_delete(f"{settings.prefix}.events")


async def queued_messages(settings: BrokerSettings) -> int:
    """How many messages wait in the events queue."""
    connection = await aio_pika.connect(settings.url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{settings.prefix}.events", passive=True)
        result = queue.declaration_result
        return int(result.message_count or 0)
