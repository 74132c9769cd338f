"""The broker, NATS JetStream edition (FastStream over nats-py); `broker.py` in the project.

Streams and subjects, all named from `BROKER__PREFIX` (P), declared by every process that
opens it:

* stream `P_events`, subjects `P.events.>`: events are published to `P.events.<type>`
  with `Nats-Msg-Id` set to the message id, so JetStream drops a duplicate publish (a
  relay retry after a lost ack) within its duplicate window;
* durable pull consumer `P_worker`: at most `concurrency` unacknowledged messages; a failed
  message is negatively acknowledged with the backoff as delay;
* stream `P_dead`, subjects `P.dead.>`: messages that failed `max_deliveries` times, or
  could not be decoded, with the reason in the `x-dead-letter-reason` header.

The same public interface as the RabbitMQ edition: `Broker` (opened by `broker_lifespan`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from faststream.middlewares import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage  # noqa: TC002 - FastStream reads the annotation at run time
from nats.js.api import StreamConfig

from {{ cookiecutter.package_name }}.messaging.delivery import Delivery, settle
from {{ cookiecutter.package_name }}.messaging.envelope import DEAD_LETTER_REASON, Message

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.messaging.consumer import Consumer, ConsumerObserver
    from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings
    from {{ cookiecutter.package_name }}.resilience.breaker import CircuitBreaker

_ACK_WAIT_SECONDS = 30.0
# JetStream stops redelivering after this many deliveries even if the worker died every
# time (a crash, not a handler error): two more than the worker's own limit.
_EXTRA_DELIVERIES = 2


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
            logger=None,  # the worker logs each message itself, as structured lines
        )
        self._connected = False
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        """Connect and declare the streams (once; again after a failed attempt)."""
        async with self._lock:
            if self._connected:
                return
            await self.client.connect()
            js = self.client.connection.jetstream(timeout=self.settings.publish_timeout)
            await js.add_stream(StreamConfig(name=self.stream.name, subjects=[f"{self.subject}.>"]))
            await js.add_stream(
                StreamConfig(name=self.dead_stream, subjects=[f"{self.dead_subject}.>"])
            )
            self._connected = True

    async def publish(self, message: Message) -> None:
        """Publish `message` and wait for JetStream's ack; the breaker guards it."""
        async with self.breaker.guard():
            await self.connect()
            await self.client.publish(
                message.body,
                f"{self.subject}.{message.type}",
                headers={**message.headers, "Nats-Msg-Id": str(message.id)},
                stream=self.stream.name,
                timeout=self.settings.publish_timeout,
            )

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
        settings = self.settings

        @self.client.subscriber(
            f"{self.subject}.>",
            stream=self.stream,
            durable=self.durable,
            pull_sub=PullSub(batch_size=settings.concurrency, timeout=1.0),
            config=ConsumerConfig(
                ack_wait=_ACK_WAIT_SECONDS,
                max_deliver=settings.max_deliveries + _EXTRA_DELIVERIES,
                max_ack_pending=settings.concurrency,
            ),
            max_workers=settings.concurrency,
            ack_policy=AckPolicy.MANUAL,
        )
        async def on_message(message: NatsMessage) -> None:
            raw = message.raw_message
            body = message.body
            headers = dict(raw.headers or {})

            async def retry(delay: float) -> None:
                await message.nack(delay=delay)

            async def dead_letter(reason: str) -> None:
                await self.client.publish(
                    raw.data,
                    raw.subject.replace(self.subject, self.dead_subject, 1),
                    headers={**headers, DEAD_LETTER_REASON: reason[:1000]},
                    stream=self.dead_stream,
                    timeout=settings.publish_timeout,
                )
                await message.reject()  # TERM: JetStream never redelivers it

            await settle(
                Delivery(
                    headers,
                    body,
                    raw.metadata.num_delivered or 1,
                    ack=message.ack,
                    retry=retry,
                    dead_letter=dead_letter,
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
