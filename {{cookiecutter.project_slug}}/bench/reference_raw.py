"""Raw ASGI reference for the benchmark: no framework, asyncpg, the same query.

The ceiling: what uvicorn + asyncpg can do on this machine with no routing,
validation or middleware at all. Started by `bench/run.py` as
`python -m uvicorn bench.reference_raw:app --loop uvloop --http httptools`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import asyncpg
import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

QUERY = "SELECT id, name, description, price_cents, created_at, updated_at FROM items WHERE id = $1"
ITEMS_PREFIX = "/items/"
JSON: Headers = [(b"content-type", b"application/json")]
PROBLEM: Headers = [(b"content-type", b"application/problem+json")]
LIVE_BODY = orjson.dumps({"status": "pass"})
NOT_FOUND = orjson.dumps({"title": "Not Found", "status": 404})
MAX_ID = 2**63 - 1

_state: dict[str, Any] = {}


async def _respond(send: Send, status: int, headers: Headers, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _state["pool"] = await asyncpg.create_pool(
                os.environ["BENCH_DATABASE_URL"],
                min_size=int(os.environ.get("BENCH_POOL_MIN_SIZE", "1")),
                max_size=int(os.environ.get("BENCH_POOL_MAX_SIZE", "10")),
            )
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await _state.pop("pool").close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve `GET /health/live` and `GET /items/{id}`; 404 for anything else."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path: str = scope["path"]
    if path == "/health/live":
        await _respond(send, 200, JSON, LIVE_BODY)
        return
    if path.startswith(ITEMS_PREFIX) and scope["method"] == "GET":
        raw_id = path[len(ITEMS_PREFIX) :]
        if raw_id.isdigit() and 0 < int(raw_id) <= MAX_ID:
            row = await _state["pool"].fetchrow(QUERY, int(raw_id))
            if row is not None:
                await _respond(send, 200, JSON, orjson.dumps(dict(row)))
                return
    await _respond(send, 404, PROBLEM, NOT_FOUND)
