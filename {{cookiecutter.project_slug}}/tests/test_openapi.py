"""The OpenAPI document describes what the service really sends, for any route added."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel

from tests.conftest import make_settings, serving

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx
    from fastapi import FastAPI

PROBLEM = "application/problem+json"


class Gadget(BaseModel):
    name: str


def add_gadget_routes(app: FastAPI) -> None:
    """What a user adds: one path with several methods, one with a body."""

    async def read(gadget_id: int) -> dict[str, int]:
        return {"id": gadget_id}

    async def change(gadget_id: int, gadget: Gadget) -> dict[str, object]:
        return {"id": gadget_id, "name": gadget.name}

    async def remove(gadget_id: int) -> dict[str, int]:
        return {"removed": gadget_id}

    app.add_api_route("/gadgets/{gadget_id}", read, methods=["GET"])
    app.add_api_route("/gadgets/{gadget_id}", change, methods=["PATCH"])
    app.add_api_route("/gadgets/{gadget_id}", remove, methods=["DELETE"])


@pytest.fixture
async def gadgets(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Any]]]:
    async with serving(make_settings(database_url)) as (app, client):
        add_gadget_routes(app)
        app.openapi_schema = None  # routes added after start-up: document them too
        document = (await client.get("/openapi.json")).json()
        yield client, document


def operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        operation
        for path_item in document["paths"].values()
        for method, operation in path_item.items()
        if method in {"get", "put", "post", "patch", "delete"}
    ]


def schema_of(response: dict[str, Any]) -> dict[str, Any]:
    content: dict[str, Any] = response["content"]
    assert list(content) == [PROBLEM]
    schema: dict[str, Any] = content[PROBLEM]["schema"]
    return schema


async def test_every_operation_documents_the_problems_it_can_send(
    gadgets: tuple[httpx.AsyncClient, dict[str, Any]],
) -> None:
    _, document = gadgets
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    validation = schemas["ValidationProblem"]["allOf"][1]
    assert "errors" in validation["required"]
    assert operations(document)
    for operation in operations(document):
        responses = operation["responses"]
        assert schema_of(responses["422"]) == {"$ref": "#/components/schemas/ValidationProblem"}
        assert responses["503"]["headers"]["Retry-After"]["required"] is True
        schema_of(responses["503"])
        schema_of(responses["504"])
        if "requestBody" in operation:
            schema_of(responses["400"])
            schema_of(responses["413"])
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                schema_of(response)  # problem+json with a schema, never empty


async def test_a_body_that_is_not_utf8_is_a_documented_400(
    gadgets: tuple[httpx.AsyncClient, dict[str, Any]],
) -> None:
    client, _ = gadgets
    response = await client.patch(
        "/gadgets/1", content=b'{"name": "\xff"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM


async def test_405_allows_every_method_of_the_path(
    gadgets: tuple[httpx.AsyncClient, dict[str, Any]],
) -> None:
    client, document = gadgets
    documented = {method.upper() for method in document["paths"]["/gadgets/{gadget_id}"]}
    for method in ("OPTIONS", "PUT", "POST"):
        response = await client.request(method, "/gadgets/1")
        assert response.status_code == 405
        assert response.headers["content-type"] == PROBLEM
        assert set(response.headers["allow"].split(", ")) == documented
