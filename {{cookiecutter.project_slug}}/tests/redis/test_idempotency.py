"""Idempotency keys against a real Redis: key syntax, 5xx answers not stored, on any route;
the record's write without CLIENT REPLY, after a lost connection, failing on Redis."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from {{ cookiecutter.package_name }}.redis.idempotency import parse_key, store_key
from {{ cookiecutter.package_name }}.redis.idempotent_routes import make_idempotent
from {{ cookiecutter.package_name }}.redis.settings import IdempotencySettings, RedisSettings
from {{ cookiecutter.package_name }}.redis.store import open_redis

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import redis.asyncio as aioredis

    from {{ cookiecutter.package_name }}.redis.store import RedisStore


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": f'"{value}"'}


def test_key_syntax() -> None:
    assert parse_key(b'"abc"') == b"abc"
    assert parse_key(b"4f8a-11") == b"4f8a-11"  # a bare token, as many clients send
    assert parse_key(b"a b") == b"a b"
    assert parse_key(b'""') is None
    assert parse_key(b'"a"b"') is None
    assert parse_key(b'"abc') is None
    assert parse_key(b'abc"') is None
    assert parse_key(b"") is None
    assert parse_key(b"a\tb") is None
    assert parse_key(b'"' + b"x" * 255 + b'"') == b"x" * 255
    assert parse_key(b"x" * 255) == b"x" * 255
    assert parse_key(b'"' + b"x" * 256 + b'"') is None
    assert parse_key(b"x" * 256) is None


def test_store_keys_keep_callers_apart() -> None:
    assert store_key("p:", "user:a", b"b:c") == b"p:idem:6:user:a:b:c"
    assert store_key("p:", "user:a:b", b"c") == b"p:idem:8:user:a:b:c"


@pytest.mark.parametrize("scripts_cached", [True, False])
async def test_5xx_is_not_stored(
    redis_url: str, prefix: str, redis_client: aioredis.Redis, *, scripts_cached: bool
) -> None:
    # Also with Redis's script cache empty (restarted, flushed): the release written after
    # the 503, unanswered, must still come before the retry's claim.
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


async def post_twice(
    redis_url: str, prefix: str, during: Callable[[RedisStore], Awaitable[None]]
) -> tuple[httpx.Response, httpx.Response, int]:
    """Two POSTs with one key to a route whose first call runs `during` (a fault).

    Then two with another key: each must get its own answer, the second replayed.
    """
    calls = 0

    async def create(request: Request) -> Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await during(request.app.state.redis)
        return Response(b"made %d" % calls, status_code=201)

    app = FastAPI()
    app.post("/jobs")(create)
    make_idempotent(app.router.routes, "POST", "/jobs", IdempotencySettings())
    async with open_redis(RedisSettings(url=redis_url, key_prefix=prefix), service="t") as store:
        app.state.redis = store
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            first = await http.post("/jobs", headers=key("f"))
            retry = await http.post("/jobs", headers=key("f"))
            after = [await http.post("/jobs", headers=key("g")) for _ in range(2)]
    assert [a.status_code for a in after] == [201, 201]
    assert after[0].content == after[1].content == b"made 2"
    assert after[1].headers["Idempotent-Replayed"] == "?1"
    return first, retry, calls - 1


async def test_record_is_stored_where_client_reply_is_refused(
    no_client_reply_url: str, prefix: str
) -> None:
    # No unanswered write (an ACL refuses CLIENT REPLY): the record's write is awaited.
    async def nothing(_: RedisStore) -> None:
        pass

    first, retry, calls = await post_twice(no_client_reply_url, prefix, nothing)
    assert (first.status_code, retry.status_code, calls) == (201, 201, 1)
    assert retry.headers["Idempotent-Replayed"] == "?1"


async def test_connection_lost_before_the_record_write(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    # The lean connection dies while the route runs: the record's write reconnects.
    async def kill(store: RedisStore) -> None:
        await redis_client.client_kill_filter(_id=await store.scripts.execute("CLIENT", "ID"))
        await asyncio.sleep(0.05)  # the loss is seen

    first, retry, calls = await post_twice(redis_url, prefix, kill)
    assert (first.status_code, retry.status_code, calls) == (201, 201, 1)
    assert retry.headers["Idempotent-Replayed"] == "?1"


async def test_record_write_failing_on_redis_leaves_the_connection_in_step(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    # The record's write fails on Redis (its claim turned into a hash, say): the error
    # reply is not sent, the claim is left, and every later reply goes to its own caller.
    spoilt: list[bytes] = []

    async def spoil(store: RedisStore) -> None:
        spoilt[:] = [k async for k in redis_client.scan_iter(match=f"{prefix}idem:*")]
        [claim] = spoilt
        await redis_client.delete(claim)
        await redis_client.hset(claim, "spoilt", "1")
        assert await store.scripts.execute("ECHO", "before") == b"before"

    first, retry, calls = await post_twice(redis_url, prefix, spoil)
    assert (first.status_code, retry.status_code, calls) == (201, 503, 1)  # WRONGTYPE: 503
    assert retry.headers["Retry-After"] == "1"
    assert await redis_client.hgetall(spoilt[0]) == {b"spoilt": b"1"}


async def test_any_body_is_replayed_as_it_was_sent(redis_url: str, prefix: str) -> None:
    payload = bytes(range(256)) + b'\n{"x": 1}\r\n\n'  # binary, with newlines and JSON

    async def binary() -> Response:
        return Response(payload, status_code=200, media_type="application/octet-stream")

    app = FastAPI()
    app.post("/blobs")(binary)
    make_idempotent(app.router.routes, "POST", "/blobs", IdempotencySettings())
    async with open_redis(RedisSettings(url=redis_url, key_prefix=prefix), service="t") as store:
        app.state.redis = store
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            first = await http.post("/blobs", headers=key("b"), content=b"in")
            retry = await http.post("/blobs", headers=key("b"), content=b"in")
    assert first.content == retry.content == payload
    assert retry.headers["Content-Type"] == "application/octet-stream"
    assert retry.headers["Idempotent-Replayed"] == "?1"


async def test_a_claim_taken_over_after_expiry_is_not_overwritten(
    redis_url: str, prefix: str
) -> None:
    # The first request outlives its claim; a retry claims the key again and finishes
    # first: the late first answer must not replace the retry's stored one.
    calls = 0

    async def slow() -> Response:
        nonlocal calls
        calls += 1
        mine = calls
        if mine == 1:
            await asyncio.sleep(0.5)
        return Response(b"answer %d" % mine, status_code=201)

    app = FastAPI()
    app.post("/jobs")(slow)
    make_idempotent(app.router.routes, "POST", "/jobs", IdempotencySettings(in_flight_seconds=0.2))
    async with open_redis(RedisSettings(url=redis_url, key_prefix=prefix), service="t") as store:
        app.state.redis = store
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            first = asyncio.ensure_future(http.post("/jobs", headers=key("x")))
            await asyncio.sleep(0.3)  # the first's claim has expired
            second = await http.post("/jobs", headers=key("x"))
            await first
            third = await http.post("/jobs", headers=key("x"))
    assert (first.result().content, second.content) == (b"answer 1", b"answer 2")
    assert third.content == b"answer 2"
    assert third.headers["Idempotent-Replayed"] == "?1"
