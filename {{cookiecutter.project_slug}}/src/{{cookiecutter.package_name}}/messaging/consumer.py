"""Handling messages: idempotently, in batches, each in its caller's trace and request ids.

A handler takes the messages of its type that arrived together (one or more) on one
connection, inside the transaction that records them as processed: one round trip can
then do the work of a batch (`executemany`). The broker module decodes deliveries and
calls `Consumer.process_batch` (or `Consumer.process` for one message); what to do
with each delivery afterwards (ack, retry later, dead-letter) is decided in
`messaging.delivery`.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import TYPE_CHECKING, Protocol

import structlog

from {{ cookiecutter.package_name }}.observability.logs.context import request_id_var, user_id_var

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence
    from contextlib import AbstractContextManager

    from {{ cookiecutter.package_name }}.database.pool import Connection, Database
    from {{ cookiecutter.package_name }}.messaging.envelope import Message

    Handler = Callable[[Connection, Sequence[Message]], Awaitable[None]]
    TraceContinuation = Callable[[Mapping[str, str], str], AbstractContextManager[object]]

log = structlog.get_logger(__name__)

_RECORD = (
    "INSERT INTO processed_messages (consumer, message_id) VALUES ($1, $2) "
    "ON CONFLICT DO NOTHING RETURNING true"
)
_RECORD_MANY = (
    "INSERT INTO processed_messages (consumer, message_id) "
    "SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING RETURNING message_id"
)


class ConsumerObserver(Protocol):
    """Metrics for consumed messages (`messaging.metrics.ConsumerMetrics`)."""

    def handled(self, message_type: str, outcome: str, seconds: float) -> None:
        """One message finished with `outcome`: handled, duplicate, ignored or failed."""

    def retried(self, message_type: str) -> None:
        """A failed message was scheduled for another delivery."""

    def dead_lettered(self, message_type: str) -> None:
        """A message was moved to the dead-letter queue."""


class Consumer:
    """Runs the handler for a message's type exactly once per message id."""

    def __init__(
        self,
        db: Database,
        handlers: Mapping[str, Handler],
        *,
        name: str,
        continue_trace: TraceContinuation | None = None,
        observer: ConsumerObserver | None = None,
    ) -> None:
        """`handlers` by message type; `name` keys the processed-message records."""
        self._db = db
        self._handlers = handlers
        self._name = name
        self._continue_trace = continue_trace
        self._observer = observer

    async def process(self, message: Message) -> str:
        """Handle `message` once; return `handled`, `duplicate` or `ignored`; raise on failure.

        The message id is recorded in the handler's transaction: if the handler fails,
        neither its effect nor the record stays, and a redelivery runs it again; once
        committed, a redelivery finds the record and does nothing.
        """
        request_token = request_id_var.set(message.request_id)
        user_token = user_id_var.set(message.user_id)
        span = (
            self._continue_trace(message.headers, f"consume {message.type}")
            if self._continue_trace is not None
            else nullcontext()
        )
        started = time.perf_counter()
        outcome = "failed"
        try:
            with span:
                outcome = await self._run_once(message)
                log.info(
                    "message_processed",
                    message_id=str(message.id),
                    message_type=message.type,
                    outcome=outcome,
                )
                return outcome
        except Exception as exc:
            log.warning(
                "message_failed",
                message_id=str(message.id),
                message_type=message.type,
                error=str(exc) or type(exc).__name__,
            )
            raise
        finally:
            if self._observer is not None:
                self._observer.handled(message.type, outcome, time.perf_counter() - started)
            user_id_var.reset(user_token)
            request_id_var.reset(request_token)

    async def process_batch(self, messages: Sequence[Message]) -> None:
        """Handle `messages` in one transaction, each message id once; raise if any fails.

        All or nothing: when a handler (or the commit) fails, no effect and no record of
        the batch stays, and the caller handles the messages one by one with `process`.
        """
        started = time.perf_counter()
        outcomes = await self._run_batch(messages)
        seconds = (time.perf_counter() - started) / len(messages)
        for message, outcome in zip(messages, outcomes, strict=True):
            self._finished(message, outcome, seconds)

    async def _run_batch(self, messages: Sequence[Message]) -> list[str]:
        ids = [message.id for message in messages if message.type in self._handlers]
        if not ids:
            return ["ignored"] * len(messages)
        async with self._db.connection("consume") as connection, connection.transaction():
            fresh = {row[0] for row in await connection.fetch(_RECORD_MANY, self._name, ids)}
            outcomes: list[str] = []
            by_type: dict[str, list[Message]] = {}
            for message in messages:
                if message.type not in self._handlers:
                    outcomes.append("ignored")
                elif message.id in fresh:
                    fresh.discard(message.id)  # the same id twice in one batch: once
                    by_type.setdefault(message.type, []).append(message)
                    outcomes.append("handled")
                else:
                    outcomes.append("duplicate")
            for message_type, batch in by_type.items():
                await self._handlers[message_type](connection, batch)
        return outcomes

    def _finished(self, message: Message, outcome: str, seconds: float) -> None:
        """Log (in the message's trace, with its request and user ids) and count it."""
        request_token = request_id_var.set(message.request_id)
        user_token = user_id_var.set(message.user_id)
        span = (
            self._continue_trace(message.headers, f"consume {message.type}")
            if self._continue_trace is not None
            else nullcontext()
        )
        try:
            with span:
                log.info(
                    "message_processed",
                    message_id=str(message.id),
                    message_type=message.type,
                    outcome=outcome,
                )
        finally:
            user_id_var.reset(user_token)
            request_id_var.reset(request_token)
        if self._observer is not None:
            self._observer.handled(message.type, outcome, seconds)

    async def _run_once(self, message: Message) -> str:
        handler = self._handlers.get(message.type)
        if handler is None:
            return "ignored"  # a type this service publishes but does not consume itself
        async with self._db.connection("consume") as connection, connection.transaction():
            if not await connection.fetchval(_RECORD, self._name, message.id):
                return "duplicate"
            await handler(connection, [message])
        return "handled"
