"""Errors as RFC 9457 problem details (`application/problem+json`).

Every error the service answers, from validation to an open circuit, has the same
shape: `type`, `title`, `status`, `detail`, `instance`, plus extension members.
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import TYPE_CHECKING

import orjson
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from {{ cookiecutter.package_name }}.resilience.breaker import CircuitOpenError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fastapi import FastAPI, Request
    from starlette.types import Send

PROBLEM_JSON = "application/problem+json"


def problem_body(
    status: int, detail: str, *, instance: str | None = None, **extra: object
) -> bytes:
    """Serialise one problem document."""
    body: dict[str, object] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    return orjson.dumps(body)


def problem(
    status: int,
    detail: str,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: object,
) -> Response:
    """A problem+json response for route handlers and exception handlers."""
    return Response(
        problem_body(status, detail, instance=instance, **extra),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


async def send_problem(
    send: Send,
    status: int,
    detail: str,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Answer from inside pure ASGI middleware, where there is no Response machinery."""
    body = problem_body(status, detail, instance=instance)
    raw_headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def retry_after(seconds: float) -> dict[str, str]:
    """A `Retry-After` header: whole seconds, at least one."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def allowed_methods(request: Request) -> str:
    """Every method some route serves at the request's path, for a 405's `Allow`.

    Starlette names only the first matching route's methods, while FastAPI declares one
    route per method (`GET` and `PATCH /items/{id}` are two routes).
    """
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for this type only
    headers = exc.headers
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        headers = {**(headers or {}), "Allow": allowed_methods(request)}
    return problem(exc.status_code, str(exc.detail), instance=request.url.path, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    errors = [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    return problem(422, "the request is invalid", instance=request.url.path, errors=errors)


async def _circuit_open(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CircuitOpenError)  # noqa: S101
    return problem(
        503,
        f"{exc.breaker} is unavailable; failing fast while its circuit is open",
        instance=request.url.path,
        headers=retry_after(exc.retry_after),
    )


async def _timed_out(request: Request, _: Exception) -> Response:
    return problem(504, "a downstream call timed out", instance=request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error kind the service itself raises as problem+json.

    Each part adds the handlers for its own errors (the database's 503, a downstream
    service's 502).
    """
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(CircuitOpenError, _circuit_open)
    app.add_exception_handler(TimeoutError, _timed_out)
