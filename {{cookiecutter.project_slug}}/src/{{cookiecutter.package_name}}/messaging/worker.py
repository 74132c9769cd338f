"""The worker process: consumers, plus a small HTTP listener for probes and metrics.

`python -m <package> worker` serves the ASGI app built here (by `app.create_worker`) with
uvicorn on `BROKER__WORKER_PORT`. Its lifespan opens the database and the broker and
starts consuming; on SIGTERM uvicorn runs the lifespan's exit: the broker stops fetching,
waits up to `BROKER__WORKER_SHUTDOWN_SECONDS` for in-flight handlers (anything not
acknowledged by then is redelivered by the broker, and the processed-message record makes
that safe), closes, and the process exits 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import uvicorn
from starlette.responses import JSONResponse
from starlette.routing import Route
from uvicorn.supervisors import ChangeReload

from {{ cookiecutter.package_name }} import __version__
from {{ cookiecutter.package_name }}.observability.log_config import uvicorn_log_config
from {{ cookiecutter.package_name }}.resilience import CircuitState
from {{ cookiecutter.package_name }}.server import PACKAGE_DIR, STARTUP_FAILURE, GracefulServer

if TYPE_CHECKING:
    from starlette.requests import Request

    from {{ cookiecutter.package_name }}.db import Database
    from {{ cookiecutter.package_name }}.messaging.broker import Broker
    from {{ cookiecutter.package_name }}.settings import Settings


class WorkerState:
    """What the probes read: set once the consumers run."""

    def __init__(self) -> None:
        """Not consuming yet."""
        self.db: Database | None = None
        self.broker: Broker | None = None
        self.consuming = False


def probe_routes(state: WorkerState) -> list[Route]:
    """`/health/live` (the process answers) and `/health/ready` (consuming, deps usable)."""

    async def live(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "pass"})

    async def ready(_request: Request) -> JSONResponse:
        checks = {
            "consuming": state.consuming,
            "database": state.db is not None and state.db.breaker.state is not CircuitState.OPEN,
        }
        ok = all(checks.values())
        return JSONResponse(
            {"status": "pass" if ok else "fail", "checks": checks}, 200 if ok else 503
        )

    return [
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
    ]


def serve_worker(settings: Settings, *, reload: bool = False) -> None:
    """Run the worker under uvicorn until SIGTERM/SIGINT; exit 0 after a clean stop.

    `reload` (the dev command): restart it whenever the package's code changes.
    """
    config = uvicorn.Config(
        "{{ cookiecutter.package_name }}.app:worker_from_env",
        factory=True,
        host=settings.host,
        port=settings.broker.worker_port,
        reload=reload,
        reload_dirs=[str(PACKAGE_DIR)] if reload else None,
        loop="uvloop",
        http="httptools",
        # The lifespan's exit waits for in-flight handlers: give it that long and more.
        timeout_graceful_shutdown=int(settings.broker.worker_shutdown_seconds) + 5,
        log_config=uvicorn_log_config(
            level=settings.log.level,
            json=settings.log.format == "json",
            service=settings.service_name,
            version=__version__,
            environment=settings.environment.value,
        ),
        access_log=False,
        server_header=False,
    )
    server = GracefulServer(config)
    if config.should_reload:
        ChangeReload(config, target=server.run, sockets=[config.bind_socket()]).run()
        return
    server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)
