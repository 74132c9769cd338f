"""Redis and rate limiter metrics on `/metrics`."""

from __future__ import annotations

import re

from tests.conftest import serving
from tests.redis.conftest import redis_settings
from tests.service_process import free_port


def sample(exposition: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", exposition, re.MULTILINE)
    assert found is not None, name
    return float(found[1])


async def test_commands_pool_and_failed_open_are_exported(
    database_url: str, redis_url: str, prefix: str
) -> None:
    async with serving(redis_settings(database_url, redis_url, prefix)) as (_, http):
        for _ in range(3):
            await http.get("/nope")
        text = (await http.get("/metrics")).text
    assert sample(text, "redis_commands_total") >= 3
    assert sample(text, "redis_errors_total") == 0
    assert sample(text, "redis_pool_in_use") == 0
    assert sample(text, "rate_limit_failed_open_total") == 0

    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with serving(redis_settings(database_url, dead, prefix)) as (_, http):
        for _ in range(3):
            await http.get("/nope")
        text = (await http.get("/metrics")).text
    assert sample(text, "rate_limit_failed_open_total") == 3
    assert sample(text, "redis_errors_total") >= 1
