"""A real HTTP server on 127.0.0.1 standing in for a downstream service."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType


class Downstream:
    """A minimal HTTP/1.1 server whose behaviour the test switches.

    It answers ``status`` (or, with ``stall``, never answers), one request per
    connection, and keeps what it received. `stop` closes the listening socket, so
    connections are refused until `start` listens on the same port again.
    """

    def __init__(self) -> None:
        """Prepare a healthy server; `start` makes it listen."""
        self.status = HTTPStatus.OK
        self.stall = False
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Self:
        """Listen on a free port."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop listening and drop open connections."""
        await self.stop()

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def hits(self) -> int:
        """Requests received so far."""
        return len(self.requests)

    async def start(self) -> None:
        """Listen (again, on the same port once one was picked)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close open connections: connections are refused from now on."""
        if self._server is None:
            return
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head + await reader.readexactly(_content_length(head)))
            if self.stall:
                await reader.read()  # until the client gives up and disconnects
                return
            body = self.status.phrase.encode()
            writer.write(
                f"HTTP/1.1 {self.status.value} {self.status.phrase}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        finally:
            self._writers.discard(writer)
            writer.close()


def _content_length(head: bytes) -> int:
    for line in head.lower().split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name == b"content-length":
            return int(value)
    return 0
