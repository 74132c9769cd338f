"""Handling one message: idempotently, in the caller's trace, with its request and user ids.

The broker module decodes a delivery and calls `Consumer.process`; what to do with the
delivery afterwards (ack, retry later, dead-letter) is decided from its outcome there.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import TYPE_CHECKING, Protocol

import structlog

from {{ cookiecutter.package_name }}.observability.logs.context import request_id_var, user_id_var

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from contextlib import AbstractContextManager

    from {{ cookiecutter.package_name }}.database.pool import Connection, Database
    from {{ cookiecutter.package_name }}.messaging.envelope import Message

    Handler = Callable[[Connection, Message], Awaitable[None]]
    TraceContinuation = Callable[[Mapping[str, str], str], AbstractContextManager[object]]

log = structlog.get_logger(__name__)

_RECORD = (
    "INSERT INTO processed_messages (consumer, message_id) VALUES ($1, $2) "
    "ON CONFLICT DO NOTHING RETURNING true"
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

    async def _run_once(self, message: Message) -> str:
        handler = self._handlers.get(message.type)
        if handler is None:
            return "ignored"  # a type this service publishes but does not consume itself
        async with self._db.connection("consume") as connection, connection.transaction():
            if not await connection.fetchval(_RECORD, self._name, message.id):
                return "duplicate"
            await handler(connection, message)
        return "handled"
