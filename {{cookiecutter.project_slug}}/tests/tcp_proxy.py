"""A TCP proxy in front of PostgreSQL (or Redis) that a test can cut and restore: a real outage."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from tests.postgres import with_database

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _opener(database_url: str) -> Callable[[], Awaitable[Streams]]:
    parts = urlsplit(database_url)
    if parts.scheme.startswith("redis"):
        redis_address = (parts.hostname or "127.0.0.1", parts.port or 6379)
        return lambda: asyncio.open_connection(*redis_address)
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    port = parts.port or 5432
    if socket_dir.startswith("/"):  # the throwaway server listens on a unix socket only
        path = f"{socket_dir}/.s.PGSQL.{port}"
        return lambda: asyncio.open_unix_connection(path)
    host = parts.hostname or "127.0.0.1"
    return lambda: asyncio.open_connection(host, port)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the database; `cut()` drops everything, `restore()` heals.

    `cut_on(marker)` drops every connection (without refusing new ones) the moment a
    client sends `marker`, to fail one exact statement, such as the pool's reset.
    `stall_after(size)` forwards `size` more bytes from clients, then silently drops the
    rest (answers still flow back): what was sent before is served, what follows is lost.
    """

    def __init__(self, database_url: str) -> None:
        self._target = database_url
        self._open_upstream = _opener(database_url)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.cut_off = False
        self.port = 0
        self._marker: bytes | None = None
        self._budget: int | None = None

    @property
    def url(self) -> str:
        """The database URL as seen through the proxy."""
        parts = urlsplit(self._target)
        if parts.scheme.startswith("redis"):
            return f"redis://127.0.0.1:{self.port}{parts.path}"
        database = parts.path.lstrip("/")
        user = parts.username or "postgres"
        return with_database(f"postgresql://{user}@127.0.0.1:{self.port}", database)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """Reset every open connection and refuse new ones, as a dead database would."""
        self.cut_off = True
        self._abort_all()

    def restore(self) -> None:
        self.cut_off = False
        self._budget = None

    def stall_after(self, size: int) -> None:
        """Forward `size` more bytes from the clients, then drop what they send."""
        self._budget = size

    def cut_on(self, marker: bytes | None) -> None:
        """Reset every connection as soon as a client sends `marker` (None: never)."""
        self._marker = marker

    def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await self._open_upstream()
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer, watch=True), self._pipe(up_reader, writer)
        )
        self._writers -= {writer, up_writer}

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, watch: bool = False
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if watch and self._marker is not None and self._marker in data:
                    self._abort_all()
                    break
                if watch and self._budget is not None:
                    data, self._budget = data[: self._budget], max(0, self._budget - len(data))
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
