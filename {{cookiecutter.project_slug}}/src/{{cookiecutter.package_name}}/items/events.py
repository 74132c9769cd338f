"""The example consumer: the worker records every `item.created` event in `item_audit`.

A handler gets the messages of its type that arrived together: one `executemany` writes
them all in one round trip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from {{ cookiecutter.package_name }}.database.pool import Connection
    from {{ cookiecutter.package_name }}.messaging.envelope import Message

log = structlog.get_logger(__name__)


async def record_items_created(connection: Connection, messages: Sequence[Message]) -> None:
    """Write the audit rows, in the transaction that also records the messages as processed."""
    await connection.executemany(
        "INSERT INTO item_audit (message_id, item_id, name, request_id, user_id, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        [
            (
                message.id,
                message.payload["id"],
                message.payload["name"],
                message.request_id,
                message.user_id,
                message.time,
            )
            for message in messages
        ],
    )
    log.info("items_audited", item_ids=[message.payload["id"] for message in messages])


HANDLERS: dict[str, Callable[[Connection, Sequence[Message]], Awaitable[None]]] = {
    "item.created": record_items_created,
}
