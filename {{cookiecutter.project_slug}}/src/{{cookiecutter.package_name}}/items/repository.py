"""SQL for items. Rows come back as dicts ready for orjson; no ORM in between."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import asyncpg

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.database.pool import Connection, Database
    from {{ cookiecutter.package_name }}.items.models import ItemCreate, ItemUpdate

Row = dict[str, Any]

_COLUMNS = "id, name, description, price_cents, created_at, updated_at"


class DuplicateItemError(Exception):
    """An item with that name exists already."""


class EventSink(Protocol):
    """Records events in the writing transaction (the messaging outbox, when there is one)."""

    async def add(self, connection: Connection, event_type: str, payload: dict[str, Any]) -> None:
        """Record `event_type` on `connection`, inside its transaction."""

    def committed(self) -> None:
        """The transaction that recorded events committed."""


class ItemRepository:
    """Items table access through the guarded `Database`."""

    def __init__(self, db: Database, events: EventSink | None = None) -> None:
        """Use `db` for every statement; with `events`, changes emit `item.*` events."""
        self._db = db
        self._events = events

    async def _write(self, event_type: str, sql: str, *args: object) -> asyncpg.Record | None:
        """Run a changing statement; with an event sink, its event goes in the same transaction."""
        if self._events is None:
            return await self._db.fetchrow(sql, *args)
        async with self._db.connection("write") as connection, connection.transaction():
            row = await connection.fetchrow(sql, *args)
            if row is not None:
                await self._events.add(connection, event_type, dict(row))
        if row is not None:
            self._events.committed()
        return row

    async def get(self, item_id: int) -> Row | None:
        """The item with `item_id`, or None."""
        row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM items WHERE id = $1", item_id)  # noqa: S608 - constant column list
        return dict(row) if row is not None else None

    async def page(self, *, after: int | None, limit: int) -> list[Row]:
        """Up to `limit` items with id greater than `after` (keyset pagination)."""
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM items WHERE id > $1 ORDER BY id LIMIT $2",  # noqa: S608
            after or 0,
            limit,
        )
        return [dict(row) for row in rows]

    async def create(self, item: ItemCreate) -> Row:
        """Insert `item`; raise `DuplicateItemError` when the name is taken."""
        try:
            row = await self._write(
                "item.created",
                "INSERT INTO items (name, description, price_cents) VALUES ($1, $2, $3) "  # noqa: S608
                f"RETURNING {_COLUMNS}",
                item.name,
                item.description,
                item.price_cents,
            )
        except asyncpg.UniqueViolationError:
            raise DuplicateItemError(item.name) from None
        assert row is not None  # noqa: S101 - INSERT ... RETURNING always returns the row
        return dict(row)

    async def update(self, item_id: int, changes: ItemUpdate) -> Row | None:
        """Apply the fields set in `changes`; None when the item does not exist."""
        fields = changes.model_dump(exclude_unset=True, exclude_none=True)
        # Column names come from the model's fields, never from the request body's keys.
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=2))
        sql = (
            f"UPDATE items SET {assignments + ', ' if assignments else ''}updated_at = now() "  # noqa: S608
            f"WHERE id = $1 RETURNING {_COLUMNS}"
        )
        try:
            row = await self._write("item.updated", sql, item_id, *fields.values())
        except asyncpg.UniqueViolationError:
            raise DuplicateItemError(str(fields.get("name"))) from None
        return dict(row) if row is not None else None

    async def delete(self, item_id: int) -> bool:
        """Delete the item; False when it did not exist."""
        row = await self._write(
            "item.deleted", "DELETE FROM items WHERE id = $1 RETURNING id", item_id
        )
        return row is not None
