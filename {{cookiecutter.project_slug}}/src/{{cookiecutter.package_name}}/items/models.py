"""Request and response shapes of the items API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

# The columns' own ranges (bigint, integer), so that a number PostgreSQL cannot hold is a
# 422 in validation, never a driver error; the OpenAPI document shows the same bounds.
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
# PostgreSQL text cannot hold NUL (U+0000); pydantic refuses lone surrogates itself.
STORABLE_TEXT = r"^[^\x00]*$"

ItemId = Annotated[int, Field(ge=1, le=INT64_MAX)]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=STORABLE_TEXT),
]
Description = Annotated[str, StringConstraints(max_length=2000, pattern=STORABLE_TEXT)]


def _whole_number(value: object) -> object:
    # JSON Schema's `integer` includes 579.0, which strict validation would refuse.
    return int(value) if isinstance(value, float) and value.is_integer() else value


PriceCents = Annotated[int, Field(ge=0, le=INT32_MAX), BeforeValidator(_whole_number)]
# Request bodies are strict about JSON types, as their schema is: `false` is not 0 and
# "12" is not 12.
_REQUEST = ConfigDict(extra="forbid", strict=True)


class ItemCreate(BaseModel):
    """Body of `POST /items`."""

    model_config = _REQUEST

    name: Name
    description: Description = ""
    price_cents: PriceCents


class ItemUpdate(BaseModel):
    """Body of `PATCH /items/{id}`: only the fields sent are changed."""

    model_config = _REQUEST

    name: Name | None = None
    description: Description | None = None
    price_cents: PriceCents | None = None


class Item(BaseModel):
    """An item as stored."""

    id: ItemId
    name: str
    description: str
    price_cents: int
    created_at: datetime
    updated_at: datetime


class ItemPage(BaseModel):
    """One page of items in id order; pass `next_after` as `after` for the next page."""

    items: list[Item]
    next_after: ItemId | None
