"""Distributed rate limits against a real Redis: headers, 429s, overrides, outages, replicas."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

import httpx

from {{ cookiecutter.package_name }}.settings import ENV_PREFIX
from tests.conftest import serving
from tests.redis.conftest import redis_settings
from tests.service_process import free_port, running_service
from tests.session_context import CLIENT_HEADERS, caller_headers

if TYPE_CHECKING:
    import redis.asyncio as aioredis

RATELIMIT = re.compile(r'^"(?P<name>[a-z0-9]+)";r=(?P<r>\d+);t=(?P<t>\d+)$')


def policy(limit: int, window: float = 60, burst: int | None = None) -> dict[str, object]:
    return {"limit": limit, "window_seconds": window, "burst": burst}


async def test_quota_then_429_with_retry_after_and_fields(
    database_url: str, redis_url: str, prefix: str
) -> None:
    settings = redis_settings(
        database_url, redis_url, prefix, {"rate_limit": {"default": policy(3)}}
    )
    async with serving(settings) as (_, http):
        answers = [await http.get("/nope") for _ in range(4)]
    assert [a.status_code for a in answers] == [404, 404, 404, 429]
    remaining = [int(RATELIMIT.match(a.headers["RateLimit"])["r"]) for a in answers]  # type: ignore[index]
    assert remaining == [2, 1, 0, 0]
    assert {a.headers["RateLimit-Policy"] for a in answers} == {'"default";q=3;w=60'}
    refused = answers[-1]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 429
    # One token per 20 s: the next one is due in 20 s at most.
    assert 1 <= int(refused.headers["Retry-After"]) <= 20


async def test_burst_then_sustained_rate(database_url: str, redis_url: str, prefix: str) -> None:
    # 10 per second sustained, 2 at once: a token every 100 ms.
    settings = redis_settings(
        database_url, redis_url, prefix, {"rate_limit": {"default": policy(10, 1, burst=2)}}
    )
    async with serving(settings) as (_, http):
        first = [(await http.get("/nope")).status_code for _ in range(3)]
        await asyncio.sleep(0.25)
        later = [(await http.get("/nope")).status_code for _ in range(3)]
    assert first == [404, 404, 429]
    assert later[:2] == [404, 404]
    assert later[2] == 429


async def test_route_override_and_exempt_probes(
    database_url: str, redis_url: str, prefix: str
) -> None:
    overrides = {"default": policy(100), "routes": {"GET /reports/{report_id}": policy(1)}}
    settings = redis_settings(database_url, redis_url, prefix, {"rate_limit": overrides})
    async with serving(settings) as (_, http):
        first = await http.get("/reports/1")
        refused = await http.get("/reports/2")  # one bucket for the policy, whatever the id
        other_method = await http.delete("/reports/2")
        probes = [await http.get("/health/live") for _ in range(3)]
    assert first.status_code == 404
    assert refused.status_code == 429
    assert refused.headers["RateLimit-Policy"] == '"route0";q=1;w=60'
    assert other_method.status_code != 429
    assert other_method.headers["RateLimit-Policy"] == '"default";q=100;w=60'
    assert all(p.status_code == 200 and "RateLimit" not in p.headers for p in probes)


async def test_api_keys_get_their_own_buckets(
    database_url: str, redis_url: str, prefix: str, redis_client: aioredis.Redis
) -> None:
    limits = {"default": policy(1), "api_key_header": "X-API-Key"}
    settings = redis_settings(database_url, redis_url, prefix, {"rate_limit": limits})
    # Two callers: two API keys (and, with authentication, two token subjects, which are
    # identifiers, not secrets, and are keyed in clear: they are named apart from the keys).
    alpha = caller_headers("caller-1") | {"X-API-Key": "alpha"}
    beta = caller_headers("caller-2") | {"X-API-Key": "beta"}
    async with serving(settings) as (_, http):
        a = [(await http.get("/nope", headers=alpha)).status_code for _ in "12"]
        b = [(await http.get("/nope", headers=beta)).status_code for _ in "12"]
    assert a == [404, 429]
    assert b == [404, 429]
    keys = [key.decode() async for key in redis_client.scan_iter(match=f"{prefix}*")]
    assert len(keys) == 2
    assert not any("alpha" in key or "beta" in key for key in keys)  # stored hashed


async def test_fail_open_when_redis_is_unreachable(database_url: str, prefix: str) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = redis_settings(database_url, dead, prefix, {"rate_limit": {"default": policy(1)}})
    async with serving(settings) as (app, http):
        answers = [await http.get("/nope") for _ in range(5)]
        limiter = app.state.rate_limiter
    assert [a.status_code for a in answers] == [404] * 5
    assert all("RateLimit" not in a.headers for a in answers)
    assert limiter.failed_open == 5


async def test_fail_closed_answers_503(database_url: str, prefix: str) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = redis_settings(database_url, dead, prefix, {"rate_limit": {"fail_open": False}})
    async with serving(settings) as (_, http):
        answer = await http.get("/nope")
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"


def test_two_replicas_share_one_limit(database_url: str, redis_url: str, prefix: str) -> None:
    env = {
        f"{ENV_PREFIX}REDIS__URL": redis_url,
        f"{ENV_PREFIX}REDIS__KEY_PREFIX": prefix,
        f"{ENV_PREFIX}REDIS__RATE_LIMIT__DEFAULT__LIMIT": "20",
        f"{ENV_PREFIX}REDIS__RATE_LIMIT__DEFAULT__WINDOW_SECONDS": "60",
    }
    with (
        running_service(database_url, env) as one,
        running_service(database_url, env) as two,
        httpx.Client(headers=CLIENT_HEADERS, timeout=10) as client,
    ):
        answers = [client.get(f"{(one, two)[i % 2].url}/nope") for i in range(60)]
    admitted = [a for a in answers if a.status_code == 404]
    refused = [a for a in answers if a.status_code == 429]
    assert len(admitted) + len(refused) == 60
    # 20 at once, then one token every 3 s: the run takes far less than 3 s per extra.
    assert 20 <= len(admitted) <= 21
    assert all(a.headers["Retry-After"].isdigit() and "RateLimit" in a.headers for a in refused)
    assert {a.url.port for a in admitted} == {httpx.URL(one.url).port, httpx.URL(two.url).port}
