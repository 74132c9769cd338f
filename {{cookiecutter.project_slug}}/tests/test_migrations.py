"""The migration runner: in order, once, safely concurrent, and strict about edits."""

from __future__ import annotations

import asyncio
import hashlib

import asyncpg
import pytest

from {{ cookiecutter.package_name }}.database.migrate import Migration, MigrationError, apply_migrations, discover


def migration(version: str, sql: str) -> Migration:
    return Migration(version, sql, hashlib.sha256(sql.encode()).hexdigest())


FIRST = migration("0001_create_t", "CREATE TABLE t (id int PRIMARY KEY)")
SECOND = migration("0002_add_column", "ALTER TABLE t ADD COLUMN name text")


async def test_packaged_migrations_are_discovered_in_order() -> None:
    found = discover()
    versions = [m.version for m in found]
    assert versions == sorted(versions)
    assert all(len(m.checksum) == 64 for m in found)


async def test_applies_pending_once(empty_database: str) -> None:
    connection = await asyncpg.connect(empty_database)
    try:
        assert await apply_migrations(connection, [FIRST]) == ["0001_create_t"]
        assert await apply_migrations(connection, [FIRST, SECOND]) == ["0002_add_column"]
        assert await apply_migrations(connection, [FIRST, SECOND]) == []
        rows = await connection.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == ["0001_create_t", "0002_add_column"]
    finally:
        await connection.close()


async def test_concurrent_runners_apply_each_file_once(empty_database: str) -> None:
    connections = [await asyncpg.connect(empty_database) for _ in range(4)]
    try:
        results = await asyncio.gather(*(apply_migrations(c, [FIRST, SECOND]) for c in connections))
        applied = sorted(v for result in results for v in result)
        assert applied == ["0001_create_t", "0002_add_column"]
        count = await connections[0].fetchval("SELECT count(*) FROM schema_migrations")
        assert count == 2
    finally:
        for connection in connections:
            await connection.close()


async def test_edited_applied_migration_is_refused(empty_database: str) -> None:
    connection = await asyncpg.connect(empty_database)
    try:
        await apply_migrations(connection, [FIRST])
        edited = migration("0001_create_t", "CREATE TABLE t (id bigint PRIMARY KEY)")
        with pytest.raises(MigrationError, match="0001_create_t"):
            await apply_migrations(connection, [edited, SECOND])
        # Nothing after the mismatch ran.
        assert await connection.fetchval("SELECT count(*) FROM schema_migrations") == 1
    finally:
        await connection.close()


async def test_failing_migration_rolls_back_alone(empty_database: str) -> None:
    broken = migration("0002_broken", "ALTER TABLE t ADD COLUMN x int; SELECT * FROM missing")
    connection = await asyncpg.connect(empty_database)
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await apply_migrations(connection, [FIRST, broken])
        versions = await connection.fetch("SELECT version FROM schema_migrations")
        assert [r["version"] for r in versions] == ["0001_create_t"]
        columns = await connection.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 't'"
        )
        assert [c["column_name"] for c in columns] == ["id"]
    finally:
        await connection.close()
