"""Bearer tokens against a real local OpenID Connect provider (keys made for each test).

Each test starts its own provider on 127.0.0.1 and the real app trusting it; the tokens
are really signed, with RSA and EC keys, or forged by hand. The provider's keys
themselves (rotation, outages) are tested in `test_auth_keys.py`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.auth.settings import AuthSettings
from {{ cookiecutter.package_name }}.outbound.client import HttpClient  # noqa: TC001 - FastAPI resolves it at run time
from {{ cookiecutter.package_name }}.settings import ENV_PREFIX, SettingsError, load_settings
from tests.auth_support import THINGS, WHOAMI, bearer, challenge, trusting
from tests.downstream import Downstream
from tests.identity_provider import AUDIENCE, IdentityProvider, SigningKey
from tests.service_process import running_service

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


@pytest.fixture
def provider() -> Iterator[IdentityProvider]:
    with IdentityProvider() as idp:
        yield idp


@pytest.fixture
async def client(provider: IdentityProvider, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with trusting(provider, database_url) as (_, http):
        yield http


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: Any, claims: dict[str, Any], signature: bytes = b"") -> str:
    """A token put together by hand: what an attacker can send."""
    parts = [json.dumps(header).encode(), json.dumps(claims).encode(), signature]
    return ".".join(b64(part) for part in parts)


def claims_of(provider: IdentityProvider, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": provider.issuer, "aud": AUDIENCE, "sub": "mallory", "exp": now + 300} | overrides


async def test_valid_rsa_and_ec_tokens_are_accepted(
    client: httpx.AsyncClient, provider: IdentityProvider
) -> None:
    for key in (provider.rsa, provider.ec):
        response = await client.get(WHOAMI, headers=bearer(provider.token(key=key, sub="ann")))
        assert response.status_code == 200, response.text
        assert response.json() == {"subject": "ann", "scopes": ["items:read"]}


async def test_missing_token_is_401_with_a_bare_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get(WHOAMI)
    assert response.status_code == 401
    # RFC 6750, section 3.1: no error code when the request carried no credentials.
    assert challenge(response) == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer not-a-jwt", "Bearer a.b.c", "Bearer ...."],
)
async def test_garbled_headers_are_401(client: httpx.AsyncClient, authorization: str) -> None:
    response = await client.get(WHOAMI, headers={"Authorization": authorization})
    assert response.status_code == 401
    value = challenge(response)
    if authorization.startswith("Bearer"):
        assert 'error="invalid_token"' in value


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": -120}, "expired"),
        ({"nbf": 120}, "not valid yet"),
        ({"iss": "https://evil.example"}, "another issuer"),
        ({"aud": "another-service"}, "not meant for this service"),
        ({"sub": None}, "'sub'"),
        ({"exp": None}, "'exp'"),
    ],
)
async def test_bad_claims_are_401_invalid_token(
    client: httpx.AsyncClient, provider: IdentityProvider, overrides: dict[str, Any], reason: str
) -> None:
    now = int(time.time())
    claims = {
        name: now + value if name in {"exp", "nbf"} and value is not None else value
        for name, value in overrides.items()
    }
    response = await client.get(WHOAMI, headers=bearer(provider.token(**claims)))
    assert response.status_code == 401
    assert 'error="invalid_token"' in challenge(response)
    assert reason in response.json()["detail"]


YEAR_2100 = 4_102_444_800


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # No float holds it: the verified-token cache's float() failed with a 500.
        pytest.param("exp", 10**400, id="exp-10**400"),
        pytest.param("exp", 1e300, id="exp-1e300"),
        # RFC 7519 NumericDate is a JSON number; PyJWT's int() takes strings.
        pytest.param("exp", str(YEAR_2100), id="exp-string"),
        pytest.param("exp", f" {YEAR_2100} ", id="exp-string-with-spaces"),
        pytest.param("exp", True, id="exp-true"),
        pytest.param("nbf", "0", id="nbf-string"),
        pytest.param("nbf", 10**400, id="nbf-10**400"),
        pytest.param("iat", "1000000000", id="iat-string"),
        pytest.param("iat", [1_000_000_000], id="iat-list"),
    ],
)
async def test_a_time_claim_that_is_not_a_numeric_date_is_401_and_not_remembered(
    provider: IdentityProvider,
    database_url: str,
    full_verifications: list[str],
    name: str,
    value: Any,
) -> None:
    token = provider.token(**{name: value})
    async with trusting(provider, database_url) as (_, client):
        for _ in range(2):
            response = await client.get(WHOAMI, headers=bearer(token))
            assert response.status_code == 401, response.text
            assert 'error="invalid_token"' in challenge(response)
        good = provider.token()
        assert (await client.get(WHOAMI, headers=bearer(good))).status_code == 200
    # Checked in full each time (never cached), like any refused token.
    assert full_verifications == [token, token, good]


@pytest.mark.parametrize(
    "order",
    ["valid, forged", "forged, valid", "valid, valid", "valid, empty"],
)
async def test_more_than_one_authorization_field_is_400_invalid_request(
    client: httpx.AsyncClient, provider: IdentityProvider, order: str
) -> None:
    forged = unsigned({"alg": "RS256", "kid": provider.rsa.kid}, claims_of(provider), b"x" * 64)
    tokens = {
        "valid": f"Bearer {provider.token()}",
        "forged": f"Bearer {forged}",
        "empty": "",
    }
    fields = [("Authorization", tokens[which]) for which in order.split(", ")]
    response = await client.get(WHOAMI, headers=fields)
    assert response.status_code == 400
    # RFC 6750, section 3.1: more than one method (here, field) of sending a token.
    assert 'error="invalid_request"' in challenge(response)
    assert "one Authorization header" in response.json()["detail"]


async def test_clock_skew_within_the_leeway_is_tolerated(
    client: httpx.AsyncClient, provider: IdentityProvider
) -> None:
    now = int(time.time())
    token = provider.token(exp=now - 10, nbf=now + 10, iat=now + 10)  # leeway is 30 s
    assert (await client.get(WHOAMI, headers=bearer(token))).status_code == 200


async def test_a_signature_by_another_key_under_a_published_kid_is_401(
    client: httpx.AsyncClient, provider: IdentityProvider
) -> None:
    impostor = SigningKey("RS256")
    impostor.kid = provider.rsa.kid
    response = await client.get(WHOAMI, headers=bearer(provider.token(key=impostor)))
    assert response.status_code == 401
    assert "signature" in response.json()["detail"]


async def test_alg_none_is_401(client: httpx.AsyncClient, provider: IdentityProvider) -> None:
    for alg in ("none", "None", "NONE"):
        token = unsigned({"alg": alg, "typ": "JWT", "kid": provider.rsa.kid}, claims_of(provider))
        response = await client.get(WHOAMI, headers=bearer(token))
        assert response.status_code == 401
        assert 'error="invalid_token"' in challenge(response)


@pytest.mark.parametrize(
    "header",
    [
        {"alg": ["RS256"], "kid": "k"},
        {"alg": {"RS256": 1}},
        {"alg": "RS256", "kid": 7},
        {"alg": "RS256", "kid": ["k"]},
        ["RS256"],
        "RS256",
    ],
)
async def test_odd_header_values_are_401_not_500(
    client: httpx.AsyncClient, provider: IdentityProvider, header: Any
) -> None:
    token = unsigned(header, claims_of(provider), b"x" * 64)
    response = await client.get(WHOAMI, headers=bearer(token))
    assert response.status_code == 401


async def test_hmac_signed_with_the_public_key_is_401(
    client: httpx.AsyncClient, provider: IdentityProvider
) -> None:
    # The classic key confusion: the provider's public key used as an HMAC secret.
    public_pem = provider.rsa.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": provider.rsa.kid}
    head_and_body = unsigned(header, claims_of(provider)).rsplit(".", 1)[0]
    signature = hmac.new(public_pem, head_and_body.encode(), hashlib.sha256).digest()
    response = await client.get(WHOAMI, headers=bearer(f"{head_and_body}.{b64(signature)}"))
    assert response.status_code == 401
    assert "algorithm" in response.json()["detail"]


async def test_an_rsa_key_cannot_verify_an_ec_token_under_its_kid(
    client: httpx.AsyncClient, provider: IdentityProvider
) -> None:
    swapped = SigningKey("ES256")
    swapped.kid = provider.rsa.kid
    response = await client.get(WHOAMI, headers=bearer(provider.token(key=swapped)))
    assert response.status_code == 401


def test_symmetric_and_none_algorithms_cannot_be_configured() -> None:
    for algorithms in (["HS256"], ["RS256", "none"], []):
        with pytest.raises(ValidationError, match="asymmetric"):
            AuthSettings(issuer="https://id.example", audience="a", algorithms=algorithms)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("AUTH__ALGORITHMS", '["HS256"]'), ("AUTH__ISSUER", "ftp://id.example"), ("AUTH__ISSUER", "")],
)
def test_a_bad_auth_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(f"{ENV_PREFIX}DATABASE_URL", "postgresql://h/db")
    if value:
        monkeypatch.setenv(f"{ENV_PREFIX}{variable}", value)
    else:
        monkeypatch.delenv(f"{ENV_PREFIX}{variable}", raising=False)
    with pytest.raises(SettingsError, match=f"{ENV_PREFIX}{variable}"):
        load_settings()


async def test_an_oversized_token_is_401_without_parsing(
    client: httpx.AsyncClient, provider: IdentityProvider
) -> None:
    token = provider.token(padding="x" * 10_000)
    response = await client.get(WHOAMI, headers=bearer(token))
    assert response.status_code == 401
    assert "too large" in response.json()["detail"]


async def test_a_route_needing_a_scope_is_403_without_it(
    client: httpx.AsyncClient, provider: IdentityProvider
) -> None:
    response = await client.post(THINGS, headers=bearer(provider.token(scope="things:read")))
    assert response.status_code == 403
    value = challenge(response)
    assert 'error="insufficient_scope"' in value
    assert 'scope="things:write"' in value
    # Entra ID puts delegated scopes in `scp` and application permissions in `roles`.
    grants: list[dict[str, Any]] = [
        {"scope": "a things:write"},
        {"scp": "things:write"},
        {"roles": ["things:write"]},
    ]
    for claims in grants:
        token = provider.token(**({"scope": None, "sub": "bob"} | claims))
        response = await client.post(THINGS, headers=bearer(token))
        assert response.status_code == 200, claims
        assert response.json() == {"changed_by": "bob"}


async def test_probes_metrics_and_docs_need_no_token(client: httpx.AsyncClient) -> None:
    for path in ("/health/live", "/health/ready", "/docs", "/openapi.json"):
        assert (await client.get(path)).status_code == 200, path


async def test_a_path_taken_out_of_public_paths_needs_a_token(
    provider: IdentityProvider, database_url: str
) -> None:
    async with trusting(provider, database_url, public_paths=["/health/live"]) as (_, client):
        assert (await client.get("/health/live")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 401
        assert (await client.get("/health/ready")).status_code == 401
        response = await client.get("/health/ready", headers=bearer(provider.token()))
        assert response.status_code == 200


async def test_openapi_documents_the_security_scheme_and_answers(
    client: httpx.AsyncClient, provider: IdentityProvider
) -> None:
    document = (await client.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["openIdConnect"]["openIdConnectUrl"] == (
        f"{provider.issuer}/.well-known/openid-configuration"
    )
    read = document["paths"][WHOAMI]["get"]
    assert read["security"] == [{"bearerAuth": []}, {"openIdConnect": []}]
    assert {"400", "401"} <= set(read["responses"])
    assert "403" not in read["responses"]
    write = document["paths"][THINGS]["post"]
    scoped = ["things:write"]
    assert write["security"] == [{"bearerAuth": scoped}, {"openIdConnect": scoped}]
    assert {"401", "403"} <= set(write["responses"])
    assert "WWW-Authenticate" in write["responses"]["403"]["headers"]


async def test_the_caller_travels_in_baggage_on_outbound_calls(
    provider: IdentityProvider, database_url: str
) -> None:
    async with Downstream() as downstream, trusting(provider, database_url) as (app, client):

        async def relay(http: HttpClient) -> dict[str, int]:
            return {"status": (await http.get(f"{downstream.url}/x")).status_code}

        app.add_api_route("/relay-user", relay)
        token = provider.token(sub="alice@example.com")
        assert (await client.get("/relay-user", headers=bearer(token))).status_code == 200
        received = downstream.requests[-1].decode().lower()
        assert "baggage: enduser.id=alice%40example.com\r\n" in received
        assert token.lower() not in received  # the subject travels, never the token


def test_real_process_401_without_token_user_id_in_the_access_line_and_no_token_logged(
    database_url: str,
) -> None:
    with IdentityProvider() as provider:
        env = provider.env()
        good = provider.token(sub="user-42")
        expired = provider.token(sub="user-43", exp=int(time.time()) - 3600)
        with running_service(database_url, extra_env=env) as service:
            anonymous = httpx.get(f"{service.url}/items/1", timeout=5)
            assert anonymous.status_code == 401
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            assert httpx.get(f"{service.url}/health/live", timeout=5).status_code == 200
            # Past authentication, whatever the route: 404 here, with the caller logged.
            ok = httpx.get(f"{service.url}/no-such-page", headers=bearer(good), timeout=5)
            assert ok.status_code == 404
            refused = httpx.get(f"{service.url}/items/1", headers=bearer(expired), timeout=5)
            assert refused.status_code == 401
            # Two Authorization fields reach the app over a real socket: neither one wins.
            fields = [("Authorization", f"Bearer {good}"), ("Authorization", "Bearer x.y.z")]
            twice = httpx.get(f"{service.url}/no-such-page", headers=fields, timeout=5)
            assert twice.status_code == 400
            assert 'error="invalid_request"' in twice.headers["www-authenticate"]
            assert service.stop() == 0
            output = service.output()
    lines = [orjson.loads(line) for line in output.splitlines()]
    access = {line["request_id"]: line for line in lines if line.get("event") == "request"}
    assert access[ok.headers["x-request-id"]]["user_id"] == "user-42"
    assert "user_id" not in access[refused.headers["x-request-id"]]
    assert "user_id" not in access[anonymous.headers["x-request-id"]]
    assert any(line.get("event") == "jwks_refreshed" for line in lines)
    for secret in (good, expired, good.split(".")[2], expired.split(".")[2]):
        assert secret not in output


@pytest.fixture
def full_verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens PyJWT decodes (signature and claims checked), in order."""
    decoded: list[str] = []
    decode = jwt.PyJWT.decode

    def counting(self: jwt.PyJWT, token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return decode(self, token, *args, **kwargs)

    monkeypatch.setattr(jwt.PyJWT, "decode", counting)
    return decoded


async def test_a_callers_next_requests_skip_verifying_its_token_again(
    provider: IdentityProvider, database_url: str, full_verifications: list[str]
) -> None:
    async with trusting(provider, database_url, verified_token_cache_size=2) as (_, client):
        ann, bob, cy = (provider.token(sub=name) for name in ("ann", "bob", "cy"))
        for token in (ann, ann, bob, ann, bob):
            response = await client.get(WHOAMI, headers=bearer(token))
            assert response.status_code == 200
        assert full_verifications == [ann, bob]
        # Full: the least recently used (ann's) makes room for cy's.
        for token in (cy, bob, ann):
            response = await client.get(WHOAMI, headers=bearer(token))
            assert response.json()["subject"] == {ann: "ann", bob: "bob", cy: "cy"}[token]
        assert full_verifications == [ann, bob, cy, ann]


async def test_without_the_cache_every_request_verifies_its_token(
    provider: IdentityProvider, database_url: str, full_verifications: list[str]
) -> None:
    async with trusting(provider, database_url, verified_token_cache_size=0) as (_, client):
        token = provider.token()
        for _ in range(3):
            assert (await client.get(WHOAMI, headers=bearer(token))).status_code == 200
    assert full_verifications == [token] * 3


async def test_a_remembered_token_still_expires(
    provider: IdentityProvider, database_url: str
) -> None:
    async with trusting(provider, database_url, leeway_seconds=0) as (_, client):
        token = provider.token(lifetime=2)  # exp: 1 to 2 s from now (whole seconds)
        assert (await client.get(WHOAMI, headers=bearer(token))).status_code == 200
        await asyncio.sleep(2.1)  # past its exp
        response = await client.get(WHOAMI, headers=bearer(token))
        assert response.status_code == 401
        assert "expired" in response.json()["detail"]
