"""The transactional outbox: events written with the state change, published by a relay.

`Outbox.add` inserts the event row on the caller's connection, inside the caller's
transaction: the event exists exactly when the change it describes was committed. The
`Relay` (one task in the API's lifespan) moves the pending rows to the broker in id
order, a batch at a time, in three steps that never hold a database transaction (or a
pooled connection) across a broker call:

1. claim: a short transaction takes a transaction-scoped advisory lock and, unless
   another relay's claim is still live, leases the first pending rows
   (`claimed_until`); so one relay of all the replicas publishes at a time and rows
   keep their order;
2. publish the batch with the broker's confirms awaited together (no connection held);
3. mark the rows the broker took as sent and release the rest, in one statement; a row
   the broker refused for good (too large) is set aside with the reason (`refused_at`).

A relay that dies between 1 and 3 leaves a lease that expires, and the rows are
published again (the worker dedupes by message id). A broker failure counts against the
broker's breaker only, and makes the relay back off: API requests never wait for it.
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
    PublishError,
)
from {{ cookiecutter.package_name }}.observability.logs.context import request_id_var, user_id_var

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    import asyncpg

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
# Leases the first pending rows, unless a claim (another relay's batch) is still live.
_CLAIM = (
    "UPDATE outbox SET claimed_until = clock_timestamp() + $2::interval "
    "WHERE id IN (SELECT id FROM outbox WHERE published_at IS NULL AND refused_at IS NULL "
    "ORDER BY id LIMIT $1) "
    "AND NOT EXISTS (SELECT FROM outbox WHERE published_at IS NULL "
    "AND claimed_until > clock_timestamp()) "
    "RETURNING id, message_id, type, payload, headers, created_at"
)
# Marks the rows in $1 sent and releases the claim on every row in $2.
_SETTLE = (
    "UPDATE outbox SET claimed_until = NULL, "
    "published_at = CASE WHEN id = ANY($1::bigint[]) THEN now() END "
    "WHERE id = ANY($2::bigint[])"
)
# Sets aside a row the broker refused for good, with the reason.
_REFUSE = "UPDATE outbox SET refused_at = now(), refusal = $2 WHERE id = $1"
# A claim outlives the slowest batch: connecting and publishing are each bounded by the
# publish timeout.
_LEASE_PUBLISH_TIMEOUTS = 4


class Publisher(Protocol):
    """What the relay needs of the broker (`messaging.broker.Broker`)."""

    async def publish(self, messages: Sequence[Message]) -> None:
        """Publish in order; return once the broker took them all.

        Raise `PublishError` naming the messages it took when it did not take them all,
        and those it refused for good.
        """


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


def _message(row: asyncpg.Record) -> Message:
    headers = dict(row["headers"])
    headers[MESSAGE_ID] = str(row["message_id"])
    headers[MESSAGE_TYPE] = row["type"]
    headers[MESSAGE_TIME] = row["created_at"].isoformat()
    return Message(row["message_id"], row["type"], row["created_at"], row["payload"], headers)


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
        self.refused = 0
        # When the oldest event this relay last saw pending was written; None when its
        # last pass left nothing behind (or another replica's relay holds the claim).
        self.oldest_pending: datetime | None = None

    def pending_seconds(self) -> float:
        """How long the oldest event this relay last saw pending has waited (0: none).

        Known from the relay's own passes, at no extra query: the rows it claimed, then
        the ones the broker did not take. It grows while the relay fails to publish.
        """
        oldest = self.oldest_pending
        return 0.0 if oldest is None else max(0.0, (datetime.now(UTC) - oldest).total_seconds())

    async def publish_pending(self) -> int:
        """Publish one batch of pending rows; return how many the broker took.

        Rows the broker took are marked sent even when a later one of the batch failed,
        so they are not published again; the failed ones wait for the next pass. Rows it
        refused for good are set aside (`refused_at`), so they hold up no later event;
        when they are all that failed, the broker is fine and the relay goes on at once.
        """
        rows = await self._claim()
        if not rows:
            self.oldest_pending = None
            return 0
        self.oldest_pending = min(row["created_at"] for row in rows)
        messages = [_message(row) for row in rows]
        taken: set[uuid.UUID] = set()
        refused: dict[uuid.UUID, str] = {}
        try:
            await self._publisher.publish(messages)
            taken.update(message.id for message in messages)
        except PublishError as exc:
            taken.update(exc.taken)
            refused = exc.refused
            if exc.unavailable:
                raise
        finally:
            sent = [row["id"] for row in rows if row["message_id"] in taken]
            set_aside = [row for row in rows if row["message_id"] in refused]
            async with self._db.connection("relay") as connection, connection.transaction():
                # Not flushed either: a mark lost in a crash publishes the rows again,
                # which the consumers' dedupe absorbs.
                await connection.execute("SET LOCAL synchronous_commit = off")
                await connection.execute(_SETTLE, sent, [row["id"] for row in rows])
                for row in set_aside:
                    await connection.execute(_REFUSE, row["id"], refused[row["message_id"]])
            self.published += len(sent)
            self.refused += len(set_aside)
            for row in set_aside:
                log.error(
                    "outbox_event_refused",
                    message_id=str(row["message_id"]),
                    type=row["type"],
                    reason=refused[row["message_id"]],
                )
            self.oldest_pending = min(
                (
                    row["created_at"]
                    for row in rows
                    if row["message_id"] not in taken and row["message_id"] not in refused
                ),
                default=None,
            )
        return len(sent)

    async def _claim(self) -> list[asyncpg.Record]:
        lease = timedelta(seconds=_LEASE_PUBLISH_TIMEOUTS * self._settings.publish_timeout)
        async with self._db.connection("relay") as connection, connection.transaction():
            # Not waiting for the commit to be flushed: a claim lost in a crash only
            # lets the rows be claimed again at once.
            if not await connection.fetchval(
                "SELECT pg_try_advisory_xact_lock($1) "
                "AND set_config('synchronous_commit', 'off', true) = 'off'",
                RELAY_LOCK_KEY,
            ):
                return []  # another replica's relay is claiming
            rows = await connection.fetch(_CLAIM, self._settings.relay_batch_size, lease)
        return sorted(rows, key=lambda row: int(row["id"]))

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
            # Let a batch in flight finish (and its rows be marked sent), then stop.
            self._stopping.set()
            self._outbox.committed()
            try:
                async with asyncio.timeout(2 * self._settings.publish_timeout):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
