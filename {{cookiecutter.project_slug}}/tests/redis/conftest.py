"""Fixtures of the Redis tests: the server, a key prefix per test, settings that use both."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

from tests.conftest import make_settings
from tests.redis.server import delete_prefixed, new_prefix, redis_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from {{ cookiecutter.package_name }}.settings import Settings


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The Redis server of this test run."""
    with redis_server() as url:
        yield url


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    """This test's own key prefix; its keys are deleted afterwards."""
    value = new_prefix()
    yield value
    await delete_prefixed(redis_url, value)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client, to look at (or tamper with) what the service stored."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def no_client_reply_url(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> AsyncIterator[str]:
    """A URL of a user of this test's keys who may not use CLIENT REPLY (an ACL, a proxy)."""
    user, password = "t-" + secrets.token_hex(4), secrets.token_hex(16)
    await redis_client.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=[f"{prefix}*"],
        commands=["+@all", "-client|reply"],
    )
    base = redis_url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    yield f"redis://{user}:{password}@{base}/0"
    await redis_client.acl_deluser(user)


def redis_settings(
    database_url: str, redis_url: str, prefix: str, redis: dict[str, Any] | None = None
) -> Settings:
    """Test settings with Redis on, under `prefix`; `redis` overrides the group's fields."""
    group = {"url": redis_url, "key_prefix": prefix} | (redis or {})
    return make_settings(database_url, redis=group)
