"""Idempotency keys against a real Redis: key syntax, 5xx answers not stored, on any route."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
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
