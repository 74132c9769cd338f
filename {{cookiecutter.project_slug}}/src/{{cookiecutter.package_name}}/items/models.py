"""Request and response shapes of the items API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, Field(max_length=2000)]
PriceCents = Annotated[int, Field(ge=0, le=2_147_483_647)]


class ItemCreate(BaseModel):
    """Body of `POST /items`."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description = ""
    price_cents: PriceCents


class ItemUpdate(BaseModel):
    """Body of `PATCH /items/{id}`: only the fields sent are changed."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Description | None = None
    price_cents: PriceCents | None = None


class Item(BaseModel):
    """An item as stored."""

    id: int
    name: str
    description: str
    price_cents: int
    created_at: datetime
    updated_at: datetime


class ItemPage(BaseModel):
    """One page of items in id order; pass `next_after` as `after` for the next page."""

    items: list[Item]
    next_after: int | None
