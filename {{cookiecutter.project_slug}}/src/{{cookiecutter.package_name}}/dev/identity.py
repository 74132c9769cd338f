"""A development identity provider: discovery and JWKS on 127.0.0.1, and a token to paste.

Used when `AUTH__ISSUER` is not set. Its signing key is made on the first run and kept
in `.dev/identity/` (owner-only), so the provider is the same between runs. Once the API
answers, the dev command mints a token granting every scope the API's OpenAPI document
asks for and prints it. Development only: anyone who can read `.dev/` can sign tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from {{ cookiecutter.package_name }}.dev.context import LOCALHOST, Part

if TYPE_CHECKING:
    from pathlib import Path

    from {{ cookiecutter.package_name }}.dev.context import DevRun

SETTING = "AUTH__ISSUER"
AUDIENCE = "{{ cookiecutter.project_slug }}"
SUBJECT = "dev-user"
TOKEN_HOURS = 8
ALGORITHM = "RS256"
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks"


def signing_key(directory: Path) -> rsa.RSAPrivateKey:
    """The key in `directory`, made (readable by its owner only) on the first call."""
    path = directory / "signing-key.pem"
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.touch(mode=0o600)
        path.write_bytes(pem)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        msg = f"{path} is not an RSA key: delete it to make a new one"
        raise TypeError(msg)
    return loaded


def public_jwk(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """The public half as a JWK; `kid` is its RFC 7638 thumbprint."""
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    members = json.dumps({name: jwk[name] for name in ("e", "kty", "n")}, separators=(",", ":"))
    digest = hashlib.sha256(members.encode()).digest()
    kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return jwk | {"kid": kid, "alg": ALGORITHM, "use": "sig"}


class DevIdentityProvider:
    """Serves discovery and JWKS for one key and signs tokens with it."""

    def __init__(self, key: rsa.RSAPrivateKey, audience: str) -> None:
        """Listen on a free port of 127.0.0.1, in a daemon thread."""
        self.key = key
        self.jwk = public_jwk(key)
        self.audience = audience
        self._server = ThreadingHTTPServer((LOCALHOST, 0), _handler(self))
        self._server.daemon_threads = True
        self.issuer = f"http://{LOCALHOST}:{self._server.server_address[1]}"
        serving = threading.Thread(target=self._server.serve_forever, name="dev-identity")
        serving.daemon = True
        serving.start()

    def close(self) -> None:
        """Stop listening."""
        self._server.shutdown()
        self._server.server_close()

    def document(self, path: str) -> dict[str, Any] | None:
        """What the provider serves at `path`."""
        if path == DISCOVERY_PATH:
            return {
                "issuer": self.issuer,
                "jwks_uri": self.issuer + JWKS_PATH,
                "id_token_signing_alg_values_supported": [ALGORITHM],
            }
        if path == JWKS_PATH:
            return {"keys": [self.jwk]}
        return None

    def token(self, scopes: list[str]) -> str:
        """A token for `SUBJECT` granting `scopes`, valid `TOKEN_HOURS` hours."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": SUBJECT,
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_HOURS * 3600,
            "scope": " ".join(scopes),
        }
        return jwt.encode(claims, self.key, algorithm=ALGORITHM, headers={"kid": self.jwk["kid"]})


def _handler(provider: DevIdentityProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            document = provider.document(self.path)
            if document is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            body = json.dumps(document).encode()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
            """Quiet: the service logs what it fetches."""
            del format, args

    return Handler


def api_scopes(api_url: str) -> list[str]:
    """Every scope that an operation of the API's OpenAPI document requires."""
    # S310: our own http://127.0.0.1 URL.
    with urllib.request.urlopen(f"{api_url}/openapi.json", timeout=10) as response:  # noqa: S310
        document: dict[str, Any] = json.load(response)
    scopes: set[str] = set()
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for requirement in operation.get("security", []):
                for listed in requirement.values():
                    scopes.update(listed)
    return sorted(scopes)


def provide(run: DevRun) -> None:
    """Use the configured issuer, or serve the dev provider and print a token once up."""
    if run.use_configured("identity", SETTING):
        return
    directory = run.data_dir("identity")
    audience = run.setting("AUTH__AUDIENCE") or AUDIENCE
    provider = DevIdentityProvider(signing_key(directory), audience)
    run.stack.callback(provider.close)
    run.set(SETTING, provider.issuer)
    run.set("AUTH__AUDIENCE", audience)
    run.parts.append(Part("identity", provider.issuer, f"dev OpenID provider, key in {directory}"))

    def mint(api_url: str) -> None:
        scopes = api_scopes(api_url)
        token = provider.token(scopes)
        granted = " ".join(scopes) or "none"
        note = f"sub {SUBJECT}, scopes: {granted}, valid {TOKEN_HOURS} h"
        run.parts.append(Part("token", token, note))
        run.curl_headers.append(f"Authorization: Bearer {token}")

    run.when_ready.append(mint)
