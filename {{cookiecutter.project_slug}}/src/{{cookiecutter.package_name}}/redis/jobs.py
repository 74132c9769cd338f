"""Periodic jobs: each runs at most once per interval across all replicas, one at a time.

Every replica runs the same loop; a run needs the job's lock (so two runs never
overlap, even when one outlasts the interval) and the job's "due" marker, a key that
lives for one interval (so the fleet runs it once per interval, not once per replica).
The loops start with the lifespan and are cancelled and awaited when it ends.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import orjson
import structlog

from {{ cookiecutter.package_name }}.redis.locks import LockLostError, LockNotAcquiredError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

    from {{ cookiecutter.package_name }}.redis.locks import Locks
    from {{ cookiecutter.package_name }}.redis.store import RedisStore

log = structlog.get_logger(__name__)


@asynccontextmanager
async def run_periodic(
    store: RedisStore,
    locks: Locks,
    jobs: Mapping[str, tuple[float, Callable[[], Awaitable[None]]]],
) -> AsyncIterator[None]:
    """Run each job (name -> (interval seconds, job)) until the block ends."""
    tasks = [
        asyncio.create_task(_loop(store, locks, name, interval, job), name=f"job:{name}")
        for name, (interval, job) in jobs.items()
        if interval > 0
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _loop(
    store: RedisStore,
    locks: Locks,
    name: str,
    interval: float,
    job: Callable[[], Awaitable[None]],
) -> None:
    due_key = store.key("jobs", name, "due")
    while True:
        # Jitter: replicas started together do not all ask at the same instant.
        await asyncio.sleep(interval * random.uniform(0.1, 0.3))  # noqa: S311 - not crypto
        try:
            async with locks.hold(f"job:{name}"):
                due = await store.call(
                    "SET", store.client.set, due_key, b"1", nx=True, px=int(interval * 1000)
                )
                if due:
                    await job()
                    log.info("job_ran", job=name)
        except LockNotAcquiredError:
            pass  # another replica is running it
        except LockLostError:
            log.warning("job_cancelled_lock_lost", job=name)
        except Exception:
            log.exception("job_failed", job=name)
        await asyncio.sleep(interval * 0.8)


def heartbeat(store: RedisStore) -> Callable[[], Awaitable[None]]:
    """The example job: records which replica ran last, and when, under ``jobs:heartbeat``."""
    instance = f"{socket.gethostname()}:{os.getpid()}"

    async def beat() -> None:
        record = orjson.dumps({"instance": instance, "at": time.time()})
        await store.call("SET", store.client.set, store.key("jobs", "heartbeat"), record)

    return beat
