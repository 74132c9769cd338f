"""What option plugins add to every service under test and every test client.

Empty unless a plugin fills it: with auth=jwt, `tests/auth_support.py` puts the local
identity provider's settings in `SERVICE_ENV` and a valid bearer token in
`CLIENT_HEADERS` when the session starts.
"""

from __future__ import annotations

SERVICE_ENV: dict[str, str] = {}
"""Environment variables every service process started by the tests gets."""

CLIENT_HEADERS: dict[str, str] = {}
"""Headers every test client sends (tests that check them replace them per request)."""
