"""Plain SQL migrations, applied in order, each exactly once.

Files live in the `migrations` package as `NNNN_description.sql`. Each runs in its own
transaction and is recorded in `schema_migrations` with its SHA-256, so an applied file
that is later edited is refused instead of silently diverging. A session advisory lock
makes replicas that start together apply each file once: the others wait, then find
nothing left to do.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from collections.abc import Sequence

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any fixed 64-bit key works; deriving it from the package name keeps services that
# share a database from blocking each other.
LOCK_KEY = zlib.crc32(
    b"{{ cookiecutter.package_name }}.migrations"
)  # unchanged when the package moved: running replicas share it

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The migrations on disk and in the database disagree."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file: its version (the file stem), text and checksum."""

    version: str
    sql: str
    checksum: str


def discover() -> list[Migration]:
    """Read the packaged migration files, ordered by their number."""
    found = []
    for entry in resources.files(f"{__package__}.migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        if not _FILE_NAME.match(entry.name):
            msg = f"{entry.name}: migration files must be named NNNN_lowercase_words.sql"
            raise MigrationError(msg)
        data = entry.read_bytes()
        found.append(
            Migration(
                entry.name.removesuffix(".sql"), data.decode(), hashlib.sha256(data).hexdigest()
            )
        )
    found.sort(key=lambda migration: migration.version)
    numbers = [migration.version[:4] for migration in found]
    if len(set(numbers)) != len(numbers):
        msg = f"two migration files share a number: {sorted(numbers)}"
        raise MigrationError(msg)
    return found


async def apply_migrations(
    connection: asyncpg.Connection[asyncpg.Record], migrations: Sequence[Migration] | None = None
) -> list[str]:
    """Apply the pending migrations; return the versions applied by this call."""
    wanted = discover() if migrations is None else list(migrations)
    await connection.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await connection.execute(_CREATE_TABLE)
        rows = await connection.fetch("SELECT version, checksum FROM schema_migrations")
        applied = {row["version"]: row["checksum"] for row in rows}
        for migration in wanted:
            recorded = applied.get(migration.version)
            if recorded is not None and recorded != migration.checksum:
                msg = (
                    f"migration {migration.version} was applied with checksum {recorded[:12]} "
                    f"but the file now has {migration.checksum[:12]}: never edit an applied "
                    "migration, add a new one"
                )
                raise MigrationError(msg)
        done = []
        for migration in wanted:
            if migration.version in applied:
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                    migration.version,
                    migration.checksum,
                )
            done.append(migration.version)
        return done
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


async def run_migrations(dsn: str) -> list[str]:
    """Apply pending migrations over a dedicated connection (advisory locks are per session)."""
    connection = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(connection)
    finally:
        await connection.close()
