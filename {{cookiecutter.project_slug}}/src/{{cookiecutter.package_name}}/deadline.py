"""A per-request deadline: a handler that runs too long is cancelled and answered 504.

Cancellation unwinds the handler, so a pooled database connection it held is released
(and its running query cancelled) before the 504 goes out.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.problems import send_problem

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


class DeadlineMiddleware:
    """Pure ASGI: cancel the request after `timeout` seconds; exempt paths run unbounded."""

    def __init__(self, app: ASGIApp, *, timeout: float, exempt_paths: frozenset[str]) -> None:
        """Wrap `app`."""
        self.app = app
        self.timeout = timeout
        self.exempt_paths = exempt_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request under the deadline."""
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            async with asyncio.timeout(self.timeout):
                await self.app(scope, receive, send_tracking)
        except TimeoutError:
            if started:
                # Half a response is on the wire; the only honest signal left is to
                # drop the connection, which re-raising makes the server do.
                raise
            await send_problem(send, 504, f"the request took longer than {self.timeout:g}s")
