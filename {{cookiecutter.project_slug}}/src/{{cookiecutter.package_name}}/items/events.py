"""The example consumer: the worker records every `item.created` event in `item_audit`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from {{ cookiecutter.package_name }}.database.pool import Connection
    from {{ cookiecutter.package_name }}.messaging.envelope import Message

log = structlog.get_logger(__name__)


async def record_item_created(connection: Connection, message: Message) -> None:
    """Write the audit row, in the transaction that also records the message as processed."""
    item = message.payload
    await connection.execute(
        "INSERT INTO item_audit (message_id, item_id, name, request_id, user_id, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        message.id,
        item["id"],
        item["name"],
        message.request_id,
        message.user_id,
        message.time,
    )
    log.info("item_audited", item_id=item["id"])


HANDLERS: dict[str, Callable[[Connection, Message], Awaitable[None]]] = {
    "item.created": record_item_created,
}
