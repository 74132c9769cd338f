"""A real OpenID Connect provider on 127.0.0.1 for the tests.

It serves a discovery document and a JWKS over HTTP and signs tokens with keys made
when it starts (RSA and EC): nothing is shared between runs. Tests switch it down
(connections refused) or failing (500), rotate its keys, and count its requests.
For local development, `make dev` runs its own provider (`dev/identity.py`).
"""

from __future__ import annotations

import json
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Self
from uuid import uuid4

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from {{ cookiecutter.package_name }}.settings import ENV_PREFIX

if TYPE_CHECKING:
    from types import TracebackType

    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

AUDIENCE = "{{ cookiecutter.project_slug }}"
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks"


class SigningKey:
    """A private key, its ``kid`` and the algorithm it signs with."""

    def __init__(self, algorithm: str) -> None:
        """A new key for `algorithm` (RS256 or ES256)."""
        self.algorithm = algorithm
        self.kid = uuid4().hex
        self.private: PrivateKeyTypes = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if algorithm.startswith(("RS", "PS"))
            else ec.generate_private_key(ec.SECP256R1())
        )

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK, with ``kid``, ``alg`` and ``use``."""
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        return jwk | {"kid": self.kid, "alg": self.algorithm, "use": "sig"}


class IdentityProvider:
    """Discovery document, JWKS and token signing; see the module docstring."""

    def __init__(self, port: int = 0) -> None:
        """One RSA and one EC key; `start` listens (`port` 0: a free one)."""
        self.port = port
        self.rsa = SigningKey("RS256")
        self.ec = SigningKey("ES256")
        self.keys = [self.rsa, self.ec]
        self.failing = False
        self.claimed_issuer: str | None = None  # what discovery says, when not `issuer`
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        """Listen."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop listening."""
        self.stop()

    @property
    def issuer(self) -> str:
        """The issuer URL (also the discovery document's base)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_hits(self) -> int:
        """JWKS requests received so far."""
        return self.requests.count(JWKS_PATH)

    def settings(self) -> dict[str, str]:
        """The service's auth settings for this provider, as `AUTH__*` names and values."""
        return {"AUTH__ISSUER": self.issuer, "AUTH__AUDIENCE": AUDIENCE}

    def env(self) -> dict[str, str]:
        """The same settings as environment variables of the service."""
        return {ENV_PREFIX + name: value for name, value in self.settings().items()}

    def start(self) -> None:
        """Listen (again, on the same port once one was picked)."""
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: connections are refused until `start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def rotate(self, algorithm: str = "RS256") -> SigningKey:
        """Publish a new key (the old ones stay published) and return it."""
        key = SigningKey(algorithm)
        self.keys.append(key)
        return key

    def token(
        self,
        *,
        key: SigningKey | None = None,
        headers: dict[str, Any] | None = None,
        lifetime: float = 300,
        **claims: Any,
    ) -> str:
        """A token signed by `key` (the RSA key by default); `claims` override the defaults.

        A claim set to None is left out.
        """
        key = key or self.rsa
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "user-1",
            "iat": now,
            "nbf": now,
            "exp": now + int(lifetime),
            "scope": "items:read",
        } | claims
        payload = {name: value for name, value in payload.items() if value is not None}
        return jwt.encode(
            payload,
            key.private,  # type: ignore[arg-type]
            algorithm=key.algorithm,
            headers={"kid": key.kid} | (headers or {}),
        )

    def document(self, path: str) -> dict[str, Any] | None:
        """What the provider serves at `path`."""
        if path == DISCOVERY_PATH:
            return {
                "issuer": self.claimed_issuer or self.issuer,
                "jwks_uri": self.issuer + JWKS_PATH,
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            }
        if path == JWKS_PATH:
            return {"keys": [key.public_jwk() for key in self.keys]}
        return None


def _handler(provider: IdentityProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            provider.requests.append(self.path)
            document = provider.document(self.path)
            if provider.failing or document is None:
                status = HTTPStatus.INTERNAL_SERVER_ERROR if provider.failing else 404
                self.send_error(status)
                return
            body = json.dumps(document).encode()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            del format, args
            """Quiet: the tests read the provider's `requests` instead."""

    return Handler
