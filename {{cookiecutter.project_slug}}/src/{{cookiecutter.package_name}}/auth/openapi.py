"""The OpenAPI document says what authentication sends and answers.

Every operation outside ``auth.public_paths`` gets a security requirement (a bearer
JWT; the OpenID Connect discovery URL too when the keys come from discovery, so the docs
page's Authorize button can use either), its 401 answer and its 400 (more than one
``Authorization`` field); an operation with a `require(...)` dependency lists those
scopes and its 403 answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi.routing import APIRoute

from {{ cookiecutter.package_name }}.auth.keys import DISCOVERY_PATH
from {{ cookiecutter.package_name }}.auth.scopes import RequireScopes
from {{ cookiecutter.package_name }}.service.openapi import problem_response

if TYPE_CHECKING:
    from collections.abc import Callable

    from fastapi import FastAPI
    from fastapi.dependencies.models import Dependant

    from {{ cookiecutter.package_name }}.auth.settings import AuthSettings

__all__ = ["document_security"]

BEARER = "bearerAuth"
OPENID_CONNECT = "openIdConnect"
_CHALLENGE = {
    "WWW-Authenticate": {
        "description": 'RFC 6750 challenge, e.g. `Bearer error="invalid_token"`',
        "schema": {"type": "string"},
    }
}


def _scopes(
    dependant: Dependant, overrides: dict[Callable[..., Any], Callable[..., Any]]
) -> set[str]:
    found: set[str] = set()
    for dependency in dependant.dependencies:
        call = overrides.get(dependency.call, dependency.call)  # type: ignore[arg-type]
        if isinstance(call, RequireScopes):
            found |= call.scopes
        found |= _scopes(dependency, overrides)
    return found


def _add_security(schema: dict[str, Any], app: FastAPI, settings: AuthSettings) -> None:
    schemes: dict[str, Any] = {
        BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    }
    if settings.jwks_url is None:
        schemes[OPENID_CONNECT] = {
            "type": "openIdConnect",
            "openIdConnectUrl": settings.issuer.rstrip("/") + DISCOVERY_PATH,
        }
    schema.setdefault("components", {})["securitySchemes"] = schemes
    paths = schema.get("paths", {})
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.path_format in settings.public_paths:
            continue
        scopes = sorted(_scopes(route.dependant, app.dependency_overrides))
        for method in route.methods or ():
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            operation["security"] = [{name: scopes} for name in schemes]
            responses = operation.setdefault("responses", {})
            # Built after `document_problems` rewrote the document: the schema is set here.
            responses["401"] = problem_response(
                "No bearer token, or one that is not valid", headers=_CHALLENGE
            )
            several = "More than one Authorization header"
            if (body := responses.get("400")) is not None:
                several = f"{body['description']}, or more than one Authorization header"
            responses["400"] = problem_response(several, headers=_CHALLENGE)
            if scopes:
                responses["403"] = problem_response(
                    f"The token lacks a scope: {', '.join(scopes)}", headers=_CHALLENGE
                )


def document_security(app: FastAPI, settings: AuthSettings) -> None:
    """Add the security schemes and answers to `app`'s OpenAPI document when it is built."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _add_security(build(), app, settings)
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]
