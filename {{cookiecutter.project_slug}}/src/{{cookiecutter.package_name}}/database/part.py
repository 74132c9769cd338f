"""The database part: the pool, opened for the API and the worker, and its breaker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.database.pool import DatabaseUnavailableError, open_database
from {{ cookiecutter.package_name }}.service.problems import problem, retry_after

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

    from starlette.requests import Request
    from starlette.responses import Response

    from {{ cookiecutter.package_name }}.database.settings import DatabaseSettings
    from {{ cookiecutter.package_name }}.resilience.deadline import Deadlines
    from {{ cookiecutter.package_name }}.service.parts import Parts


def add_database(
    parts: Parts,
    dsn: str,
    settings: DatabaseSettings,
    *,
    application_name: str,
    deadlines: Deadlines,
) -> None:
    """Open the pool as `app.state.db` in every process; its breaker joins the others."""

    async def open_pool(stack: AsyncExitStack) -> None:
        db = parts.app.state.db = await stack.enter_async_context(
            open_database(
                dsn,
                settings,
                application_name=application_name,
                deadlines=deadlines,
                on_state_change=parts.breaker_changed,
                query_span=parts.client_span,
            )
        )
        parts.breaker_sources.append(lambda: (db.breaker,))

    parts.resources.append(open_pool)
    parts.worker_resources.append(open_pool)
    parts.app.add_exception_handler(DatabaseUnavailableError, database_unavailable)


async def database_unavailable(request: Request, _: Exception) -> Response:
    """The database is not there (refused, lost mid-query): 503, try again shortly."""
    return problem(
        503, "the database is unavailable", instance=request.url.path, headers=retry_after(1)
    )
