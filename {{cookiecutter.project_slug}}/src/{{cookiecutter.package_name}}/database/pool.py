"""The asyncpg pool and the one door every query goes through.

`Database` puts a circuit breaker, an acquire timeout and (when tracing exports) a span
around each use of a pooled connection, and turns "the database is not there" into
`DatabaseUnavailableError`, which the API answers with 503.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import orjson

from {{ cookiecutter.package_name }}.resilience.breaker import BreakerConfig, CircuitBreaker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractContextManager
    from types import TracebackType

    from asyncpg.pool import PoolConnectionProxy

    from {{ cookiecutter.package_name }}.database.settings import DatabaseSettings
    from {{ cookiecutter.package_name }}.resilience.breaker import StateChangeCallback
    from {{ cookiecutter.package_name }}.resilience.deadline import Deadlines

    Connection: TypeAlias = PoolConnectionProxy[asyncpg.Record]
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    QuerySpan: TypeAlias = Callable[[str], AbstractContextManager[object]]

# SQLSTATE classes that mean the server is unreachable or refusing work, not that the
# request was wrong: 08 connection exception, 53 insufficient resources, 57 operator
# intervention (shutdown, cancel/statement timeout), 58 system error.
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58"})


class DatabaseUnavailableError(Exception):
    """The database could not serve the call (down, unreachable, overloaded or timed out)."""


def is_unavailable(exc: BaseException) -> bool:
    """Tell failures of the database itself (they trip the breaker) from bad requests."""
    if isinstance(exc, TimeoutError | OSError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    return False


async def _init_connection(connection: asyncpg.Connection[asyncpg.Record]) -> None:
    # json/jsonb decode to Python objects and encode with orjson on every connection.
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name,
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(dsn: str, settings: DatabaseSettings, *, application_name: str) -> Pool:
    """Open the pool; PgBouncer (transaction mode) cannot keep prepared statements."""
    pool: Pool = await asyncpg.create_pool(
        dsn,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        max_inactive_connection_lifetime=settings.max_inactive_connection_lifetime,
        command_timeout=settings.command_timeout,
        statement_cache_size=0 if settings.pgbouncer else settings.statement_cache_size,
        server_settings={
            "application_name": application_name,
            "statement_timeout": str(settings.statement_timeout_ms),
        },
        init=_init_connection,
    )
    return pool


async def close_pool(pool: Pool, timeout: float) -> None:  # noqa: ASYNC109 - a bounded close, by design
    """Close gracefully, but never wait longer than `timeout`: then terminate."""
    try:
        async with asyncio.timeout(timeout):
            await pool.close()
    except TimeoutError:
        pool.terminate()


@asynccontextmanager
async def open_database(  # noqa: PLR0913 - keyword-only, one per collaborator
    dsn: str,
    settings: DatabaseSettings,
    *,
    application_name: str,
    deadlines: Deadlines,
    on_state_change: StateChangeCallback | None = None,
    query_span: QuerySpan | None = None,
) -> AsyncIterator[Database]:
    """The service's database for as long as the block runs: pool opened, then closed."""
    pool = await create_pool(dsn, settings, application_name=application_name)
    breaker = CircuitBreaker(
        "database",
        BreakerConfig.from_settings(settings.breaker),
        is_failure=is_unavailable,
        on_state_change=on_state_change,
    )
    try:
        yield Database(
            pool,
            breaker,
            acquire_timeout=settings.acquire_timeout,
            deadlines=deadlines,
            query_span=query_span,
        )
    finally:
        await close_pool(pool, settings.close_timeout)


class Database:
    """Pooled access to PostgreSQL, guarded by a circuit breaker."""

    def __init__(
        self,
        pool: Pool,
        breaker: CircuitBreaker,
        *,
        acquire_timeout: float,
        deadlines: Deadlines,
        query_span: QuerySpan | None = None,
    ) -> None:
        """Wrap `pool`; `query_span`, when given, opens a tracing span per connection use."""
        self.pool = pool
        self.breaker = breaker
        self._acquire_timeout = acquire_timeout
        self._deadlines = deadlines
        self._query_span = query_span

    def connection(self, operation: str = "query") -> _GuardedConnection:
        """`async with db.connection() as conn:` for several statements or a transaction."""
        return _GuardedConnection(self, operation)

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        """Run `query`, return every row."""
        async with self.connection("fetch") as connection:
            return await connection.fetch(query, *args)

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        """Run `query`, return the first row or None."""
        async with self.connection("fetchrow") as connection:
            return await connection.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: object) -> Any:  # noqa: ANN401 - a column of any type
        """Run `query`, return the first column of the first row."""
        async with self.connection("fetchval") as connection:
            return await connection.fetchval(query, *args)

    async def execute(self, query: str, *args: object) -> str:
        """Run `query`, return its status tag (e.g. `DELETE 1`)."""
        async with self.connection("execute") as connection:
            return await connection.execute(query, *args)


class _GuardedConnection:
    """Breaker, then acquire with timeout, then the caller's statements; in reverse on exit.

    A class rather than `@asynccontextmanager`: it runs on every query and a generator
    based context manager costs several times more.
    """

    __slots__ = ("_admitted", "_connection", "_database", "_operation", "_span")

    def __init__(self, database: Database, operation: str) -> None:
        self._database = database
        self._operation = operation
        self._admitted = (0, 0.0)
        self._span: AbstractContextManager[object] | None = None
        self._connection: Connection | None = None

    async def __aenter__(self) -> Connection:
        database = self._database
        if database._query_span is not None:  # noqa: SLF001 - same module
            self._span = database._query_span(self._operation)  # noqa: SLF001
            self._span.__enter__()
        try:
            self._admitted = database.breaker.admit()
            try:
                # Not acquire(timeout=...): asyncpg implements that with wait_for, a
                # task per acquire and per release.
                with database._deadlines.within(database._acquire_timeout):  # noqa: SLF001
                    connection = await database.pool.acquire()
            except BaseException as exc:
                database.breaker.settle(self._admitted, exc)
                raise
        except BaseException as exc:
            if self._span is not None:
                self._span.__exit__(type(exc), exc, exc.__traceback__)
            if is_unavailable(exc):
                raise DatabaseUnavailableError(str(exc) or type(exc).__name__) from exc
            raise
        self._connection = connection
        return connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        outcome = exc
        try:
            if self._connection is not None:
                # release() resets the connection (and cancels a query a deadline
                # interrupted), so the next borrower gets it clean.
                await self._database.pool.release(self._connection)
        except Exception as release_error:
            # The connection died while the request held it (a server restart, a cut
            # network): the database failed this call, whatever its statements did.
            if not is_unavailable(release_error):
                raise
            outcome = release_error
        finally:
            self._database.breaker.settle(self._admitted, outcome)
            if self._span is not None:
                self._span.__exit__(exc_type, exc, traceback)
        if outcome is not None and is_unavailable(outcome):
            raise DatabaseUnavailableError(str(outcome) or type(outcome).__name__) from outcome
