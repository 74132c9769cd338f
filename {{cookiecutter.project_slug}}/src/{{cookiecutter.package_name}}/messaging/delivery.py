"""What happens to one delivery: decode, handle, then ack, retry later or dead-letter.

Broker-independent: the broker module supplies the three ways to settle a delivery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from {{ cookiecutter.package_name }}.messaging.envelope import MalformedMessageError, Message

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from {{ cookiecutter.package_name }}.messaging.consumer import Consumer, ConsumerObserver
    from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A received message and how to settle it with the broker."""

    headers: Mapping[str, Any]
    body: bytes
    attempt: int  # 1 for the first delivery
    ack: Callable[[], Awaitable[None]]
    retry: Callable[[float], Awaitable[None]]  # deliver again after that many seconds
    dead_letter: Callable[[str], Awaitable[None]]  # give up, with the reason


def retry_delay(attempt: int, settings: BrokerSettings) -> float:
    """Exponential backoff before delivery `attempt + 1`."""
    delay: float = settings.retry_backoff_seconds * 2 ** (attempt - 1)
    return min(delay, settings.retry_max_backoff_seconds)


async def settle(
    delivery: Delivery,
    consumer: Consumer,
    settings: BrokerSettings,
    observer: ConsumerObserver | None,
) -> None:
    """Handle `delivery` and settle it; acks only after the handler's transaction committed.

    A malformed message is dead-lettered at once; a failing one is retried with backoff
    until its `max_deliveries`-th attempt, then dead-lettered: it never blocks the queue.
    """
    try:
        message = Message.decode(dict(delivery.headers), delivery.body)
    except MalformedMessageError as exc:
        log.warning("message_dead_lettered", reason=str(exc))
        await delivery.dead_letter(str(exc))
        if observer is not None:
            observer.dead_lettered("malformed")
        return
    try:
        await consumer.process(message)
    except Exception as exc:  # noqa: BLE001 - any handler failure is retried or dead-lettered
        reason = f"{type(exc).__name__}: {exc}"
        if delivery.attempt >= settings.max_deliveries:
            log.warning(
                "message_dead_lettered",
                message_id=str(message.id),
                message_type=message.type,
                attempts=delivery.attempt,
                reason=reason,
            )
            await delivery.dead_letter(f"failed {delivery.attempt} times; last: {reason}")
            if observer is not None:
                observer.dead_lettered(message.type)
        else:
            await delivery.retry(retry_delay(delivery.attempt, settings))
            if observer is not None:
                observer.retried(message.type)
        return
    await delivery.ack()


async def settle_batch(
    deliveries: Sequence[Delivery],
    consumer: Consumer,
    settings: BrokerSettings,
    observer: ConsumerObserver | None,
) -> None:
    """Handle `deliveries` in one transaction and ack them; one by one if that fails.

    The batch is all or nothing (`Consumer.process_batch`): when any message fails, each
    is handled again on its own (`settle`), so only the failing one is retried or
    dead-lettered, and the others' effects still happen once.
    """
    decoded: list[tuple[Delivery, Message]] = []
    for delivery in deliveries:
        try:
            decoded.append((delivery, Message.decode(dict(delivery.headers), delivery.body)))
        except MalformedMessageError as exc:
            log.warning("message_dead_lettered", reason=str(exc))
            await delivery.dead_letter(str(exc))
            if observer is not None:
                observer.dead_lettered("malformed")
    if not decoded:
        return
    try:
        await consumer.process_batch([message for _, message in decoded])
    except Exception as exc:  # noqa: BLE001 - the batch is handled again, message by message
        log.info("message_batch_failed", size=len(decoded), error=str(exc) or type(exc).__name__)
        for delivery, _ in decoded:
            await settle(delivery, consumer, settings, observer)
        return
    for delivery, _ in decoded:
        await delivery.ack()
