"""Route-level authorisation: `require("items:write")` and the current `Principal`.

The middleware has verified the token already (`auth.verifier`); these dependencies
only read the principal it stored, so they cost a dictionary lookup.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Annotated, Final

from fastapi import Depends, HTTPException, Request
from fastapi.routing import APIRoute

from {{ cookiecutter.package_name }}.auth.principal import Principal
from {{ cookiecutter.package_name }}.auth.verifier import bearer_challenge

if TYPE_CHECKING:
    from collections.abc import Iterable

    from starlette.routing import BaseRoute

__all__ = ["CurrentPrincipal", "RequireScopes", "current_principal", "require", "requiring"]

WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# What an APIRoute is built from, besides path, endpoint and dependencies: copied as is.
_ROUTE_ARGUMENTS: Final = tuple(
    name
    for name in inspect.signature(APIRoute.__init__).parameters
    if name not in {"self", "path", "endpoint", "dependencies"}
)


def _principal_of(request: Request) -> Principal:
    principal = request.scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):
        # Only a route listed in auth.public_paths gets here without one.
        raise HTTPException(
            401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    return principal


async def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the verified caller of this request."""
    return _principal_of(request)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
"""Route parameter type: ``async def route(caller: CurrentPrincipal) -> ...``."""


class RequireScopes:
    """A dependency that answers 403 unless the caller was granted every scope listed."""

    __slots__ = ("scopes",)

    def __init__(self, scopes: frozenset[str]) -> None:
        """Require all of `scopes`."""
        self.scopes = scopes

    async def __call__(self, request: Request) -> Principal:
        """The principal, if it holds the scopes (RFC 6750, section 3.1: insufficient_scope)."""
        principal = _principal_of(request)
        missing = self.scopes - principal.scopes
        if missing:
            needed = " ".join(sorted(self.scopes))
            challenge = bearer_challenge(
                request.app.state.settings.auth.realm,
                error="insufficient_scope",
                error_description=f"the token lacks the scope {' '.join(sorted(missing))}",
                scope=needed,
            )
            raise HTTPException(
                403,
                f"this operation needs the scope {needed}",
                headers={"WWW-Authenticate": challenge},
            )
        return principal


def require(*scopes: str) -> RequireScopes:
    """A dependency that needs every one of `scopes`.

    Use it as ``dependencies=[Depends(require("items:write"))]``, or as the override
    of a route's permission dependency (see `app.py`).
    """
    return RequireScopes(frozenset(scopes))


def requiring(
    scopes: RequireScopes, routes: Iterable[BaseRoute], *, methods: frozenset[str] = WRITE_METHODS
) -> list[BaseRoute]:
    """`routes`, where those answering one of `methods` also depend on `scopes`.

    For routes declared without knowing how callers are authorised (the example API):
    the app factory decides. The copies are built as `include_router` would build them,
    once, at start-up; other routes are returned unchanged.
    """
    copied: list[BaseRoute] = []
    for route in routes:
        if isinstance(route, APIRoute) and route.methods and route.methods & methods:
            arguments = {name: getattr(route, name) for name in _ROUTE_ARGUMENTS}
            route = APIRoute(  # noqa: PLW2901 - the copy replaces the route
                route.path,
                route.endpoint,
                dependencies=[*route.dependencies, Depends(scopes)],
                **arguments,
            )
        copied.append(route)
    return copied
