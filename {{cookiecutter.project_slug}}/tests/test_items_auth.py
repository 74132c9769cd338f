"""The example API's scopes: any valid token reads, `items:write` writes (auth=jwt only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.auth_support import bearer, challenge, trusting
from tests.identity_provider import IdentityProvider

if TYPE_CHECKING:
    from collections.abc import Iterator

WRITER = "items:read items:write"


@pytest.fixture
def provider() -> Iterator[IdentityProvider]:
    with IdentityProvider() as idp:
        yield idp


async def test_the_example_api_reads_with_any_token_and_writes_with_items_write(
    provider: IdentityProvider, database_url: str
) -> None:
    async with trusting(provider, database_url) as (_, client):
        reader = bearer(provider.token(scope="items:read"))
        body = {"name": "lamp", "price_cents": 100}
        response = await client.post("/items", json=body, headers=reader)
        assert response.status_code == 403
        assert 'scope="items:write"' in challenge(response)
        assert (await client.get("/items", headers=reader)).json()["items"] == []  # unchanged

        writer = bearer(provider.token(scope=WRITER))
        created = await client.post("/items", json=body, headers=writer)
        assert created.status_code == 201
        item = f"/items/{created.json()['id']}"
        assert (await client.get(item, headers=reader)).status_code == 200
        assert (await client.get(item)).status_code == 401
        changed = await client.patch(item, json={"price_cents": 5}, headers=reader)
        assert changed.status_code == 403
        assert (await client.delete(item, headers=reader)).status_code == 403

        document = (await client.get("/openapi.json")).json()
        read = document["paths"]["/items/{item_id}"]["get"]
        assert read["security"] == [{"bearerAuth": []}, {"openIdConnect": []}]
        assert "403" not in read["responses"]
        write = document["paths"]["/items"]["post"]
        scoped = ["items:write"]
        assert write["security"] == [{"bearerAuth": scoped}, {"openIdConnect": scoped}]
        assert {"401", "403"} <= set(write["responses"])
