"""Locks and periodic jobs against a real Redis: exclusion, renewal, loss, one run per interval."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import orjson
import pytest

from {{ cookiecutter.package_name }}.redis.jobs import heartbeat, run_periodic
from {{ cookiecutter.package_name }}.redis.locks import LockLostError, LockNotAcquiredError, Locks
from {{ cookiecutter.package_name }}.redis.settings import RedisSettings
from {{ cookiecutter.package_name }}.redis.store import RedisStore, open_redis
from tests.tcp_proxy import TcpProxy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import redis.asyncio as aioredis


@pytest.fixture
async def store(redis_url: str, prefix: str) -> AsyncIterator[RedisStore]:
    settings = RedisSettings(url=redis_url, key_prefix=prefix)
    async with open_redis(settings, service="test") as opened:
        assert opened is not None
        yield opened


def test_two_processes_never_hold_the_lock_together(redis_url: str, prefix: str) -> None:
    command = [sys.executable, "-m", "tests.redis.lock_contender", redis_url, prefix, "2"]
    processes = [subprocess.Popen(command) for _ in range(2)]
    assert [p.wait(timeout=60) for p in processes] == [0, 0]
    import redis  # noqa: PLC0415 - a synchronous look at the counters

    client = redis.Redis.from_url(redis_url)
    try:
        turns = int(client.get(prefix + "turns") or 0)
        overlaps = int(client.get(prefix + "overlaps") or 0)
    finally:
        client.close()
    assert overlaps == 0
    assert turns >= 20  # both processes got their turns, one at a time


async def test_second_holder_is_refused(store: RedisStore) -> None:
    locks = Locks(store, ttl=2)
    async with locks.hold("one"):
        with pytest.raises(LockNotAcquiredError):
            async with locks.hold("one"):
                pass
    async with locks.hold("one"):  # released on exit
        pass


async def test_renewal_keeps_a_long_holder_safe(
    store: RedisStore, redis_client: aioredis.Redis
) -> None:
    locks = Locks(store, ttl=0.3)
    name = store.key("lock", "long")
    async with locks.hold("long"):
        for _ in range(6):  # 1.2 s: four times the TTL
            await asyncio.sleep(0.2)
            assert await redis_client.exists(name)
    assert not await redis_client.exists(name)


async def test_holder_whose_lock_is_lost_is_stopped(
    store: RedisStore, redis_client: aioredis.Redis
) -> None:
    locks = Locks(store, ttl=0.6)
    reached_end = False

    async def hold_while_stolen() -> None:
        nonlocal reached_end
        async with locks.hold("stolen"):
            # Someone else takes the key (as after an expiry during a long pause).
            await redis_client.set(store.key("lock", "stolen"), b"someone-else")
            await asyncio.sleep(5)
            reached_end = True

    started = time.monotonic()
    with pytest.raises(LockLostError):
        await hold_while_stolen()
    assert not reached_end
    assert time.monotonic() - started < 1.5  # stopped at the next renewal (TTL / 3)
    assert await redis_client.get(store.key("lock", "stolen")) == b"someone-else"


async def test_lock_lost_in_an_outage_stops_the_holder(redis_url: str, prefix: str) -> None:
    proxy = TcpProxy(redis_url)
    await proxy.start()
    settings = RedisSettings(url=proxy.url, key_prefix=prefix)
    reached_end = False

    async def hold_through_outage(store: RedisStore) -> None:
        nonlocal reached_end
        async with Locks(store, ttl=0.6).hold("outage"):
            proxy.cut()  # renewals fail: after one TTL the key has surely expired
            await asyncio.sleep(5)
            reached_end = True

    try:
        async with open_redis(settings, service="test") as store:
            assert store is not None
            started = time.monotonic()
            with pytest.raises(LockLostError):
                await hold_through_outage(store)
            assert time.monotonic() - started < 2
    finally:
        await proxy.stop()
    assert not reached_end


async def test_job_runs_once_per_interval_across_replicas(
    redis_url: str, prefix: str, redis_client: aioredis.Redis
) -> None:
    runs: list[tuple[str, float, float]] = []

    def job(replica: str) -> object:
        async def run() -> None:
            began = time.monotonic()
            await asyncio.sleep(0.05)
            runs.append((replica, began, time.monotonic()))

        return run

    settings = RedisSettings(url=redis_url, key_prefix=prefix)
    async with (
        open_redis(settings, service="a") as one,
        open_redis(settings, service="b") as two,
    ):
        assert one is not None
        assert two is not None
        async with (
            run_periodic(one, Locks(one, ttl=1), {"tick": (0.3, job("a"))}),  # type: ignore[dict-item]
            run_periodic(two, Locks(two, ttl=1), {"tick": (0.3, job("b"))}),  # type: ignore[dict-item]
            run_periodic(one, Locks(one, ttl=1), {"heartbeat": (0.3, heartbeat(one))}),
        ):
            await asyncio.sleep(1.6)
    runs.sort(key=lambda run: run[1])
    assert 3 <= len(runs) <= 6  # about one per 0.3 s in 1.6 s, whichever replica
    assert all(later[1] >= earlier[2] for earlier, later in itertools.pairwise(runs))
    beat = orjson.loads(await redis_client.get(prefix + "jobs:heartbeat") or b"{}")
    assert set(beat) == {"instance", "at"}
