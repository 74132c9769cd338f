"""The transactional outbox: events written with the state change, published by a relay.

`Outbox.add` inserts the event row on the caller's connection, inside the caller's
transaction: the event exists exactly when the change it describes was committed. The
`Relay` (one task in the API's lifespan) publishes the pending rows in id order and
marks them sent. A transaction-scoped advisory lock lets one relay of all the replicas
publish at a time, so rows are never published twice at once and keep their order. A
broker outage only makes the relay back off (the broker's breaker fails fast meanwhile):
API requests never wait for the broker.
"""

from __future__ import annotations

import asyncio
import random
import uuid
import zlib
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from {{ cookiecutter.package_name }}.messaging.envelope import (
    MESSAGE_ID,
    MESSAGE_TIME,
    MESSAGE_TYPE,
    REQUEST_ID,
    USER_ID,
    Message,
)
from {{ cookiecutter.package_name }}.observability.logs.context import request_id_var, user_id_var

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from {{ cookiecutter.package_name }}.database.pool import Connection, Database
    from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings

log = structlog.get_logger(__name__)

# One relay at a time per database and service (the key derives from the package name).
RELAY_LOCK_KEY = zlib.crc32(b"{{ cookiecutter.package_name }}.outbox.relay")
_PURGE_EVERY_SECONDS = 60.0

_INSERT = (
    "INSERT INTO outbox (message_id, type, payload, headers, created_at) "
    "VALUES ($1, $2, $3, $4, $5)"
)
_PENDING = (
    "SELECT id, message_id, type, payload, headers, created_at FROM outbox "
    "WHERE published_at IS NULL ORDER BY id LIMIT $1"
)


class Publisher(Protocol):
    """What the relay needs of the broker (`messaging.broker.Broker`)."""

    async def publish(self, message: Message) -> None:
        """Publish and wait until the broker has taken the message."""


class Outbox:
    """Writes events into the outbox table; the relay publishes them."""

    def __init__(self, trace_headers: Callable[[], dict[str, str]] | None = None) -> None:
        """`trace_headers` returns the current trace's `traceparent`/`tracestate`."""
        self._trace_headers = trace_headers
        self._written = asyncio.Event()

    async def add(self, connection: Connection, event_type: str, payload: dict[str, Any]) -> None:
        """Record `event_type` with `payload`, on the caller's connection and transaction."""
        headers = self._trace_headers() if self._trace_headers is not None else {}
        if (request_id := request_id_var.get()) is not None:
            headers[REQUEST_ID] = request_id
        if (user_id := user_id_var.get()) is not None:
            headers[USER_ID] = user_id
        await connection.execute(
            _INSERT, uuid.uuid4(), event_type, payload, headers, datetime.now(UTC)
        )

    def committed(self) -> None:
        """Wake the relay: call after the transaction that added events committed."""
        self._written.set()

    async def written(self, timeout: float) -> None:  # noqa: ASYNC109 - a poll interval
        """Wait until `committed` is called or `timeout` passes."""
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._written.wait()
        self._written.clear()


class Relay:
    """Publishes pending outbox rows in order; backs off while the broker is down."""

    def __init__(
        self, db: Database, outbox: Outbox, publisher: Publisher, settings: BrokerSettings
    ) -> None:
        """Publish `outbox`'s rows from `db` through `publisher`."""
        self._db = db
        self._outbox = outbox
        self._publisher = publisher
        self._settings = settings
        self._failures = 0
        self._stopping = asyncio.Event()
        self.published = 0

    async def publish_pending(self) -> int:
        """Publish one batch of pending rows; return how many were published.

        Rows published before a failure are marked sent in the same transaction, so
        a failure in the middle of a batch never publishes the earlier rows again.
        """
        sent: list[int] = []
        async with self._db.connection("relay") as connection, connection.transaction():
            if not await connection.fetchval(
                "SELECT pg_try_advisory_xact_lock($1)", RELAY_LOCK_KEY
            ):
                return 0  # another replica's relay is publishing
            rows = await connection.fetch(_PENDING, self._settings.relay_batch_size)
            try:
                for row in rows:
                    headers = dict(row["headers"])
                    headers[MESSAGE_ID] = str(row["message_id"])
                    headers[MESSAGE_TYPE] = row["type"]
                    headers[MESSAGE_TIME] = row["created_at"].isoformat()
                    message = Message(
                        row["message_id"], row["type"], row["created_at"], row["payload"], headers
                    )
                    await self._publisher.publish(message)
                    sent.append(row["id"])
            finally:
                if sent:
                    await connection.execute(
                        "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", sent
                    )
        self.published += len(sent)
        return len(sent)

    async def purge(self) -> None:
        """Delete published rows and processed-message records past the retention."""
        keep = timedelta(hours=self._settings.outbox_retention_hours)
        await self._db.execute("DELETE FROM outbox WHERE published_at < now() - $1::interval", keep)
        await self._db.execute(
            "DELETE FROM processed_messages WHERE processed_at < now() - $1::interval", keep
        )

    def _backoff(self) -> float:
        # Exponential with full jitter, so that replicas do not retry in step.
        ceiling = min(
            self._settings.relay_max_backoff_seconds,
            self._settings.relay_poll_seconds * 2**self._failures,
        )
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - not cryptographic

    async def run(self) -> None:
        """Publish until cancelled: immediately after writes, otherwise every poll interval."""
        next_purge = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                if loop.time() >= next_purge:
                    await self.purge()
                    next_purge = loop.time() + _PURGE_EVERY_SECONDS
                count = await self.publish_pending()
            except Exception as exc:  # noqa: BLE001 - the relay outlives any failure
                self._failures = min(self._failures + 1, 16)
                delay = self._backoff()
                log.warning(
                    "outbox_relay_failed",
                    error=str(exc) or type(exc).__name__,
                    retry_in=round(delay, 2),
                )
                with suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
                continue
            if self._failures:
                log.info("outbox_relay_recovered")
                self._failures = 0
            if count < self._settings.relay_batch_size:
                await self._outbox.written(self._settings.relay_poll_seconds)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Relay]:
        """Run the relay in a task for as long as the block runs."""
        task = asyncio.create_task(self.run(), name="outbox-relay")
        try:
            yield self
        finally:
            # Let a batch in flight finish (no transaction cut short), then stop.
            self._stopping.set()
            self._outbox.committed()
            try:
                async with asyncio.timeout(2 * self._settings.publish_timeout):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
