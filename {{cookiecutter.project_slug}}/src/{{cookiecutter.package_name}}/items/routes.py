"""HTTP routes of the items API: read, page, create, update, delete."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from {{ cookiecutter.package_name }}.items.models import (
    INT64_MAX,
    Item,
    ItemCreate,
    ItemPage,
    ItemUpdate,
)
from {{ cookiecutter.package_name }}.items.repository import DuplicateItemError, ItemRepository
from {{ cookiecutter.package_name }}.service.problems import problem

router = APIRouter(prefix="/items", tags=["items"])

# Ids are the table's bigint: a larger number is a 422 here, not a driver error.
ItemIdPath = Annotated[int, Path(ge=1, le=INT64_MAX)]

Responses = dict[int | str, dict[str, Any]]
_NOT_FOUND: Responses = {
    404: {"description": "No such item", "content": {"application/problem+json": {}}}
}
_CONFLICT: Responses = {
    409: {"description": "Name taken", "content": {"application/problem+json": {}}}
}


def items_of(request: Request) -> ItemRepository:
    """The app's repository, on its guarded database (`items.part` makes it at start-up).

    A plain call rather than a `Depends`: dependency resolution costs more per request
    than this lookup, and the routes below are the service's hot path.
    """
    repository: ItemRepository = request.app.state.items
    return repository


def _json(body: Any, status_code: int = 200) -> Response:  # noqa: ANN401 - any orjson-serialisable value
    # orjson straight to bytes: skips FastAPI's encoder, the main per-request cost here.
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


def _missing(item_id: int, request: Request) -> Response:
    return problem(404, f"item {item_id} does not exist", instance=request.url.path)


def _taken(name: str, request: Request) -> Response:
    return problem(409, f"an item named {name!r} exists already", instance=request.url.path)


# Declared in the order requests are matched: reads, the most frequent, first.
@router.get("/{item_id}", response_model=Item, responses=_NOT_FOUND)
async def get_item(item_id: ItemIdPath, request: Request) -> Response:
    """One item by id."""
    row = await items_of(request).get(item_id)
    return _json(row) if row is not None else _missing(item_id, request)


@router.get("", response_model=ItemPage)
async def list_items(
    request: Request,
    after: Annotated[
        int, Query(ge=0, le=INT64_MAX, description="Last id of the previous page; 0 to start")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """Items in id order, `limit` at a time."""
    rows = await items_of(request).page(after=after, limit=limit)
    next_after = rows[-1]["id"] if len(rows) == limit else None
    return _json({"items": rows, "next_after": next_after})


@router.post("", status_code=201, response_model=Item, responses=_CONFLICT)
async def create_item(body: ItemCreate, request: Request) -> Response:
    """Create an item; 409 when the name is taken."""
    try:
        row = await items_of(request).create(body)
    except DuplicateItemError:
        return _taken(body.name, request)
    response = _json(row, 201)
    response.headers["Location"] = f"{request.url.path}/{row['id']}"
    return response


@router.patch("/{item_id}", response_model=Item, responses=_NOT_FOUND | _CONFLICT)
async def update_item(item_id: ItemIdPath, body: ItemUpdate, request: Request) -> Response:
    """Change the fields sent."""
    try:
        row = await items_of(request).update(item_id, body)
    except DuplicateItemError:
        return _taken(str(body.name), request)
    return _json(row) if row is not None else _missing(item_id, request)


@router.delete("/{item_id}", status_code=204, responses=_NOT_FOUND)
async def delete_item(item_id: ItemIdPath, request: Request) -> Response:
    """Delete one item."""
    if await items_of(request).delete(item_id):
        return Response(status_code=204)
    return _missing(item_id, request)
