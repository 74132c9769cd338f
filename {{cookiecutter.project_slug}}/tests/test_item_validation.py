"""Input the database cannot hold is a 422 from validation, never a 500 from the driver."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import httpx

INT64_MAX = 2**63 - 1
TOO_BIG = [str(INT64_MAX + 1), "9" * 30]


def assert_invalid(response: httpx.Response) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"]


async def count_items(client: httpx.AsyncClient) -> int:
    response = await client.get("/items", params={"limit": 200})
    assert response.status_code == 200
    return len(response.json()["items"])


@pytest.mark.parametrize("item_id", TOO_BIG)
async def test_ids_beyond_bigint_are_422(client: httpx.AsyncClient, item_id: str) -> None:
    assert_invalid(await client.get(f"/items/{item_id}"))
    assert_invalid(await client.patch(f"/items/{item_id}", json={"price_cents": 1}))
    assert_invalid(await client.delete(f"/items/{item_id}"))
    assert_invalid(await client.get("/items", params={"after": item_id}))


async def test_largest_bigint_id_is_an_ordinary_miss(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/items/{INT64_MAX}")).status_code == 404
    assert (await client.get("/items", params={"after": INT64_MAX})).json()["items"] == []


async def test_openapi_shows_the_bounds(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    parameters = {
        (path, p["name"]): p["schema"]
        for path, operations in spec["paths"].items()
        for operation in operations.values()
        for p in operation.get("parameters", [])
    }
    assert parameters["/items/{item_id}", "item_id"]["maximum"] == INT64_MAX
    assert parameters["/items", "after"]["maximum"] == INT64_MAX
    fields = spec["components"]["schemas"]["ItemCreate"]["properties"]
    assert fields["price_cents"]["maximum"] == 2**31 - 1


@pytest.mark.parametrize("field", ["name", "description"])
async def test_nul_characters_are_422_and_nothing_is_stored(
    client: httpx.AsyncClient, field: str
) -> None:
    body = {"name": "plain", "price_cents": 1} | {field: "a\x00b"}
    assert_invalid(await client.post("/items", json=body))
    assert await count_items(client) == 0

    created = await client.post("/items", json={"name": "kept", "price_cents": 1})
    item_id = created.json()["id"]
    assert_invalid(await client.patch(f"/items/{item_id}", json={field: "x\x00"}))
    assert (await client.get(f"/items/{item_id}")).json()["name"] == "kept"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "bool price", "price_cents": False},
        {"name": "string price", "price_cents": "12"},
        {"name": "float price", "price_cents": 12.5},
        {"name": 12, "price_cents": 1},
        {"name": "number description", "description": 3, "price_cents": 1},
    ],
    ids=["bool-int", "str-int", "float-int", "int-str", "int-description"],
)
async def test_json_types_are_strict(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    assert_invalid(await client.post("/items", json=body))
    assert await count_items(client) == 0


async def test_a_whole_number_written_as_a_float_is_an_integer(client: httpx.AsyncClient) -> None:
    # JSON Schema's `integer` includes 250.0: the OpenAPI document promises it.
    response = await client.post("/items", json={"name": "float price", "price_cents": 250.0})
    assert response.status_code == 201, response.text
    assert response.json()["price_cents"] == 250
