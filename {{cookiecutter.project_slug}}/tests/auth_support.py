"""pytest plugin: a local identity provider for the session and a token for every client.

Loaded through ``-p tests.auth_support`` in pyproject's pytest options. The service's
auth settings point at the provider (in this process's environment, and in the
environment of service processes the tests start), and every test client sends a
valid token granting `SCOPES`, so tests written without authentication in mind run
unchanged. The auth tests start a provider of their own for each test and use the
helpers below (`trusting`: the app trusting that provider).
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

import pytest
from fastapi import Depends

from {{ cookiecutter.package_name }}.auth.scopes import CurrentPrincipal, require
from {{ cookiecutter.package_name }}.auth.verifier import Principal  # noqa: TC001 - FastAPI resolves it
from tests.conftest import make_settings, serving
from tests.identity_provider import AUDIENCE, IdentityProvider
from tests.session_context import CALLER_CREDENTIALS, CLIENT_HEADERS, SERVICE_ENV

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    import httpx
    from fastapi import FastAPI

SCOPES = "items:read items:write"
SESSION_SUBJECT = "test-session"


@pytest.fixture(scope="session", autouse=True)
def session_identity_provider() -> Iterator[IdentityProvider]:
    """The provider every test's service trusts unless the test configures another."""
    with IdentityProvider() as provider:
        env = provider.env()
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        SERVICE_ENV.update(env)
        token = provider.token(sub=SESSION_SUBJECT, scope=SCOPES, lifetime=24 * 3600)
        CLIENT_HEADERS["Authorization"] = f"Bearer {token}"

        def credentials(subject: str) -> dict[str, str]:
            return bearer(provider.token(sub=subject, scope=SCOPES, lifetime=24 * 3600))

        CALLER_CREDENTIALS.append(credentials)
        try:
            yield provider
        finally:
            CALLER_CREDENTIALS.remove(credentials)
            CLIENT_HEADERS.pop("Authorization", None)
            for name, value in saved.items():
                SERVICE_ENV.pop(name, None)
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


PROBLEM = "application/problem+json"
WHOAMI = "/test-auth/whoami"
THINGS = "/test-auth/things"


async def whoami(caller: CurrentPrincipal) -> dict[str, Any]:
    """Who the token says the caller is (a route the auth tests add)."""
    return {"subject": caller.subject, "scopes": sorted(caller.scopes)}


async def change_things(
    caller: Annotated[Principal, Depends(require("things:write"))],
) -> dict[str, str]:
    """A route that needs the `things:write` scope (added by the auth tests)."""
    return {"changed_by": caller.subject}


@asynccontextmanager
async def trusting(
    provider: IdentityProvider, database_url: str, **auth: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The real app, trusting `provider`, and a client that sends no token of its own."""
    settings = make_settings(
        database_url,
        auth={"issuer": provider.issuer, "audience": AUDIENCE} | auth,
        http_client={"connect_timeout": 0.5, "total_timeout": 2},
    )
    async with serving(settings) as (app, client):
        app.add_api_route(WHOAMI, whoami)
        app.add_api_route(THINGS, change_things, methods=["POST"])
        client.headers.pop("Authorization", None)
        yield app, client


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for `token`."""
    return {"Authorization": f"Bearer {token}"}


def challenge(response: httpx.Response) -> str:
    """The ``WWW-Authenticate`` value of a problem answer, after checking its shape."""
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == response.status_code
    value: str = response.headers["www-authenticate"]
    assert value.startswith("Bearer")
    return value
