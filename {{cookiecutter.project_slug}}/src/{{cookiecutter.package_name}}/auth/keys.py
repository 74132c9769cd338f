"""The identity provider's signing keys (JWKS), fetched without blocking and kept fresh.

Keys come from ``auth.jwks_url`` or, when that is unset, from the ``jwks_uri`` of the
issuer's OpenID Connect discovery document (``<issuer>/.well-known/openid-configuration``).
Every fetch goes through the service's `OutboundClient`, so the provider sits behind its
timeouts and its own circuit breaker like any downstream host.

- At start-up one fetch is tried; if the provider is down the service starts anyway and
  requests get 503 (not 401) until keys arrive. A background task retries with backoff,
  then refreshes every ``refresh_seconds``.
- A token naming an unknown ``kid`` triggers a refresh (a rotation may have published
  it), at most once per ``min_refresh_interval_seconds``, and concurrent callers share
  one fetch: a flood of random ``kid`` values costs the provider one request per
  interval.
- Each key is bound to one algorithm (the JWK's ``alg``, or the token's when the JWK has
  none and the key type fits it), so a public key can never verify an HMAC signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import httpx
import jwt
import structlog

from {{ cookiecutter.package_name }}.lifecycle.background import in_background

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from {{ cookiecutter.package_name }}.auth.settings import AuthSettings
    from {{ cookiecutter.package_name }}.outbound.client import OutboundClient

__all__ = ["KeySet", "KeysUnavailableError", "UnknownKeyError", "open_key_set"]

log = structlog.get_logger(__name__)

DISCOVERY_PATH: Final = "/.well-known/openid-configuration"
_MAX_RETRY_SECONDS: Final = 30.0
# Key types each algorithm family needs; EC keys also need the matching curve.
_KEY_TYPES: Final = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_CURVES: Final = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


class KeysUnavailableError(Exception):
    """No key could be had from the provider (never fetched, or a refresh failed)."""

    def __init__(self, retry_after: float) -> None:
        """Say when asking again makes sense."""
        super().__init__("the identity provider's keys are unavailable")
        self.retry_after = retry_after


class UnknownKeyError(Exception):
    """The token names a key the provider does not publish (or not for its algorithm)."""


def _fits(jwk: dict[str, Any], alg: str) -> bool:
    """Whether a JWK without ``alg`` can verify `alg` signatures."""
    if jwk.get("kty") != _KEY_TYPES.get(alg[:2]):
        return False
    return alg not in _CURVES or jwk.get("crv") == _CURVES[alg]


class KeySet:
    """The provider's current public keys by ``kid``; see the module docstring."""

    def __init__(
        self,
        settings: AuthSettings,
        client: OutboundClient,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Keys of the provider that `settings` names, fetched with `client`."""
        self._settings = settings
        self._client = client
        self._clock = clock
        self._jwks_url = settings.jwks_url
        self._jwks: dict[str, dict[str, Any]] = {}
        self._keys: dict[tuple[str, str], jwt.PyJWK] = {}
        self._loaded = False
        self._healthy = False  # the last fetch succeeded
        self._last_attempt = -float("inf")
        self._fetching: asyncio.Task[None] | None = None

    async def key_for(self, kid: str | None, alg: str) -> jwt.PyJWK:
        """The key that verifies a token with this header, refreshing once for a new `kid`.

        Raises `UnknownKeyError` (answer 401) or `KeysUnavailableError` (answer 503).
        """
        key = self.lookup(kid, alg)
        if key is not None:
            return key
        await self.refresh("unknown_kid")
        key = self.lookup(kid, alg)
        if key is not None:
            return key
        if not self._healthy:
            # Cannot tell a rotated key from a forged one while the provider is down.
            raise KeysUnavailableError(self._retry_after())
        raise UnknownKeyError

    async def refresh(self, reason: str) -> None:
        """Fetch the keys now, or join the fetch in progress.

        For an ``"unknown_kid"``, a fetch starts only if the last one began at least
        ``min_refresh_interval_seconds`` ago. Failures are logged, not raised.
        """
        if self._fetching is None:
            now = self._clock()
            if reason == "unknown_kid" and now - self._last_attempt < self._min_interval():
                return
            self._last_attempt = now
            self._fetching = asyncio.create_task(self._fetch(reason))
            self._fetching.add_done_callback(self._fetched)
        # Shielded: a caller that is cancelled must not cancel the fetch the others share.
        await asyncio.shield(self._fetching)

    def _fetched(self, _: asyncio.Task[None]) -> None:
        self._fetching = None

    async def run_refresher(self) -> None:
        """Refresh every ``refresh_seconds``; until keys arrive, retry with backoff."""
        failures = 0
        while True:
            if self._healthy:
                failures = 0
                delay = self._settings.refresh_seconds
            else:
                delay = min(_MAX_RETRY_SECONDS, 0.5 * 2**failures)
                failures += 1
            await asyncio.sleep(delay)
            await self.refresh("scheduled" if self._healthy else "retry")

    async def aclose(self) -> None:
        """Cancel a fetch in progress (at shutdown)."""
        fetching = self._fetching
        if fetching is not None:
            fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetching

    def _min_interval(self) -> float:
        return self._settings.min_refresh_interval_seconds

    def _retry_after(self) -> float:
        return max(1.0, self._last_attempt + self._min_interval() - self._clock())

    def lookup(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """The key for a token with this header among the keys held now (fetches nothing).

        The same object until the provider's key set changes.
        """
        if kid is None:
            # Without a `kid` the token can only name the provider's one and only key.
            if len(self._jwks) != 1:
                return None
            kid = next(iter(self._jwks))
        key = self._keys.get((kid, alg))
        if key is not None:
            return key
        jwk = self._jwks.get(kid)
        if jwk is None or jwk.get("alg", alg) != alg or not _fits(jwk, alg):
            return None
        key = jwt.PyJWK(jwk, algorithm=alg)
        self._keys[kid, alg] = key
        return key

    async def _fetch(self, reason: str) -> None:
        try:
            url = self._jwks_url or await self._discover()
            response = await self._client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            jwks = _parse_jwks(response.json())
        except Exception as exc:  # noqa: BLE001 - any failure leaves the current keys in place
            self._healthy = False
            log.warning("jwks_refresh_failed", reason=reason, error=_describe(exc))
            return
        self._jwks_url = url
        if jwks != self._jwks:
            self._keys = {}
        self._jwks = jwks
        self._loaded = self._healthy = True
        log.info("jwks_refreshed", reason=reason, kids=sorted(jwks))

    async def _discover(self) -> str:
        issuer = self._settings.issuer
        response = await self._client.get(issuer.rstrip("/") + DISCOVERY_PATH)
        response.raise_for_status()
        document = response.json()
        # OpenID Connect Discovery 1.0, section 4.3: the document must name the same issuer.
        if not isinstance(document, dict) or document.get("issuer") != issuer:
            msg = f"the discovery document does not name the issuer {issuer!r}"
            raise ValueError(msg)
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            msg = "the discovery document has no usable jwks_uri"
            raise ValueError(msg)
        return jwks_uri


def _parse_jwks(document: object) -> dict[str, dict[str, Any]]:
    """Signing keys by ``kid``; keys for encryption or without a ``kid`` are left out."""
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        msg = "the JWKS document has no key list"
        raise ValueError(msg)  # noqa: TRY004 - a bad document, reported like the others
    return {
        jwk["kid"]: jwk
        for jwk in keys
        if isinstance(jwk, dict)
        and isinstance(jwk.get("kid"), str)
        and jwk.get("use", "sig") == "sig"
        and jwk.get("kty") in {"RSA", "EC", "OKP"}
    }


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"the provider answered {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}"


@asynccontextmanager
async def open_key_set(settings: AuthSettings, client: OutboundClient) -> AsyncIterator[KeySet]:
    """The provider's keys, refreshed in the background for as long as the block runs.

    `client` must stay open for as long: enter this after the outbound client.
    """
    keys = KeySet(settings, client)
    await keys.refresh("start_up")  # logged, not raised, when the provider is down
    try:
        async with in_background(keys.run_refresher(), name="jwks-refresher"):
            yield keys
    finally:
        await keys.aclose()
