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
from collections import deque
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import structlog
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue

from {{ cookiecutter.package_name }}.messaging.delivery import Delivery, settle_batch
from {{ cookiecutter.package_name }}.messaging.envelope import DEAD_LETTER_REASON, Message, PublishError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

    from {{ cookiecutter.package_name }}.messaging.consumer import Consumer, ConsumerObserver
    from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings
    from {{ cookiecutter.package_name }}.resilience.breaker import CircuitBreaker

log = structlog.get_logger(__name__)

_ATTEMPT = "x-attempt"


class _Received:
    """A delivery, and whether it was settled (handled, retried or dead-lettered)."""

    __slots__ = ("raw", "settled")

    def __init__(self, raw: AbstractIncomingMessage) -> None:
        self.raw = raw
        self.settled = False


class _Batcher:
    """Gathers the deliveries that arrive while a batch is being handled into the next one.

    The broker adds deliveries one at a time as they arrive (at most `concurrency`
    unacknowledged); under load a batch holds what arrived while the previous one ran,
    when idle a message is handled at once (no timer).
    """

    def __init__(
        self,
        consumer: Consumer,
        settings: BrokerSettings,
        observer: ConsumerObserver | None,
        after_batch: Callable[[int], Awaitable[None]],
    ) -> None:
        """Settle with `consumer`, at most `settings.concurrency` deliveries per batch.

        `after_batch(n)` runs after each batch, with the number of deliveries it held
        (the next `n` added), whether or not settling them failed.
        """
        self._consumer = consumer
        self._settings = settings
        self._observer = observer
        self._after_batch = after_batch
        self._pending: list[Delivery] = []
        self._flushing: asyncio.Task[None] | None = None

    def add(self, delivery: Delivery) -> None:
        """Settle `delivery` in the next batch."""
        self._pending.append(delivery)
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush(), name="consume-batch")

    async def drain(self) -> None:
        """Return once every delivery added so far is settled."""
        while self._flushing is not None:
            # Shielded: a cancelled caller leaves the batch in flight to finish.
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # the deliveries of one read arrive in the same loop turn
            size = self._settings.concurrency
            while self._pending:
                batch, self._pending = self._pending[:size], self._pending[size:]
                try:
                    await settle_batch(batch, self._consumer, self._settings, self._observer)
                except Exception as exc:  # noqa: BLE001 - the broker delivers them again
                    log.warning("message_batch_unsettled", size=len(batch), error=str(exc))
                try:
                    await self._after_batch(len(batch))
                except Exception as exc:  # noqa: BLE001 - the broker delivers them again
                    log.warning("message_ack_failed", size=len(batch), error=str(exc))
        finally:
            self._flushing = None


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
        self._batcher: _Batcher | None = None
        self._received: deque[_Received] = deque()
        self._consuming: tuple[AbstractQueue, str] | None = None

    async def connect(self) -> None:
        """Connect and declare the topology (once; again after a failed attempt)."""
        async with self._lock:
            if self._connected:
                return
            async with asyncio.timeout(self.settings.publish_timeout):
                await self.client.connect()
                await self.client.declare_exchange(self.exchange)
                for queue in (self.retry_queue, self.dead_queue):
                    await self.client.declare_queue(queue)
                declared = await self.client.declare_queue(self.queue)
                await declared.bind(self.exchange.name, routing_key="#")
            self._connected = True

    async def publish(self, messages: Sequence[Message]) -> None:
        """Publish `messages` in order, their confirms awaited together; the breaker guards it.

        Raises `PublishError` (naming the messages the broker took) unless it took all.
        None is told apart as refused for good: RabbitMQ refuses a message only past its
        `max_message_size` (128 MiB by default), by closing the channel, which fails the
        rest of the batch as well (docs/runbook.md, OutboxNotPublishing, says what to do).
        """
        async with self.breaker.guard():
            await self.connect()
            results = await asyncio.gather(
                *(self._publish(message) for message in messages), return_exceptions=True
            )
            error = PublishError.of_batch(messages, results)
            if error is not None:
                raise error

    async def _publish(self, message: Message) -> None:
        # aio-pika waits for a confirm past its own timeout on a stalled connection.
        async with asyncio.timeout(self.settings.publish_timeout):
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

    async def _publish_again(
        self,
        raw: AbstractIncomingMessage,
        queue: str,
        headers: dict[str, Any],
        expiration: float | None = None,
    ) -> None:
        """Publish `raw` again to `queue`, the confirm awaited."""
        await self.client.publish(
            raw.body,
            queue=queue,
            headers=headers,
            message_id=raw.message_id,
            content_type=raw.content_type,
            expiration=expiration,
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
        self._batcher = _Batcher(consumer, self.settings, observer, after_batch=self._acknowledge)

    async def _on_message(self, raw: AbstractIncomingMessage) -> None:
        assert self._batcher is not None  # noqa: S101 - set by `subscribe`
        headers = dict(raw.headers or {})
        try:
            attempt = max(1, int(str(headers.get(_ATTEMPT, 1))))
        except ValueError:
            attempt = 1  # not written by `retry` below: a publisher's own header
        # Queued only once nothing can fail before the batcher takes it: `_acknowledge`
        # pairs this queue with the batches.
        received = _Received(raw)
        self._received.append(received)

        async def ack() -> None:
            received.settled = True  # acknowledged with its batch, in `_acknowledge`

        async def retry(delay: float) -> None:
            await self._publish_again(
                raw, self.retry_queue.name, {**headers, _ATTEMPT: attempt + 1}, expiration=delay
            )
            received.settled = True

        async def dead_letter(reason: str) -> None:
            await self._publish_again(
                raw, self.dead_queue.name, {**headers, DEAD_LETTER_REASON: reason[:1000]}
            )
            received.settled = True

        self._batcher.add(
            Delivery(headers, raw.body, attempt, ack=ack, retry=retry, dead_letter=dead_letter)
        )

    async def _acknowledge(self, size: int) -> None:
        """Acknowledge the next `size` deliveries (a batch) with one frame; requeue the rest.

        One `basic.ack` with `multiple` per batch instead of one per message: a frame
        written per message was a quarter of the worker's CPU (py-spy, a worker draining
        a preloaded queue). Batches are settled in arrival order, so every earlier
        delivery is settled by now.
        """
        last: AbstractIncomingMessage | None = None
        for _ in range(size):
            received = self._received.popleft()
            if received.settled:
                last = received.raw
            else:  # its batch failed before settling it (a broker error)
                with suppress(Exception):
                    await received.raw.nack(requeue=True)
        if last is not None:
            await last.ack(multiple=True)

    async def start(self) -> None:
        """Start consuming (after `subscribe`).

        Consumed through aio-pika on FastStream's connection, a prefetch window of
        `concurrency` feeding batches, because FastStream's subscriber calls its handler
        once per message at ~0.5 ms of CPU each (bench/outbox.py: 0.73 ms of worker CPU
        per event with it, 0.24-0.27 ms this way).
        """
        await self.connect()
        connection = await self.client.connect()
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.settings.concurrency)
        queue = await channel.get_queue(self.queue.name, ensure=False)
        self._consuming = (queue, await queue.consume(self._on_message))

    async def close(self) -> None:
        """Stop consuming (in-flight handlers get `worker_shutdown_seconds`), disconnect."""
        if self._consuming is not None:
            queue, tag = self._consuming
            with suppress(Exception):  # the connection is gone: unacked messages come back
                await queue.cancel(tag, timeout=self.settings.publish_timeout)
        if self._batcher is not None:
            # Unacknowledged messages go back to the queue when the connection closes.
            with suppress(TimeoutError):
                async with asyncio.timeout(self.settings.worker_shutdown_seconds):
                    await self._batcher.drain()
        await self.client.stop()
