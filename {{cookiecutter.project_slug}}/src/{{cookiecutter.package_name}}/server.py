"""Run the service under uvicorn with the settings' host, port, workers and timeouts."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.supervisors import ChangeReload, Multiprocess

from {{ cookiecutter.package_name }} import __version__
from {{ cookiecutter.package_name }}.observability.logging import uvicorn_log_config

if TYPE_CHECKING:
    from types import FrameType

    from {{ cookiecutter.package_name }}.settings import Settings

STARTUP_FAILURE = 3


class GracefulServer(uvicorn.Server):
    """uvicorn's server, except that a graceful stop exits 0.

    uvicorn re-raises SIGTERM after shutting down, so the process dies by the signal
    (status 143). A requested, completed shutdown is a success for an orchestrator.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:  # noqa: ARG002 - signal API
        """First signal: shut down gracefully; a second SIGINT: exit at once."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def serve(settings: Settings, *, reload: bool = False) -> None:
    """Serve until SIGTERM/SIGINT; see `lifecycle.Drain` for what a signal does first."""
    config = uvicorn.Config(
        # An import string, so that every worker process builds its own app.
        "{{ cookiecutter.package_name }}.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        reload=reload,
        loop="uvloop",
        http="httptools",
        proxy_headers=settings.proxy_headers,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=int(settings.shutdown.timeout_seconds),
        log_config=uvicorn_log_config(
            level=settings.log.level,
            json=settings.log.format == "json",
            service=settings.service_name,
            version=__version__,
            environment=settings.environment.value,
        ),
        access_log=False,  # the service writes its own access log (observability.access_log)
        server_header=False,
    )
    server = GracefulServer(config)
    if config.should_reload:
        ChangeReload(config, target=server.run, sockets=[config.bind_socket()]).run()
    elif config.workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        server.run()
        if not server.started:
            raise SystemExit(STARTUP_FAILURE)
