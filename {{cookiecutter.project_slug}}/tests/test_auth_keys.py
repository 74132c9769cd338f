"""The provider's keys: discovery, rotation, a flood of unknown ``kid``s, outages.

Each test starts its own provider on 127.0.0.1 (fresh RSA and EC keys) and the real app
trusting it; the app fetches the keys over HTTP through its outbound client.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from tests.auth_support import PROBLEM, WHOAMI, bearer, trusting
from tests.identity_provider import IdentityProvider, SigningKey

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def provider() -> Iterator[IdentityProvider]:
    with IdentityProvider() as idp:
        yield idp


async def test_unknown_kid_is_401_then_a_rotated_key_is_accepted(
    provider: IdentityProvider, database_url: str
) -> None:
    async with trusting(provider, database_url, min_refresh_interval_seconds=0.2) as (_, client):
        stranger = SigningKey("ES256")  # never published
        response = await client.get(WHOAMI, headers=bearer(provider.token(key=stranger)))
        assert response.status_code == 401
        assert "does not publish" in response.json()["detail"]

        rotated = provider.rotate("ES256")
        await asyncio.sleep(0.25)  # past the refresh interval
        response = await client.get(WHOAMI, headers=bearer(provider.token(key=rotated)))
        assert response.status_code == 200, response.text
        # The keys fetched before the rotation still verify.
        assert (await client.get(WHOAMI, headers=bearer(provider.token()))).status_code == 200


async def test_keys_from_a_configured_jwks_url_without_discovery(
    provider: IdentityProvider, database_url: str
) -> None:
    jwks_url = f"{provider.issuer}/jwks"
    async with trusting(provider, database_url, jwks_url=jwks_url) as (_, client):
        response = await client.get(WHOAMI, headers=bearer(provider.token()))
        assert response.status_code == 200
        document = (await client.get("/openapi.json")).json()
    assert "/.well-known/openid-configuration" not in provider.requests
    assert set(document["components"]["securitySchemes"]) == {"bearerAuth"}


async def test_a_discovery_document_naming_another_issuer_is_refused(
    provider: IdentityProvider, database_url: str
) -> None:
    provider.claimed_issuer = "https://elsewhere.example"
    async with trusting(provider, database_url) as (_, client):
        response = await client.get(WHOAMI, headers=bearer(provider.token()))
    assert response.status_code == 503
    assert provider.jwks_hits == 0


async def test_a_kid_flood_costs_the_provider_one_fetch_per_interval(
    provider: IdentityProvider, database_url: str
) -> None:
    async with trusting(provider, database_url, min_refresh_interval_seconds=1) as (_, client):
        await asyncio.sleep(1.1)  # past the interval since the start-up fetch
        for expected_fetches in (1, 0):  # one for the first flood, none for the next
            before = provider.jwks_hits
            tokens = [provider.token(key=SigningKey("ES256")) for _ in range(50)]
            responses = await asyncio.gather(
                *(client.get(WHOAMI, headers=bearer(token)) for token in tokens)
            )
            assert {response.status_code for response in responses} == {401}
            assert provider.jwks_hits - before == expected_fetches


async def test_provider_down_at_start_up_is_503_then_recovers(
    provider: IdentityProvider, database_url: str
) -> None:
    provider.stop()
    async with trusting(provider, database_url, min_refresh_interval_seconds=0.2) as (_, client):
        assert (await client.get("/health/live")).status_code == 200
        response = await client.get(WHOAMI, headers=bearer(provider.token()))
        assert response.status_code == 503
        assert response.headers["content-type"] == PROBLEM
        assert int(response.headers["retry-after"]) >= 1
        # Without a token it is still 401: nothing to wait for.
        assert (await client.get(WHOAMI)).status_code == 401

        provider.start()
        deadline = time.monotonic() + 10
        status = 503
        while status == 503 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            status = (await client.get(WHOAMI, headers=bearer(provider.token()))).status_code
        assert status == 200


async def test_provider_down_during_a_rotation(
    provider: IdentityProvider, database_url: str
) -> None:
    async with trusting(provider, database_url, min_refresh_interval_seconds=0.2) as (_, client):
        rotated = provider.rotate()
        provider.failing = True  # the provider answers 500 from now on
        await asyncio.sleep(0.25)
        # The new key cannot be fetched: 503 (the token may be good), not 401.
        response = await client.get(WHOAMI, headers=bearer(provider.token(key=rotated)))
        assert response.status_code == 503
        # Tokens signed with the keys already fetched keep working.
        assert (await client.get(WHOAMI, headers=bearer(provider.token()))).status_code == 200

        provider.failing = False
        await asyncio.sleep(0.25)
        response = await client.get(WHOAMI, headers=bearer(provider.token(key=rotated)))
        assert response.status_code == 200


async def test_a_remembered_token_is_refused_once_its_key_is_withdrawn(
    provider: IdentityProvider, database_url: str
) -> None:
    async with trusting(provider, database_url, refresh_seconds=0.2) as (_, client):
        token = provider.token()
        assert (await client.get(WHOAMI, headers=bearer(token))).status_code == 200

        provider.keys.remove(provider.rsa)  # the provider rotates its RSA key out
        await asyncio.sleep(0.6)  # the service's scheduled refresh has run since
        response = await client.get(WHOAMI, headers=bearer(token))
        assert response.status_code == 401
        assert "does not publish" in response.json()["detail"]
