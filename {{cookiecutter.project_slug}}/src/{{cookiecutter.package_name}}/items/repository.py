"""SQL for items. Rows come back as dicts ready for orjson; no ORM in between."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.db import Database
    from {{ cookiecutter.package_name }}.items.models import ItemCreate, ItemUpdate

Row = dict[str, Any]

_COLUMNS = "id, name, description, price_cents, created_at, updated_at"


class DuplicateItemError(Exception):
    """An item with that name exists already."""


class ItemRepository:
    """Items table access through the guarded `Database`."""

    def __init__(self, db: Database) -> None:
        """Use `db` for every statement."""
        self._db = db

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
            row = await self._db.fetchrow(
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
            row = await self._db.fetchrow(sql, item_id, *fields.values())
        except asyncpg.UniqueViolationError:
            raise DuplicateItemError(str(fields.get("name"))) from None
        return dict(row) if row is not None else None

    async def delete(self, item_id: int) -> bool:
        """Delete the item; False when it did not exist."""
        status = await self._db.execute("DELETE FROM items WHERE id = $1", item_id)
        return status == "DELETE 1"
