"""Bearer token verification: an admission step of the service middleware.

Once per request, before the app runs, the ``Authorization: Bearer <JWT>`` header is
verified (RFC 6750, RFC 7519, RFC 8725): the signature by the provider's key named in
the token's ``kid``, the algorithm against the allowed list (asymmetric only), ``iss``,
``aud``, ``exp`` and ``nbf`` with a leeway, ``sub`` present, and ``exp``, ``nbf``,
``iat`` JSON numbers (RFC 7519 NumericDate; PyJWT alone also takes ``"123"``). The
caller then is the request's `Principal` (``scope["state"]["principal"]``) and its
subject is in `user_id_var`, so every log line of the request carries ``user_id``.

Answers (``application/problem+json``): 401 with ``WWW-Authenticate: Bearer`` when no
token is sent, with ``error="invalid_token"`` when one is sent and fails; 400 with
``error="invalid_request"`` when more than one ``Authorization`` field is sent; 503 with
``Retry-After`` when the provider's keys cannot be had (the token may be fine). Paths in
``auth.public_paths`` (probes, metrics, docs by default; an entry ending in ``/`` covers
every path under it) need no token.

PyJWT rather than joserfc: both are maintained and do no I/O when handed a key; PyJWT
binds each JWK to one algorithm, is the more widely deployed, and its decode path is
the shorter one per request.
"""

from __future__ import annotations

import binascii
from base64 import urlsafe_b64decode
from typing import TYPE_CHECKING, Any, Final

import jwt
import orjson

from {{ cookiecutter.package_name }}.auth.keys import KeysUnavailableError, UnknownKeyError
from {{ cookiecutter.package_name }}.auth.principal import Principal
from {{ cookiecutter.package_name }}.auth.verified_tokens import VerifiedTokens
from {{ cookiecutter.package_name }}.observability.logs.context import user_id_var
from {{ cookiecutter.package_name }}.service.middleware import Rejection
from {{ cookiecutter.package_name }}.service.problems import retry_after

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.types import Scope

    from {{ cookiecutter.package_name }}.auth.keys import KeySet
    from {{ cookiecutter.package_name }}.auth.settings import AuthSettings

__all__ = ["Authenticator", "InvalidTokenError", "Principal", "bearer_challenge"]

_AUTHORIZATION: Final = b"authorization"
_REQUIRED_CLAIMS: Final = ["exp", "iss", "aud", "sub"]
_TIME_CLAIMS: Final = ("exp", "nbf", "iat")
_LATEST_NUMERIC_DATE: Final = 253_402_300_799  # 9999-12-31T23:59:59Z, datetime's last second
_EXPLAINED: Final = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidAudienceError, "the token is not meant for this service"),
    (jwt.InvalidIssuerError, "the token was issued by another issuer"),
    (jwt.InvalidSignatureError, "the token's signature is invalid"),
    (jwt.InvalidAlgorithmError, "the token's algorithm does not match its key"),
    (jwt.DecodeError, "the token is not a well-formed JWT"),  # after its subclass above
)


class InvalidTokenError(Exception):
    """A bearer token was sent and is not acceptable; the message says why (no token text)."""


def bearer_challenge(realm: str | None, **params: str) -> str:
    """A ``WWW-Authenticate`` value for the Bearer scheme (RFC 6750, section 3)."""
    if realm is not None:
        params = {"realm": realm, **params}
    quoted = ", ".join(
        f'{name}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for name, value in params.items()
    )
    return f"Bearer {quoted}" if quoted else "Bearer"


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """Scopes and roles granted by a token.

    ``scope`` (RFC 8693/9068: space-separated), ``scp`` (Entra ID, Okta: a string or a
    list) and ``roles`` (Entra ID app roles, a list).
    """
    granted: set[str] = set()
    for name in ("scope", "scp", "roles"):
        value = claims.get(name)
        if isinstance(value, str):
            granted.update(value.split())
        elif isinstance(value, list):
            granted.update(item for item in value if isinstance(item, str))
    return frozenset(granted)


def _unverified_header(token: str) -> dict[str, Any]:
    """The token's JOSE header, only to choose its key; `decode` checks it strictly after.

    Parsed here because PyJWT's `get_unverified_header` validates all three segments'
    base64 character by character (35 µs a token, measured), which `decode` repeats.
    """
    head, dot, _ = token.partition(".")
    try:
        header = orjson.loads(urlsafe_b64decode(head + "=" * (-len(head) % 4))) if dot else None
    except (binascii.Error, ValueError):
        header = None
    if not isinstance(header, dict):
        msg = "the token is not a well-formed JWT"
        raise InvalidTokenError(msg)
    return header


class _SeveralAuthorizationsError(Exception):
    """More than one ``Authorization`` field: which credentials are meant is ambiguous."""


def _bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of the ``Authorization`` header if it uses the Bearer scheme.

    Raises `_SeveralAuthorizationsError` when the field is sent more than once (a proxy
    or a client library may pick either one: RFC 6750, section 3.1, ``invalid_request``).
    """
    values = [value for name, value in headers if name == _AUTHORIZATION]
    if not values:
        return None
    if len(values) > 1:
        raise _SeveralAuthorizationsError
    scheme, _, token = values[0].partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.strip().decode("latin-1")


def _check_numeric_dates(claims: Mapping[str, Any]) -> None:
    """Refuse ``exp``, ``nbf`` and ``iat`` that are not NumericDates (RFC 7519, section 2).

    PyJWT converts them with ``int()``, so it takes ``"1796413395"`` (with spaces too),
    ``true`` and numbers past any date (``10**400``, which no float holds).
    """
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        if value is None:
            continue
        # NaN and infinities (which Python's JSON reader takes) fail the range test.
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not 0 <= value <= _LATEST_NUMERIC_DATE
        ):
            msg = f"the token's {name!r} claim is not a valid NumericDate"
            raise InvalidTokenError(msg)


class Authenticator:
    """Verifies the bearer token of every non-public request (an `AdmissionStep`)."""

    __slots__ = (
        "_algorithms",
        "_decoder",
        "_public_paths",
        "_public_prefixes",
        "_settings",
        "_verified",
        "keys",
    )

    def __init__(self, settings: AuthSettings) -> None:
        """Verify tokens of `settings`' issuer and audience; set `keys` before serving."""
        self._settings = settings
        self.keys: KeySet | None = None
        self._public_paths = settings.public_paths
        self._public_prefixes = tuple(path for path in settings.public_paths if path.endswith("/"))
        self._algorithms = settings.algorithms
        self._decoder = jwt.PyJWT()
        self._verified = VerifiedTokens(settings.verified_token_cache_size, settings.leeway_seconds)

    def _is_public(self, scope: Scope) -> bool:
        path: str = scope["path"]
        # Behind a proxy that strips a prefix, `path` keeps it and `root_path` names it.
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        return path in self._public_paths or path.startswith(self._public_prefixes)

    async def admit(
        self, scope: Scope, response_headers: list[tuple[bytes, bytes]]
    ) -> Rejection | None:
        """Admit a request with a valid token (or to a public path); else 401 or 503."""
        del response_headers  # this step adds none
        if self._is_public(scope):
            return None
        realm = self._settings.realm
        try:
            token = _bearer_token(scope["headers"])
        except _SeveralAuthorizationsError:
            detail = "send one Authorization header, not several"
            challenge = bearer_challenge(realm, error="invalid_request", error_description=detail)
            return Rejection(400, detail, {"WWW-Authenticate": challenge})
        if token is None:
            # RFC 6750, section 3.1: no error code when no credentials were sent.
            return Rejection(
                401,
                "a bearer token is required",
                {"WWW-Authenticate": bearer_challenge(realm)},
            )
        try:
            principal = await self.verify(token)
        except KeysUnavailableError as exc:
            return Rejection(
                503, "the identity provider's keys are unavailable", retry_after(exc.retry_after)
            )
        except InvalidTokenError as exc:
            challenge = bearer_challenge(realm, error="invalid_token", error_description=str(exc))
            return Rejection(401, str(exc), {"WWW-Authenticate": challenge})
        user_id_var.set(principal.subject)
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["principal"] = principal
        return None

    async def verify(self, token: str) -> Principal:
        """The principal of a valid `token`.

        Raises `InvalidTokenError`, or `KeysUnavailableError` when the provider's keys
        cannot be had.
        """
        if len(token) > self._settings.max_token_bytes:
            msg = "the token is too large"
            raise InvalidTokenError(msg)
        if self.keys is not None and (known := self._verified.get(token, self.keys)) is not None:
            return known
        header = _unverified_header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self._algorithms:
            msg = "the token's algorithm is not accepted"
            raise InvalidTokenError(msg)
        if kid is not None and not isinstance(kid, str):
            msg = "the token's key id is not a string"
            raise InvalidTokenError(msg)
        if self.keys is None:
            raise KeysUnavailableError(retry_after=1.0)
        try:
            key = await self.keys.key_for(kid, alg)
        except UnknownKeyError:
            msg = "the token is signed by a key the issuer does not publish"
            raise InvalidTokenError(msg) from None
        try:
            claims: dict[str, Any] = self._decoder.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_seconds,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.MissingRequiredClaimError as exc:
            msg = f"the token has no {exc.claim!r} claim"
            raise InvalidTokenError(msg) from None
        except jwt.InvalidTokenError as exc:
            reason = next((text for kind, text in _EXPLAINED if isinstance(exc, kind)), None)
            raise InvalidTokenError(reason or "the token is invalid") from None
        _check_numeric_dates(claims)
        principal = Principal(subject=claims["sub"], scopes=scopes_of(claims), claims=claims)
        self._verified.put(token, principal, kid, alg, key)
        return principal
