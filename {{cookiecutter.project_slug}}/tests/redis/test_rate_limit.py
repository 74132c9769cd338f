"""Distributed rate limits against a real Redis: headers, 429s, overrides, outages, replicas."""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor
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


def policy(limit: int, window: int = 60, burst: int | None = None) -> dict[str, object]:
    return {"limit": limit, "window_seconds": window, "burst": burst}


async def test_quota_then_429_with_retry_after_and_fields(
    database_url: str, redis_url: str, prefix: str
) -> None:
    settings = redis_settings(
        database_url, redis_url, prefix, {"rate_limit": {"default": policy(3, burst=3)}}
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
    # All three at once, so one token per window (+ the 1 s lease time): 61 s at most.
    assert 55 <= int(refused.headers["Retry-After"]) <= 61


async def test_default_burst_is_half_the_limit(
    database_url: str, redis_url: str, prefix: str
) -> None:
    settings = redis_settings(
        database_url, redis_url, prefix, {"rate_limit": {"default": policy(6)}}
    )
    async with serving(settings) as (_, http):
        answers = [(await http.get("/nope")).status_code for _ in range(4)]
    assert answers == [404, 404, 404, 429]


async def test_burst_then_sustained_rate(database_url: str, redis_url: str, prefix: str) -> None:
    # 10 in any second, 2 of them at once: the other 8 (+1) come back one per
    # (1 s + 0.1 s of lease time) / 9 = 122 ms.
    settings = redis_settings(
        database_url, redis_url, prefix, {"rate_limit": {"default": policy(10, 1, burst=2)}}
    )
    async with serving(settings) as (_, http):
        first = [(await http.get("/nope")).status_code for _ in range(3)]
        await asyncio.sleep(0.3)
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


def hammer(
    urls: list[str], seconds: float, threads: int = 4
) -> list[tuple[float, float, httpx.Response]]:
    """Requests from one caller to `urls` in turn: (sent, answered, response) each."""
    answers: list[tuple[float, float, httpx.Response]] = []
    deadline = time.monotonic() + seconds

    def worker(offset: int) -> None:
        with httpx.Client(headers=CLIENT_HEADERS, timeout=10) as client:
            n = offset
            while (sent := time.monotonic()) < deadline:
                response = client.get(f"{urls[n % len(urls)]}/nope")
                answers.append((sent, time.monotonic(), response))
                n += 1

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return answers


def most_in_any_window(admitted: list[tuple[float, float]], window: float) -> int:
    """The most admissions certainly inside one `window`: sent after its start, answered
    before its end (the admission itself happened between the two)."""
    return max(
        sum(1 for sent, answered in admitted if sent >= start and answered < start + window)
        for start, _ in admitted
    )


def test_two_replicas_never_exceed_the_policy_in_any_window(
    database_url: str, redis_url: str, prefix: str
) -> None:
    # q=60 in any 2 s, 40 at once: leases of up to 10 tokens per replica (a quarter of
    # the burst), spent within 0.2 s; the refill is 21 tokens per 2.2 s.
    limit, window = 60, 2
    env = {
        f"{ENV_PREFIX}REDIS__URL": redis_url,
        f"{ENV_PREFIX}REDIS__KEY_PREFIX": prefix,
        f"{ENV_PREFIX}REDIS__RATE_LIMIT__DEFAULT__LIMIT": str(limit),
        f"{ENV_PREFIX}REDIS__RATE_LIMIT__DEFAULT__WINDOW_SECONDS": str(window),
        f"{ENV_PREFIX}REDIS__RATE_LIMIT__DEFAULT__BURST": "40",
    }
    with running_service(database_url, env) as one, running_service(database_url, env) as two:
        answers = hammer([one.url, two.url], seconds=5.0)
    admitted = [(sent, answered) for sent, answered, a in answers if a.status_code == 404]
    refused = [a for _, _, a in answers if a.status_code == 429]
    assert len(admitted) + len(refused) == len(answers)
    # The promise, with no tolerance: never more than q in any w seconds...
    assert most_in_any_window(admitted, window) <= limit
    # ...and not kept by refusing everything: the burst, then ~21 per 2.2 s for ~5 s
    # (less what leases left unspent drop, at most 10 per replica per 0.2 s).
    assert len(admitted) >= 40 + 20
    assert len(refused) > 0
    assert all(a.headers["Retry-After"].isdigit() and "RateLimit" in a.headers for a in refused)
    ports = {a.url.port for _, _, a in answers if a.status_code == 404}
    assert ports == {httpx.URL(one.url).port, httpx.URL(two.url).port}
    assert {a.headers["RateLimit-Policy"] for _, _, a in answers} == {'"default";q=60;w=2'}
