"""pytest plugin: a local identity provider for the session and a token for every client.

Loaded through ``-p tests.auth_support`` in pyproject's pytest options. The service's
auth settings point at the provider (in this process's environment, and in the
environment of service processes the tests start), and every test client sends a
valid token granting `SCOPES`, so tests written without authentication in mind run
unchanged. `tests/test_auth.py` starts a provider of its own for each test.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from tests.identity_provider import IdentityProvider
from tests.session_context import CLIENT_HEADERS, SERVICE_ENV

if TYPE_CHECKING:
    from collections.abc import Iterator

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
        try:
            yield provider
        finally:
            CLIENT_HEADERS.pop("Authorization", None)
            for name, value in saved.items():
                SERVICE_ENV.pop(name, None)
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
