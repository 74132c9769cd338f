"""What option plugins add to every service under test and every test client.

Empty unless a plugin fills it: with auth=jwt, `tests/auth_support.py` puts the local
identity provider's settings in `SERVICE_ENV` and a valid bearer token in
`CLIENT_HEADERS` when the session starts, and a way to mint tokens for other subjects in
`CALLER_CREDENTIALS` (`caller_headers` uses it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

SERVICE_ENV: dict[str, str] = {}
"""Environment variables every service process started by the tests gets."""

CLIENT_HEADERS: dict[str, str] = {}
"""Headers every test client sends (tests that check them replace them per request)."""

CALLER_CREDENTIALS: list[Callable[[str], dict[str, str]]] = []
"""Headers that authenticate a request as a given caller (filled by plugins)."""


def caller_headers(caller: str) -> dict[str, str]:
    """The headers of a client that is caller `caller` and nobody else.

    Without authentication, that is `CLIENT_HEADERS`; with it, a token for subject `caller`
    too, because the service then tells callers apart by the token's subject.
    """
    headers = dict(CLIENT_HEADERS)
    for credentials in CALLER_CREDENTIALS:
        headers |= credentials(caller)
    return headers
