"""Opting a route in to idempotency keys, and saying so in its OpenAPI operation."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from fastapi.routing import APIRoute

from {{ cookiecutter.package_name }}.redis.idempotency import HEADER, MAX_KEY_LENGTH, REPLAYED_HEADER, Idempotent

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from {{ cookiecutter.package_name }}.redis.settings import IdempotencySettings


def make_idempotent(
    routes: list[BaseRoute],
    method: str,
    path: str,
    settings: IdempotencySettings,
    *,
    api_key_header: str | None = None,
) -> None:
    """Let the route `method path` take an ``Idempotency-Key``, and say so in its OpenAPI.

    The route is replaced by a copy in `routes`: the router it came from stays as it was.
    """
    found = next(
        (
            (i, r)
            for i, r in enumerate(routes)
            if isinstance(r, APIRoute) and r.path == path and method in (r.methods or ())
        ),
        None,
    )
    if found is None:
        msg = f"no route {method} {path} to make idempotent"
        raise LookupError(msg)
    index, route = found
    route = copy.copy(route)
    route.app = Idempotent(route.app, settings, api_key_header=api_key_header)
    problem: dict[str, Any] = {"content": {"application/problem+json": {}}}
    success = str(route.status_code or 200)
    extra: dict[str, Any] = {
        "parameters": [
            {
                "name": HEADER,
                "in": "header",
                "required": False,
                "description": "Makes a retry safe: the first answer is stored and replayed "
                "(draft-ietf-httpapi-idempotency-key-header); scoped to the caller.",
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH + 2},
            }
        ],
        "responses": {
            success: {
                "headers": {
                    REPLAYED_HEADER: {
                        "description": "`?1` when this is the stored answer to an earlier request",
                        "schema": {"type": "string"},
                    }
                }
            },
            "400": {"description": f"Malformed {HEADER}"} | problem,
            "413": {"description": "Body too large to keep for replay"} | problem,
            "503": {"description": f"{HEADER} storage unavailable; retry later"} | problem,
        },
    }
    # 409 and 422 gain a second meaning; a route that declares them keeps its description.
    declared = {str(code) for code in route.responses}
    for code, meaning in (
        ("409", f"A request with this {HEADER} is in progress"),
        ("422", f"Invalid request, or this {HEADER} was used with a different one"),
    ):
        if code not in declared:
            extra["responses"][code] = {"description": meaning} | problem
    route.openapi_extra = {**(route.openapi_extra or {}), **extra}
    routes[index] = route
