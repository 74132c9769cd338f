"""Shared fixtures: a real PostgreSQL, the app with its lifespan, an HTTP client."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.database.migrate import run_migrations
from {{ cookiecutter.package_name }}.settings import Settings
from tests.dev_process import DevProcess, dev_process
from tests.postgres import create_database, drop_database, postgres_server
from tests.session_context import CLIENT_HEADERS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from fastapi import FastAPI


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """The PostgreSQL server of this test run."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """This run's own database, migrated."""
    url = await create_database(server_url)
    await run_migrations(url)
    yield url
    await drop_database(server_url, url)


@pytest.fixture
async def empty_database(server_url: str) -> AsyncIterator[str]:
    """A fresh database with no tables, for migration tests."""
    url = await create_database(server_url, prefix="empty")
    yield url
    await drop_database(server_url, url)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Test settings: JSON logs, test environment, no start-up migrations."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "environment": "test",
        "migrate_on_startup": False,
    } | overrides
    return Settings(**values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings pointing at this run's database."""
    return make_settings(database_url)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The real app with its lifespan running, and a client speaking to it in-process."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://service.test", headers=CLIENT_HEADERS
        ) as http:
            yield application, http


@pytest.fixture
async def app_and_client(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app (lifespan running) and its client, with default test settings."""
    async with serving(settings) as pair:
        yield pair


@pytest.fixture
def app(app_and_client: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    """The running app."""
    return app_and_client[0]


@pytest.fixture
def client(app_and_client: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    """An HTTP client speaking to the running app in-process."""
    return app_and_client[1]


@pytest.fixture
def dev_run() -> Iterator[DevProcess]:
    """`python -m <package> dev` in a fresh directory, nothing of it left afterwards."""
    with dev_process() as run:
        yield run


@pytest.fixture(autouse=True)
async def _clean_tables(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Empty every application table after each test that used the database."""
    yield
    if "database_url" not in request.fixturenames:
        return
    url: str = request.getfixturevalue("database_url")
    connection = await asyncpg.connect(url)
    try:
        tables = await connection.fetch(
            "SELECT quote_ident(tablename) AS name FROM pg_tables "
            "WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
        )
        if tables:
            names = ", ".join(row["name"] for row in tables)
            await connection.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await connection.close()
