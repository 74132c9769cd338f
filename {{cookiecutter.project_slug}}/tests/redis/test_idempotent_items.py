"""Idempotency keys on `POST /items`, against a real Redis; the rate limits in its OpenAPI."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg

from tests.conftest import serving
from tests.redis.conftest import redis_settings
from tests.session_context import caller_headers

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.settings import Settings


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": f'"{value}"'}


async def item_count(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM items")
        return count
    finally:
        await connection.close()


def settings_for(database_url: str, redis_url: str, prefix: str, **idem: float) -> Settings:
    return redis_settings(database_url, redis_url, prefix, {"idempotency": idem} if idem else None)


async def test_retry_gets_the_stored_answer(database_url: str, redis_url: str, prefix: str) -> None:
    async with serving(settings_for(database_url, redis_url, prefix)) as (_, http):
        body = {"name": "lamp", "price_cents": 1200}
        first = await http.post("/items", json=body, headers=key("k-1"))
        retry = await http.post("/items", json=body, headers=key("k-1"))
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["Location"] == first.headers["Location"]
    assert retry.headers["Idempotent-Replayed"] == "?1"
    assert "Idempotent-Replayed" not in first.headers
    assert retry.headers["X-Request-ID"] != first.headers["X-Request-ID"]
    assert await item_count(database_url) == 1


async def test_same_key_different_body_is_422(
    database_url: str, redis_url: str, prefix: str
) -> None:
    async with serving(settings_for(database_url, redis_url, prefix)) as (_, http):
        await http.post("/items", json={"name": "a", "price_cents": 1}, headers=key("k"))
        other = await http.post("/items", json={"name": "b", "price_cents": 1}, headers=key("k"))
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert await item_count(database_url) == 1


async def test_keys_are_scoped_per_caller(database_url: str, redis_url: str, prefix: str) -> None:
    group = {"rate_limit": {"api_key_header": "X-API-Key"}}
    settings = redis_settings(database_url, redis_url, prefix, group)
    async with serving(settings) as (_, http):
        # Two callers: two API keys (and, with authentication, two token subjects).
        one = await http.post(
            "/items",
            json={"name": "a", "price_cents": 1},
            headers=key("k") | caller_headers("one") | {"X-API-Key": "1"},
        )
        two = await http.post(
            "/items",
            json={"name": "b", "price_cents": 1},
            headers=key("k") | caller_headers("two") | {"X-API-Key": "2"},
        )
    assert one.status_code == two.status_code == 201
    assert "Idempotent-Replayed" not in two.headers


async def test_concurrent_duplicates_create_one_row(
    database_url: str, redis_url: str, prefix: str
) -> None:
    async with serving(settings_for(database_url, redis_url, prefix)) as (_, http):
        body = {"name": "racer", "price_cents": 5}
        answers = await asyncio.gather(
            *(http.post("/items", json=body, headers=key("race")) for _ in range(10))
        )
    statuses = sorted(a.status_code for a in answers)
    created = [a for a in answers if a.status_code == 201]
    assert set(statuses) <= {201, 409}
    assert len([a for a in created if "Idempotent-Replayed" not in a.headers]) == 1
    assert all(a.headers["Retry-After"] == "1" for a in answers if a.status_code == 409)
    assert await item_count(database_url) == 1


async def test_expired_key_runs_the_request_again(
    database_url: str, redis_url: str, prefix: str
) -> None:
    settings = settings_for(database_url, redis_url, prefix, ttl_seconds=0.3)
    async with serving(settings) as (_, http):
        body = {"name": "once", "price_cents": 5}
        await http.post("/items", json=body, headers=key("short"))
        await asyncio.sleep(0.5)
        again = await http.post("/items", json=body, headers=key("short"))
    # Not replayed: the route ran again, and found its name taken.
    assert again.status_code == 409
    assert "Idempotent-Replayed" not in again.headers
    assert "exists already" in again.json()["detail"]


async def test_malformed_key_is_400_and_changes_nothing(
    database_url: str, redis_url: str, prefix: str
) -> None:
    async with serving(settings_for(database_url, redis_url, prefix)) as (_, http):
        too_long = await http.post(
            "/items", json={"name": "a", "price_cents": 1}, headers=key("x" * 256)
        )
        control = await http.post(
            "/items", json={"name": "a", "price_cents": 1}, headers={"Idempotency-Key": "a\tb"}
        )
        plain = await http.post("/items", json={"name": "a", "price_cents": 1})
    assert too_long.status_code == control.status_code == 400
    assert plain.status_code == 201
    assert await item_count(database_url) == 1


async def test_openapi_documents_the_header(database_url: str, redis_url: str, prefix: str) -> None:
    async with serving(settings_for(database_url, redis_url, prefix)) as (_, http):
        document = (await http.get("/openapi.json")).json()
    operation = document["paths"]["/items"]["post"]
    assert [p["name"] for p in operation["parameters"]] == ["Idempotency-Key"]
    assert "Idempotent-Replayed" in operation["responses"]["201"]["headers"]
    assert "Idempotency-Key" not in str(document["paths"]["/items/{item_id}"])


async def test_openapi_documents_429_and_fields(
    database_url: str, redis_url: str, prefix: str
) -> None:
    async with serving(redis_settings(database_url, redis_url, prefix)) as (_, http):
        document = (await http.get("/openapi.json")).json()
    operation = document["paths"]["/items/{item_id}"]["get"]
    assert "Retry-After" in operation["responses"]["429"]["headers"]
    assert {"RateLimit", "RateLimit-Policy"} <= set(operation["responses"]["200"]["headers"])
