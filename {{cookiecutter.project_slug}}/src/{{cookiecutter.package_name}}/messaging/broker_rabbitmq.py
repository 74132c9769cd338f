"""The broker, RabbitMQ edition (FastStream over aio-pika); `broker.py` in the project.

Topology, all named from `BROKER__PREFIX` (P), declared by every process that opens it:

* exchange `P.events` (topic): events are published with their type as routing key;
* queue `P.events`, bound with `#`: the worker consumes it, `concurrency` unacked at most;
* queue `P.retry`: a failed message is republished here with a per-message expiry (the
  backoff) and dead-lettered back into `P.events` when it expires;
* queue `P.dead`: messages that failed `max_deliveries` times, or could not be decoded,
  with the reason in the `x-dead-letter-reason` header.

The same public interface as the NATS edition: `Broker` (opened by `broker_lifespan`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from faststream.middlewares import AckPolicy
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage  # noqa: TC002 - FastStream reads the annotation at run time
from faststream.rabbit.schemas import Channel

from {{ cookiecutter.package_name }}.messaging.delivery import Delivery, settle
from {{ cookiecutter.package_name }}.messaging.envelope import DEAD_LETTER_REASON, Message

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.messaging.consumer import Consumer, ConsumerObserver
    from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings
    from {{ cookiecutter.package_name }}.resilience.breaker import CircuitBreaker

_ATTEMPT = "x-attempt"


class Broker:
    """Publish events; in the worker, consume them (see the module docstring)."""

    def __init__(self, settings: BrokerSettings, breaker: CircuitBreaker) -> None:
        """A broker object for `settings`; nothing is connected yet."""
        self.settings = settings
        self.breaker = breaker
        prefix = settings.prefix
        self.exchange = RabbitExchange(f"{prefix}.events", type=ExchangeType.TOPIC, durable=True)
        self.queue = RabbitQueue(f"{prefix}.events", durable=True, routing_key="#")
        self.retry_queue = RabbitQueue(
            f"{prefix}.retry",
            durable=True,
            arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.queue.name},
        )
        self.dead_queue = RabbitQueue(f"{prefix}.dead", durable=True)
        self.client = RabbitBroker(
            settings.url.get_secret_value(),
            graceful_timeout=settings.worker_shutdown_seconds,
            timeout=settings.publish_timeout,
            logger=None,  # the worker logs each message itself, as structured lines
        )
        self._connected = False
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        """Connect and declare the topology (once; again after a failed attempt)."""
        async with self._lock:
            if self._connected:
                return
            await self.client.connect()
            await self.client.declare_exchange(self.exchange)
            for queue in (self.retry_queue, self.dead_queue):
                await self.client.declare_queue(queue)
            declared = await self.client.declare_queue(self.queue)
            await declared.bind(self.exchange.name, routing_key="#")
            self._connected = True

    async def publish(self, message: Message) -> None:
        """Publish `message` and wait for the broker's confirm; the breaker guards it."""
        async with self.breaker.guard():
            await self.connect()
            await self.client.publish(
                message.body,
                exchange=self.exchange,
                routing_key=message.type,
                headers=dict(message.headers),
                message_id=str(message.id),
                message_type=message.type,
                timestamp=message.time,
                content_type="application/json",
                persist=True,
                timeout=self.settings.publish_timeout,
            )

    async def backlog(self) -> int:
        """Messages ready in the events queue (what KEDA scales the worker on)."""
        return await self._message_count(self.queue)

    async def dead_letter_count(self) -> int:
        """Messages waiting in the dead-letter queue."""
        return await self._message_count(self.dead_queue)

    async def _message_count(self, queue: RabbitQueue) -> int:
        await self.connect()
        declared = await self.client.declare_queue(queue)
        # Declared again (same arguments, a no-op) for a current count: the first
        # declaration's result is cached.
        result = await declared.declare(timeout=self.settings.publish_timeout)
        return int(result.message_count or 0)

    def subscribe(self, consumer: Consumer, observer: ConsumerObserver | None) -> None:
        """Consume the events queue with `consumer` (before `start`)."""
        settings = self.settings

        @self.client.subscriber(
            self.queue,
            self.exchange,
            channel=Channel(prefetch_count=settings.concurrency),
            ack_policy=AckPolicy.MANUAL,
        )
        async def on_message(message: RabbitMessage) -> None:
            raw = message.raw_message
            body = message.body
            headers = dict(raw.headers or {})
            attempt = int(str(headers.get(_ATTEMPT, 1)))

            async def retry(delay: float) -> None:
                await self.client.publish(
                    raw.body,
                    queue=self.retry_queue.name,
                    headers={**headers, _ATTEMPT: attempt + 1},
                    message_id=raw.message_id,
                    content_type=raw.content_type,
                    expiration=delay,
                    persist=True,
                )
                await message.ack()

            async def dead_letter(reason: str) -> None:
                await self.client.publish(
                    raw.body,
                    queue=self.dead_queue.name,
                    headers={**headers, DEAD_LETTER_REASON: reason[:1000]},
                    message_id=raw.message_id,
                    content_type=raw.content_type,
                    persist=True,
                )
                await message.ack()

            await settle(
                Delivery(
                    headers, body, attempt, ack=message.ack, retry=retry, dead_letter=dead_letter
                ),
                consumer,
                settings,
                observer,
            )

    async def start(self) -> None:
        """Start consuming (after `subscribe`)."""
        await self.connect()
        await self.client.start()

    async def close(self) -> None:
        """Stop consuming (in-flight handlers get `worker_shutdown_seconds`), disconnect."""
        await self.client.stop()
