"""A separate process that takes one lock again and again: `python -m tests.redis.lock_contender`.

Inside the lock it raises a shared counter, checks that it is the only holder, waits a
little and lowers the counter again; a second holder at the same time is recorded
under ``<prefix>overlaps``. Arguments: Redis URL, key prefix, seconds to run.
"""

from __future__ import annotations

import asyncio
import sys

from {{ cookiecutter.package_name }}.redis.locks import LockNotAcquiredError, Locks
from {{ cookiecutter.package_name }}.redis.settings import RedisSettings
from {{ cookiecutter.package_name }}.redis.store import open_redis


async def contend(url: str, prefix: str, seconds: float) -> None:
    settings = RedisSettings(url=url, key_prefix=prefix)
    async with open_redis(settings, service="contender") as store:
        assert store is not None
        locks = Locks(store, ttl=2)
        client = store.client
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            try:
                async with locks.hold("shared", wait=0.5):
                    if await client.incr(prefix + "holders") != 1:
                        await client.incr(prefix + "overlaps")
                    await client.incr(prefix + "turns")
                    await asyncio.sleep(0.02)
                    await client.decr(prefix + "holders")
            except LockNotAcquiredError:
                pass
            await asyncio.sleep(0.005)


if __name__ == "__main__":
    asyncio.run(contend(sys.argv[1], sys.argv[2], float(sys.argv[3])))
