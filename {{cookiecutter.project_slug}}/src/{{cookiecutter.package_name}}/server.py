"""Run the service under uvicorn with the settings' host, port, workers and timeouts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import uvicorn

from {{ cookiecutter.package_name }}.observability.logging import uvicorn_log_config

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.settings import Settings


def serve(settings: Settings, *, reload: bool = False) -> None:
    """Serve until SIGTERM/SIGINT; see `lifecycle.Drain` for what a signal does."""
    uvicorn.run(
        # An import string, so that every worker process builds its own app.
        "{{ cookiecutter.package_name }}.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=None if reload else settings.workers,
        reload=reload,
        loop="uvloop",
        http="httptools",
        proxy_headers=settings.proxy_headers,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=int(settings.shutdown.timeout_seconds),
        log_config=uvicorn_log_config(level=settings.log.level, json=settings.log.format == "json"),
        access_log=False,  # the service writes its own access log (observability.access_log)
        server_header=False,
    )
