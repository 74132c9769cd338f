"""Distributed locks on redis-py's `Lock`, renewed by a watchdog while the holder runs.

``async with locks.hold("name"):`` takes the lock (an owner token with a TTL; released
atomically, only by its owner). While the block runs, a watchdog renews the TTL every
third of it. If the lock is lost (someone else owns the key, or Redis stayed out of
reach for a whole TTL so the key has surely expired), the watchdog cancels the block,
and `hold` raises `LockLostError`: the holder stops before a second holder can start.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING

import structlog
from redis.exceptions import LockError, LockNotOwnedError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from redis.asyncio.lock import Lock

    from {{ cookiecutter.package_name }}.redis.store import RedisStore

log = structlog.get_logger(__name__)


class LockNotAcquiredError(Exception):
    """Someone else holds the lock (after waiting, if asked to wait)."""


class LockLostError(Exception):
    """The lock was lost while held; the holder's work was cancelled."""


class Locks:
    """Named locks under the service's key prefix."""

    def __init__(self, store: RedisStore, *, ttl: float) -> None:
        """`ttl` (seconds) is how long a lock outlives a holder that died without releasing it."""
        self._store = store
        self._ttl = ttl

    @asynccontextmanager
    async def hold(
        self, name: str, *, ttl: float | None = None, wait: float = 0.0
    ) -> AsyncIterator[None]:
        """Hold lock `name` for the block; wait up to `wait` seconds to get it.

        Raises `LockNotAcquiredError` if it is taken, `LockLostError` if it is lost
        while the block runs (the block is cancelled first), and redis-py's errors or
        `CircuitOpenError` if Redis is out of reach when taking it.
        """
        ttl = ttl or self._ttl
        store = self._store
        lock = store.client.lock(
            store.key("lock", name),
            timeout=ttl,
            blocking=wait > 0,
            blocking_timeout=wait or None,
            thread_local=False,  # the token belongs to this holder, not to a thread
        )
        if not await store.call("SET", lock.acquire):
            raise LockNotAcquiredError(name)
        holder = asyncio.current_task()
        state = {"lost": False, "done": False}
        watchdog = asyncio.create_task(self._watch(lock, ttl, holder, state))
        try:
            yield
        except asyncio.CancelledError:
            if state["lost"] and holder is not None and holder.uncancel() == 0:
                raise LockLostError(name) from None
            raise
        finally:
            state["done"] = True  # set before any await: the watchdog cancels no more
            watchdog.cancel()
            with suppress(asyncio.CancelledError):
                await watchdog
            if not state["lost"]:
                try:
                    await store.call("EVALSHA", lock.release)
                except (LockError, LockNotOwnedError):
                    log.warning("lock_expired_before_release", lock=name)
                except Exception as exc:  # noqa: BLE001 - the TTL frees it anyway
                    log.warning("lock_not_released", lock=name, error=f"{type(exc).__name__}")

    async def _watch(
        self, lock: Lock, ttl: float, holder: asyncio.Task[object] | None, state: dict[str, bool]
    ) -> None:
        loop = asyncio.get_running_loop()
        renewed_at = loop.time()
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                await self._store.call("EVALSHA", lock.reacquire)
            except LockNotOwnedError:
                state["lost"] = True
            except Exception:  # noqa: BLE001 - Redis out of reach: retried until the TTL ends
                state["lost"] = loop.time() - renewed_at >= ttl
            else:
                renewed_at = loop.time()
            if state["lost"]:
                log.error("lock_lost", lock=lock.name)
                if holder is not None and not state["done"]:
                    holder.cancel()
                return
