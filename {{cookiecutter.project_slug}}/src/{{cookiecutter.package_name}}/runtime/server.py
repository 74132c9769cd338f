"""Run the service under uvicorn with the settings' host, port, workers and timeouts."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.supervisors import ChangeReload, Multiprocess

from {{ cookiecutter.package_name }} import __version__
from {{ cookiecutter.package_name }}.observability.logs.config import uvicorn_log_config
from {{ cookiecutter.package_name }}.runtime.listener import (
    queued_connections,
    stop_listening,
    wait_until_accepted,
)

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from types import FrameType

    from {{ cookiecutter.package_name }}.settings import Settings

STARTUP_FAILURE = 3
# What a reloading server watches: the package's own code, not the whole project (.venv).
PACKAGE_DIR = Path(__file__).parent.parent
# How long before the workers' drain ends the socket stops taking new connections:
# long enough for the workers to accept what is queued, short against any drain.
STOP_LISTENING_LEAD_SECONDS = 0.25
# Once the socket lets nothing new in, its queue only shrinks: bound the wait for the
# workers to accept it generously, a CPU-starved worker may need more than a moment.
_ACCEPT_QUEUED_SECONDS = 2.0
# A connection accepted a moment ago has its request on the way (a busy client may
# take a while to send it): read it before uvicorn closes the connections that have
# none, which would reset them. A client that connects and never sends costs this.
_FIRST_REQUEST_SECONDS = 1.5
_POLL_SECONDS = 0.005


class GracefulServer(uvicorn.Server):
    """uvicorn's server, except that a graceful stop exits 0 and resets no connection.

    uvicorn re-raises SIGTERM after shutting down, so the process dies by the signal
    (status 143). A requested, completed shutdown is a success for an orchestrator.
    Before uvicorn closes the listening socket (which resets the connections queued
    in it), the socket stops taking new ones and the queued ones are accepted.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop listening, accept and read what is queued, then uvicorn's shutdown."""
        # Under the reloader the socket outlives this process and serves the next one.
        reloading = self.config.should_reload
        listening = [sock for server in self.servers for sock in server.sockets]
        if listening and not reloading and all(stop_listening(sock) for sock in listening):
            await asyncio.sleep(_POLL_SECONDS)  # handshakes under way join the queue
            await self._wait_until(
                lambda: not any(queued_connections(sock) for sock in listening),
                _ACCEPT_QUEUED_SECONDS,
            )
            await self._wait_until(self._every_connection_has_a_request, _FIRST_REQUEST_SECONDS)
        await super().shutdown(sockets)

    def _every_connection_has_a_request(self) -> bool:
        # uvicorn's HTTP protocols create their `cycle` once a request's headers are in;
        # until then its shutdown closes the connection.
        return all(
            getattr(connection, "cycle", True) is not None
            for connection in self.server_state.connections
        )

    @staticmethod
    async def _wait_until(condition: Callable[[], bool], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        # Polled: neither the kernel's queue nor uvicorn's connections signal a change.
        while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_POLL_SECONDS)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:  # noqa: ARG002 - signal API
        """First signal: shut down gracefully; a second SIGINT: exit at once."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, except that stopping closes the socket in order.

    uvicorn's supervisor keeps its copy of the listening socket until it exits, after
    every worker has stopped accepting: connections arriving meanwhile are queued by
    the kernel, then reset. Here, once the workers have been told to stop (they drain
    for ``drain_seconds``, see `lifecycle.drain.Drain`), the socket stops taking new
    connections shortly before they stop accepting, they accept what is queued, and
    the supervisor closes its copy: from then on a connection is refused, never reset.
    Retiring single workers (SIGHUP, SIGTTOU) is unchanged, the others keep serving.
    """

    def __init__(
        self, config: uvicorn.Config, sockets: list[socket.socket], drain_seconds: float
    ) -> None:
        """Supervise ``config.workers`` workers serving ``sockets``."""
        super().__init__(config, sockets)
        self.drain_seconds = drain_seconds

    def terminate_all(self) -> None:
        """Stop every worker; the socket stops listening before they stop accepting."""
        if self.drain_seconds > STOP_LISTENING_LEAD_SECONDS:
            super().terminate_all()  # readiness fails, the workers keep serving meanwhile
            time.sleep(self.drain_seconds - STOP_LISTENING_LEAD_SECONDS)
            self._close_sockets()
        else:
            self._close_sockets()  # the workers stop accepting as soon as they are told
            super().terminate_all()

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            if stop_listening(sock):
                wait_until_accepted(sock, timeout=STOP_LISTENING_LEAD_SECONDS)
            sock.close()  # the workers' copies close the socket when they stop


API = "{{ cookiecutter.package_name }}.app:app_from_env"


def serve(  # noqa: PLR0913 - keyword-only, what differs between the processes
    settings: Settings,
    *,
    target: str = API,
    port: int | None = None,
    workers: int | None = None,
    graceful_seconds: float | None = None,
    reload: bool = False,
) -> None:
    """Serve `target` until SIGTERM/SIGINT (`lifecycle.drain.Drain`: what a signal does first).

    `target` names a zero-argument app factory, so that every worker process builds
    its own app; `port`, `workers` and `graceful_seconds` default to the settings'.
    """
    config = uvicorn.Config(
        target,
        factory=True,
        host=settings.host,
        port=settings.port if port is None else port,
        workers=settings.workers if workers is None else workers,
        reload=reload,
        reload_dirs=[str(PACKAGE_DIR)] if reload else None,
        loop="uvloop",
        http="httptools",
        proxy_headers=settings.proxy_headers,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=int(
            settings.shutdown.timeout_seconds if graceful_seconds is None else graceful_seconds
        ),
        log_config=uvicorn_log_config(
            level=settings.log.level,
            json=settings.log.format == "json",
            service=settings.service_name,
            version=__version__,
            environment=settings.environment.value,
        ),
        access_log=False,  # the service writes its own access log (observability.logs.access)
        server_header=False,
    )
    server = GracefulServer(config)
    if config.should_reload:
        ChangeReload(config, target=server.run, sockets=[config.bind_socket()]).run()
    elif config.workers > 1:
        Supervisor(config, [config.bind_socket()], settings.shutdown.drain_seconds).run()
    else:
        server.run()
        if not server.started:
            raise SystemExit(STARTUP_FAILURE)
