"""The outbound HTTP client part: one client per process, a breaker per downstream host."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from {{ cookiecutter.package_name }}.outbound.client import DownstreamStatusError, open_outbound_client
from {{ cookiecutter.package_name }}.service.problems import problem

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

    from starlette.requests import Request
    from starlette.responses import Response

    from {{ cookiecutter.package_name }}.outbound.settings import HttpClientSettings
    from {{ cookiecutter.package_name }}.service.parts import Parts


def add_outbound_client(parts: Parts, settings: HttpClientSettings) -> None:
    """Open the client as `app.state.http_client`, with the hooks other parts added."""

    async def open_client(stack: AsyncExitStack) -> None:
        hooks = {event: list(hooks) for event, hooks in parts.outbound_hooks.items() if hooks}
        client = parts.app.state.http_client = await stack.enter_async_context(
            open_outbound_client(
                settings, on_state_change=parts.breaker_changed, event_hooks=hooks or None
            )
        )
        parts.breaker_sources.append(client.breakers.values)

    parts.resources.append(open_client)
    parts.app.add_exception_handler(DownstreamStatusError, downstream_failed)
    parts.app.add_exception_handler(httpx.TransportError, downstream_failed)


async def downstream_failed(request: Request, exc: Exception) -> Response:
    """A downstream service answered 5xx or could not be reached: 502."""
    # The upstream's own error text may hold internals: name the failure, not the body.
    return problem(502, f"a downstream service failed: {exc}", instance=request.url.path)
