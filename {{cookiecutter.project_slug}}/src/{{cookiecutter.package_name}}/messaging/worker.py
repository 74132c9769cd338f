"""The worker process: consumers, plus a small HTTP listener for probes and metrics.

`python -m <package> worker` serves the ASGI app that `app.create_worker` builds with
uvicorn on `BROKER__WORKER_PORT` (`runtime.server.serve`). Its lifespan opens the
database and the broker and starts consuming (`messaging.part`); on SIGTERM uvicorn runs
the lifespan's exit: the broker stops fetching, waits up to
`BROKER__WORKER_SHUTDOWN_SECONDS` for in-flight handlers (anything not acknowledged by
then is redelivered by the broker, and the processed-message record makes that safe),
closes, and the process exits 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.responses import JSONResponse
from starlette.routing import Route

from {{ cookiecutter.package_name }}.resilience.breaker import CircuitState

if TYPE_CHECKING:
    from starlette.requests import Request

    from {{ cookiecutter.package_name }}.database.pool import Database
    from {{ cookiecutter.package_name }}.messaging.broker import Broker


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
