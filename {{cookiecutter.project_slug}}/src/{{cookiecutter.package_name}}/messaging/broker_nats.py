"""The broker, NATS JetStream edition (FastStream over nats-py); `broker.py` in the project.

Streams and subjects, all named from `BROKER__PREFIX` (P), declared by every process that
opens it:

* stream `P_events`, subjects `P.events.>`: events are published to `P.events.<type>`
  with `Nats-Msg-Id` set to the message id, so JetStream drops a duplicate publish (a
  relay retry after a lost ack) within its duplicate window;
* durable pull consumer `P_worker`: the worker fetches batches, at most `concurrency`
  unacknowledged messages; a failed message is negatively acknowledged with the backoff
  as delay;
* stream `P_dead`, subjects `P.dead.>`: messages that failed `max_deliveries` times, or
  could not be decoded, with the reason in the `x-dead-letter-reason` header.

The same public interface as the RabbitMQ edition: `Broker` (opened by `broker_lifespan`).
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import TYPE_CHECKING

import structlog
from faststream.nats import JStream, NatsBroker
from nats.errors import MaxPayloadError
from nats.js.api import AckPolicy as NatsAckPolicy
from nats.js.api import ConsumerConfig as NatsConsumerConfig
from nats.js.api import StreamConfig

from {{ cookiecutter.package_name }}.messaging.delivery import Delivery, settle_batch
from {{ cookiecutter.package_name }}.messaging.envelope import (
    DEAD_LETTER_REASON,
    Message,
    MessageRefusedError,
    PublishError,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

    from {{ cookiecutter.package_name }}.messaging.consumer import Consumer, ConsumerObserver
    from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings
    from {{ cookiecutter.package_name }}.resilience.breaker import CircuitBreaker

log = structlog.get_logger(__name__)

# JetStream stops redelivering after this many deliveries even if the worker died every
# time (a crash, not a handler error): two more than the worker's own limit.
_EXTRA_DELIVERIES = 2
# How long an idle fetch waits for messages; also how long stopping waits for one.
_FETCH_SECONDS = 0.1


class Broker:
    """Publish events; in the worker, consume them (see the module docstring)."""

    def __init__(self, settings: BrokerSettings, breaker: CircuitBreaker) -> None:
        """A broker object for `settings`; nothing is connected yet."""
        self.settings = settings
        self.breaker = breaker
        prefix = settings.prefix
        self.subject = f"{prefix}.events"
        self.dead_subject = f"{prefix}.dead"
        self.stream = JStream(f"{prefix}_events", subjects=[f"{self.subject}.>"])
        self.dead_stream = f"{prefix}_dead"
        self.durable = f"{prefix}_worker"
        self.client = NatsBroker(
            settings.url.get_secret_value(),
            graceful_timeout=settings.worker_shutdown_seconds,
            # Once connected, reconnect for as long as it takes (publishes fail by their
            # timeout meanwhile); a first connect is bounded in `connect`.
            max_reconnect_attempts=-1,
            connect_timeout=max(1, round(settings.publish_timeout)),
            logger=None,  # the worker logs each message itself, as structured lines
        )
        self._connected = False
        self._lock = asyncio.Lock()
        self._consumer: tuple[Consumer, ConsumerObserver | None] | None = None
        self._consuming: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def connect(self) -> None:
        """Connect and declare the streams (once; again after a failed attempt)."""
        async with self._lock:
            if self._connected:
                return
            # Within the publish timeout: unbounded, the client would retry for minutes.
            async with asyncio.timeout(self.settings.publish_timeout):
                await self.client.connect()
                js = self.client.connection.jetstream(timeout=self.settings.publish_timeout)
                await js.add_stream(
                    StreamConfig(name=self.stream.name, subjects=[f"{self.subject}.>"])
                )
                await js.add_stream(
                    StreamConfig(name=self.dead_stream, subjects=[f"{self.dead_subject}.>"])
                )
            self._connected = True

    async def publish(self, messages: Sequence[Message]) -> None:
        """Publish `messages` in order, their acks awaited together; the breaker guards it.

        Raises `PublishError` (naming the messages JetStream took, and those over the server's
        `max_payload`, which it never will) unless it took all.
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
        try:
            await self.client.publish(
                message.body,
                f"{self.subject}.{message.type}",
                headers={**message.headers, "Nats-Msg-Id": str(message.id)},
                stream=self.stream.name,
                timeout=self.settings.publish_timeout,
            )
        except MaxPayloadError as exc:
            # Refused before sending, and would be on every retry.
            limit = self.client.connection.max_payload
            msg = f"larger than the server's max_payload ({limit} bytes)"
            raise MessageRefusedError(msg) from exc

    async def backlog(self) -> int:
        """Messages the worker consumer has not acknowledged yet (what KEDA scales on)."""
        js = self.client.connection.jetstream()
        info = await js.consumer_info(self.stream.name, self.durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def dead_letter_count(self) -> int:
        """Messages in the dead-letter stream."""
        js = self.client.connection.jetstream()
        info = await js.stream_info(self.dead_stream)
        return int(info.state.messages)

    def subscribe(self, consumer: Consumer, observer: ConsumerObserver | None) -> None:
        """Consume the events stream with `consumer` (before `start`)."""
        self._consumer = (consumer, observer)

    async def _consume(
        self,
        subscription: JetStreamContext.PullSubscription,
        consumer: Consumer,
        observer: ConsumerObserver | None,
    ) -> None:
        """Fetch batches and settle each in a task, at most `concurrency` messages held.

        Hand-written on nats-py's pull subscription (on FastStream's connection) because
        FastStream fails two measured needs. Its per-message subscriber spends ~0.5 ms of
        CPU per message in its handler call (1,294 events/s at 0.56 ms of worker CPU per
        event in bench/outbox.py; this loop: 0.12-0.14 ms). Its batch subscriber
        (`PullSub(batch=True)`) left messages unacknowledged until the ack wait in about
        one test run in five; its loop drops a fetched batch unsettled when stopping or
        on a connection error, and refetches with what is left of its timeout, which
        sends pull requests whose expiry can be zero or less.
        """
        settings = self.settings
        # Two batches in flight: one fetched while the other is in the database.
        batch_size = max(1, settings.concurrency // 2)
        held = 0
        room = asyncio.Event()
        running: set[asyncio.Task[None]] = set()

        async def settle(messages: list[Msg]) -> None:
            nonlocal held
            try:
                await settle_batch(
                    [self._delivery(message) for message in messages], consumer, settings, observer
                )
            except Exception as exc:  # noqa: BLE001 - unsettled messages come back after the ack wait
                log.warning("message_batch_unsettled", size=len(messages), error=str(exc))
            finally:
                held -= len(messages)
                room.set()

        try:
            while not self._stopping.is_set():
                if held >= settings.concurrency:
                    room.clear()
                    await room.wait()
                    continue
                try:
                    # Returns what is there at once; when idle, waits up to the timeout.
                    messages = await subscription.fetch(
                        min(batch_size, settings.concurrency - held), timeout=_FETCH_SECONDS
                    )
                except TimeoutError:
                    continue  # after waiting the timeout: nothing came
                except Exception as exc:  # noqa: BLE001 - the worker outlives any failure
                    # Disconnected, or the consumer's ack window is full (other replicas).
                    log.warning("message_fetch_failed", error=str(exc) or type(exc).__name__)
                    await asyncio.sleep(_FETCH_SECONDS)
                    continue
                if not messages:
                    continue
                # Settled even when stopping: fetched means delivered to this worker.
                held += len(messages)
                task = asyncio.create_task(settle(messages), name="consume-batch")
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            if running:
                # Shielded: a cancelled consumer still lets its batches finish.
                await asyncio.shield(asyncio.gather(*running, return_exceptions=True))
            with suppress(Exception):
                await subscription.unsubscribe()

    def _delivery(self, message: Msg) -> Delivery:
        async def dead_letter(reason: str) -> None:
            await self.client.publish(
                message.data,
                message.subject.replace(self.subject, self.dead_subject, 1),
                headers={**(message.headers or {}), DEAD_LETTER_REASON: reason[:1000]},
                stream=self.dead_stream,
                timeout=self.settings.publish_timeout,
            )
            await message.term()  # JetStream never redelivers it

        return Delivery(
            message.headers or {},
            message.data,
            message.metadata.num_delivered or 1,
            ack=message.ack,
            retry=message.nak,  # with the backoff as delay
            dead_letter=dead_letter,
        )

    async def start(self) -> None:
        """Declare the worker's durable consumer and start consuming (after `subscribe`)."""
        await self.connect()
        if self._consumer is None:
            return
        settings = self.settings
        js = self.client.connection.jetstream(timeout=settings.publish_timeout)
        # Created, or updated to the current settings.
        await js.add_consumer(
            self.stream.name,
            NatsConsumerConfig(
                durable_name=self.durable,
                filter_subject=f"{self.subject}.>",
                ack_policy=NatsAckPolicy.EXPLICIT,
                ack_wait=settings.ack_wait_seconds,
                max_deliver=settings.max_deliveries + _EXTRA_DELIVERIES,
                max_ack_pending=settings.concurrency,
            ),
        )
        subscription = await js.pull_subscribe_bind(self.durable, self.stream.name)
        self._consuming = asyncio.create_task(
            self._consume(subscription, *self._consumer), name="consume"
        )

    async def close(self) -> None:
        """Stop consuming (in-flight handlers get `worker_shutdown_seconds`), disconnect."""
        if self._consuming is not None:
            self._stopping.set()
            try:
                async with asyncio.timeout(self.settings.worker_shutdown_seconds):
                    await asyncio.shield(self._consuming)
            except TimeoutError:
                # Unacknowledged messages are delivered again after the ack wait.
                self._consuming.cancel()
                with suppress(asyncio.CancelledError):
                    await self._consuming
            with suppress(Exception):  # the last acks reach the server before the close
                await self.client.connection.flush(max(1, round(self.settings.publish_timeout)))
        await self.client.stop()
