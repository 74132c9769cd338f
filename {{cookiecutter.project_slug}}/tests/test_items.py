"""The example API end to end: HTTP in, PostgreSQL underneath, problem+json out."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from tests.service_process import running_service
from tests.session_context import CLIENT_HEADERS

PROBLEM = "application/problem+json"


async def create(client: httpx.AsyncClient, name: str, price: int = 100) -> dict[str, object]:
    response = await client.post("/items", json={"name": name, "price_cents": price})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def test_create_then_get(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/items", json={"name": "kettle", "description": "1.7 l", "price_cents": 2599}
    )
    assert response.status_code == 201
    created = response.json()
    assert response.headers["location"] == f"/items/{created['id']}"
    assert {k: created[k] for k in ("name", "description", "price_cents")} == {
        "name": "kettle",
        "description": "1.7 l",
        "price_cents": 2599,
    }

    fetched = await client.get(f"/items/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "application/json"
    assert fetched.json() == created


async def test_missing_item_is_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/items/424242")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == 404
    assert body["title"] == "Not Found"
    assert body["instance"] == "/items/424242"
    assert "424242" in body["detail"]


async def test_duplicate_name_is_409_and_keeps_the_first(
    client: httpx.AsyncClient, database_url: str
) -> None:
    first = await create(client, "lamp", 1000)
    response = await client.post("/items", json={"name": "lamp", "price_cents": 5})
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT id, price_cents FROM items")
    finally:
        await connection.close()
    assert [(r["id"], r["price_cents"]) for r in rows] == [(first["id"], 1000)]


@pytest.mark.parametrize(
    "body",
    [
        {"price_cents": 10},
        {"name": "", "price_cents": 10},
        {"name": "x" * 201, "price_cents": 10},
        {"name": "neg", "price_cents": -1},
        {"name": "str", "price_cents": "ten"},
        {"name": "extra", "price_cents": 1, "owner": "me"},
    ],
)
async def test_invalid_create_is_422_and_writes_nothing(
    client: httpx.AsyncClient, database_url: str, body: dict[str, object]
) -> None:
    response = await client.post("/items", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["errors"]
    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM items") == 0
    finally:
        await connection.close()


async def test_keyset_pagination_walks_every_item_once(client: httpx.AsyncClient) -> None:
    created = [await create(client, f"item-{i:02}") for i in range(7)]
    seen: list[object] = []
    after = None
    pages = 0
    while True:
        params = {"limit": 3} | ({"after": after} if after is not None else {})
        page = (await client.get("/items", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        after = page["next_after"]
        if after is None:
            break
    assert seen == [item["id"] for item in created]
    assert pages == 3


async def test_patch_changes_only_sent_fields(client: httpx.AsyncClient) -> None:
    item = await create(client, "chair", 4000)
    response = await client.patch(f"/items/{item['id']}", json={"price_cents": 3500})
    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["price_cents"]) == ("chair", 3500)
    assert body["updated_at"] >= body["created_at"]


async def test_patch_to_taken_name_is_409(client: httpx.AsyncClient) -> None:
    await create(client, "a")
    b = await create(client, "b")
    response = await client.patch(f"/items/{b['id']}", json={"name": "a"})
    assert response.status_code == 409
    assert (await client.get(f"/items/{b['id']}")).json()["name"] == "b"


async def test_delete_then_gone(client: httpx.AsyncClient) -> None:
    item = await create(client, "bin")
    assert (await client.delete(f"/items/{item['id']}")).status_code == 204
    assert (await client.get(f"/items/{item['id']}")).status_code == 404
    assert (await client.delete(f"/items/{item['id']}")).status_code == 404


async def test_non_numeric_id_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/items/abc")
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


def test_real_process_serves_create_then_get(database_url: str) -> None:
    with (
        running_service(database_url) as service,
        httpx.Client(base_url=service.url, headers=CLIENT_HEADERS, timeout=10) as http,
    ):
        created = http.post("/items", json={"name": "over-the-wire", "price_cents": 7})
        assert created.status_code == 201, created.text
        fetched = http.get(f"/items/{created.json()['id']}")
        assert fetched.status_code == 200
        assert fetched.json() == created.json()
