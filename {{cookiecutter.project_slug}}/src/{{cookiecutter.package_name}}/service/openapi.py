"""The OpenAPI document as the service really answers, for every operation.

FastAPI documents a 422 as `application/json` `HTTPValidationError` and nothing of
what the service's own layers send. `document_problems` rewrites the generated
document once, so that each operation, including any route added later, lists:

- 422 (when FastAPI lists one) as `application/problem+json` with its `errors`;
- 400 (a body that is not UTF-8 or JSON) and 413 (a body over the limit) when the
  operation takes a body;
- 503 with `Retry-After` (shed, open circuit, database unavailable) and 504 (past
  the request deadline) everywhere;
- every other problem+json response with the problem schema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from {{ cookiecutter.package_name }}.service.problems import PROBLEM_JSON

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["document_problems", "problem_response"]

_REF: Final = "#/components/schemas/"
_STRING: Final = {"type": "string"}
SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "Problem": {
        "title": "Problem",
        "description": "RFC 9457 problem details.",
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": _STRING,
            "title": _STRING,
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": _STRING,
            "instance": _STRING,
        },
    },
    "FieldError": {
        "title": "FieldError",
        "type": "object",
        "required": ["loc", "msg", "type"],
        "properties": {
            "loc": {"type": "array", "items": {"anyOf": [_STRING, {"type": "integer"}]}},
            "msg": _STRING,
            "type": _STRING,
        },
    },
    "ValidationProblem": {
        "title": "ValidationProblem",
        "description": "A problem with one entry in `errors` per invalid input.",
        "allOf": [
            {"$ref": f"{_REF}Problem"},
            {
                "type": "object",
                "required": ["errors"],
                "properties": {"errors": {"type": "array", "items": {"$ref": f"{_REF}FieldError"}}},
            },
        ],
    },
}
_RETRY_AFTER: Final = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


def problem_response(description: str, schema: str = "Problem", **extra: Any) -> dict[str, Any]:  # noqa: ANN401 - OpenAPI fragments
    """An OpenAPI response: problem+json with `schema` (a component this module adds)."""
    content = {PROBLEM_JSON: {"schema": {"$ref": f"{_REF}{schema}"}}}
    return {"description": description, "content": content, **extra}


_ALWAYS: Final = {
    "503": problem_response(
        "Overloaded, circuit open or database unavailable", headers=_RETRY_AFTER
    ),
    "504": problem_response("The request took longer than its deadline"),
}
_WITH_BODY: Final = {
    "400": problem_response("The body is not valid UTF-8 or JSON"),
    "413": problem_response("The body is larger than the limit"),
}
_OPERATIONS: Final = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


def _rewrite(document: dict[str, Any]) -> None:
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components.update(SCHEMAS)
    for path_item in document.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _OPERATIONS:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for response in responses.values():
                media = response.get("content", {}).get(PROBLEM_JSON)
                if media is not None and "schema" not in media:
                    media["schema"] = {"$ref": f"{_REF}Problem"}
            if "422" in responses:
                responses["422"] = problem_response("Invalid input", "ValidationProblem")
            extra = _ALWAYS | (_WITH_BODY if "requestBody" in operation else {})
            for status, response in extra.items():
                responses.setdefault(status, response)


def document_problems(app: FastAPI) -> None:
    """Make `app`'s OpenAPI document list the problem responses the service sends."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            _rewrite(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
