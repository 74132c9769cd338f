"""Idempotency keys against a real Redis: key syntax, 5xx answers not stored, on any route."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import orjson
import pytest
from fastapi import FastAPI, Response

from {{ cookiecutter.package_name }}.redis.idempotency import parse_key
from {{ cookiecutter.package_name }}.redis.idempotent_routes import make_idempotent
from {{ cookiecutter.package_name }}.redis.settings import IdempotencySettings, RedisSettings
from {{ cookiecutter.package_name }}.redis.store import open_redis

if TYPE_CHECKING:
    import redis.asyncio as aioredis


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": f'"{value}"'}


def test_key_syntax() -> None:
    assert parse_key(b'"abc"') == "abc"
    assert parse_key(b"4f8a-11") == "4f8a-11"  # a bare token, as many clients send
    assert parse_key(b'""') is None
    assert parse_key(b'"a"b"') is None
    assert parse_key(b'"' + b"x" * 255 + b'"') == "x" * 255


@pytest.mark.parametrize("scripts_cached", [True, False])
async def test_5xx_is_not_stored(
    redis_url: str, prefix: str, redis_client: aioredis.Redis, *, scripts_cached: bool
) -> None:
    # Also with Redis's script cache empty (restarted, flushed): the release written after
    # the 503, unawaited, must still come before the retry's claim.
    if not scripts_cached:
        await redis_client.script_flush()
    calls = 0

    async def flaky() -> Response:
        nonlocal calls
        calls += 1
        return Response(b"down" if calls == 1 else b"ok", status_code=503 if calls == 1 else 201)

    app = FastAPI()
    app.post("/jobs")(flaky)
    make_idempotent(app.router.routes, "POST", "/jobs", IdempotencySettings())
    settings = RedisSettings(url=redis_url, key_prefix=prefix)
    async with open_redis(settings, service="test") as store:
        app.state.redis = store
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            first = await http.post("/jobs", headers=key("j"))
            second = await http.post("/jobs", headers=key("j"))
            third = await http.post("/jobs", headers=key("j"))
    assert [first.status_code, second.status_code, third.status_code] == [503, 201, 201]
    assert third.headers["Idempotent-Replayed"] == "?1"
    assert calls == 2


async def test_records_replay_any_body_and_earlier_json_records_are_read(
    redis_url: str, prefix: str, redis_client: aioredis.Redis
) -> None:
    # A body that looks like the end of the record's head, and no header kept.
    calls = 0

    async def create() -> Response:
        nonlocal calls
        calls += 1
        return Response(b"a\r\n\r\nb: c\r\n", status_code=201, media_type=None)

    app = FastAPI()
    app.post("/jobs")(create)
    make_idempotent(app.router.routes, "POST", "/jobs", IdempotencySettings())
    settings = RedisSettings(url=redis_url, key_prefix=prefix)
    async with open_redis(settings, service="test") as store:
        app.state.redis = store
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            first = await http.post("/jobs", headers=key("j"), content=b"x")
            retry = await http.post("/jobs", headers=key("j"), content=b"x")
            assert (retry.status_code, retry.content) == (201, first.content)
            assert retry.headers["Idempotent-Replayed"] == "?1"
            # Records in the JSON format written before (a deploy within their lifetime):
            # a finished one is replayed, a claim is in progress, anything else runs nothing.
            [record_key] = await redis_client.keys(f"{prefix}*")
            fingerprint = (await redis_client.get(record_key)).split(b" ")[1].decode()
            stored = {"token": "t", "fingerprint": fingerprint, "state": "done", "status": 202}
            stored |= {"headers": [["location", "/jobs/1"]], "body": b"old".hex()}
            await redis_client.set(record_key, orjson.dumps(stored))
            old = await http.post("/jobs", headers=key("j"), content=b"x")
            assert (old.status_code, old.content) == (202, b"old")
            assert old.headers["location"] == "/jobs/1"
            claim = {"token": "t", "fingerprint": fingerprint, "state": "running"}
            await redis_client.set(record_key, orjson.dumps(claim))
            running = await http.post("/jobs", headers=key("j"), content=b"x")
            await redis_client.set(record_key, b"garbage")
            unreadable = await http.post("/jobs", headers=key("j"), content=b"x")
    assert running.status_code == unreadable.status_code == 409
    assert calls == 1
