"""Bare FastAPI reference for the benchmark: the service's routes, no middleware.

Same routes, same bodies and the same asyncpg query on a pool of the same size as
the generated service, so that the difference measured is what the chassis costs.
Started by `bench/run.py` as
`python -m uvicorn bench.reference_fastapi:app --loop uvloop --http httptools`.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
from fastapi import FastAPI, Request, Response

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

QUERY = "SELECT id, name, description, price_cents, created_at, updated_at FROM items WHERE id = $1"
LIVE_BODY = orjson.dumps({"status": "pass"})


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the pool that `bench/run.py` sized like the service's."""
    pool: Any = await asyncpg.create_pool(
        os.environ["BENCH_DATABASE_URL"],
        min_size=int(os.environ.get("BENCH_POOL_MIN_SIZE", "1")),
        max_size=int(os.environ.get("BENCH_POOL_MAX_SIZE", "10")),
    )
    app.state.pool = pool
    try:
        yield
    finally:
        await pool.close()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/health/live")
async def live() -> Response:
    """Liveness: the same body as the service's."""
    return Response(LIVE_BODY, media_type="application/json")


@app.get("/items/{item_id}")
async def get_item(item_id: int, request: Request) -> Response:
    """One item by id, or 404."""
    pool: Any = request.app.state.pool
    row = await pool.fetchrow(QUERY, item_id)
    if row is None:
        return Response(
            orjson.dumps({"title": "Not Found", "status": 404}),
            status_code=404,
            media_type="application/problem+json",
        )
    return Response(orjson.dumps(dict(row)), media_type="application/json")
