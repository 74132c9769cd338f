"""Stopping a listening socket in order: new connections refused, queued ones kept."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

import pytest
import uvicorn

from {{ cookiecutter.package_name }}.runtime.listener import queued_connections, stop_listening, wait_until_accepted
from {{ cookiecutter.package_name }}.runtime.server import GracefulServer

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send


async def app(_scope: Scope, _receive: Receive, send: Send) -> None:
    """The smallest ASGI app: the server's socket handling is what is tested."""
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def handshake_completes(address: tuple[str, int]) -> bool:
    """Whether a new connection is let in (the SYN answered) within half a second."""
    try:
        socket.create_connection(address, timeout=0.5).close()
    except TimeoutError:
        return False
    return True


def test_a_stopped_socket_lets_nothing_new_in_and_keeps_what_is_queued() -> None:
    with listening_socket() as listener:
        address = listener.getsockname()
        queued = socket.create_connection(address, timeout=5)
        assert wait_until_accepted(listener, timeout=0) == 1

        assert stop_listening(listener)

        assert not handshake_completes(address)  # its SYN is dropped, not answered
        assert queued_connections(listener) == 1
        accepted, _ = listener.accept()
        with queued, accepted:
            queued.sendall(b"still here")
            assert accepted.recv(16) == b"still here"
        assert queued_connections(listener) == 0


@pytest.mark.parametrize("reload", [False, True])
async def test_the_server_stops_listening_before_it_closes_unless_reloading(
    reload: bool,  # noqa: FBT001 - a test parameter
) -> None:
    with listening_socket() as listener:
        config = uvicorn.Config(
            f"{__name__}:app", reload=reload, lifespan="off", log_config=None, access_log=False
        )
        server = GracefulServer(config)
        # The process's own copy: the server closes the one it was given.
        serving = asyncio.create_task(server.serve(sockets=[listener.dup()]))
        while not server.started:  # noqa: ASYNC110 - uvicorn has no event for it
            await asyncio.sleep(0.01)
        server.should_exit = True
        await serving

        # Under the reloader the socket serves the next process: it must still listen.
        assert handshake_completes(listener.getsockname()) is reload
