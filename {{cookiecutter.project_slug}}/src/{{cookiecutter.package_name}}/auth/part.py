"""The auth part: callers' bearer JWTs verified against the identity provider's keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.auth.keys import open_key_set
from {{ cookiecutter.package_name }}.auth.openapi import document_security
from {{ cookiecutter.package_name }}.auth.propagation import add_user_baggage
from {{ cookiecutter.package_name }}.auth.scopes import require, requiring
from {{ cookiecutter.package_name }}.auth.verifier import Authenticator

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

    from starlette.routing import BaseRoute

    from {{ cookiecutter.package_name }}.auth.settings import AuthSettings
    from {{ cookiecutter.package_name }}.service.parts import Parts


def add_auth(parts: Parts, settings: AuthSettings) -> None:
    """Authenticate every request first; routes' write scopes enforced; the user on calls.

    Add it before the rate limiter: that keys on the caller authentication names.
    """
    authenticator = Authenticator(settings)  # its keys arrive with the lifespan
    parts.admission.append(authenticator)
    # A probe or scrape path taken out of auth.public_paths is authenticated (and so
    # logged and traced) like the API.
    parts.exempt_filters.append(settings.public_paths.__contains__)
    parts.outbound_hooks["request"].append(add_user_baggage)
    parts.openapi.append(lambda app: document_security(app, settings))

    def guard(scope: str, routes: list[BaseRoute]) -> list[BaseRoute]:
        # Any valid token reads; creating, changing and deleting need the scope.
        return requiring(require(scope), routes)

    parts.scope_guard = guard

    async def open_keys(stack: AsyncExitStack) -> None:
        # Fetched through the outbound client (its timeouts and breaker); start-up goes
        # on if the provider is down.
        authenticator.keys = await stack.enter_async_context(
            open_key_set(settings, parts.app.state.http_client)
        )

    parts.resources.append(open_keys)
