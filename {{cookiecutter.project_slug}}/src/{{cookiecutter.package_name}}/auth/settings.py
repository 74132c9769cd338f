"""Authentication settings: the identity provider whose keys sign callers' tokens.

The `auth` group of `Settings` (`AUTH__...` under the prefix); see `settings.py`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

# Signature algorithms a token may use: asymmetric only, so no shared secret can be
# confused with a provider's public key; "none" is never accepted.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
PUBLIC_PATHS = frozenset(
    {"/health/live", "/health/ready", "/health", "/metrics", "/docs", "/docs/oauth2-redirect"}
    | {"/redoc", "/openapi.json", "/docs/assets/"}
)


class AuthSettings(BaseModel):
    """Bearer token (JWT) verification: the issuer whose keys sign callers' tokens."""

    # Required: a resource server that skips `iss` or `aud` accepts tokens minted for others.
    issuer: str
    audience: str
    jwks_url: str | None = None
    algorithms: frozenset[str] = frozenset({"RS256", "ES256"})
    leeway_seconds: float = Field(30.0, ge=0, le=300)
    refresh_seconds: float = Field(300.0, gt=0)
    min_refresh_interval_seconds: float = Field(10.0, gt=0)
    max_token_bytes: int = Field(8192, ge=256)
    verified_token_cache_size: int = Field(1024, ge=0)  # 0: every request verifies in full
    realm: str | None = None
    public_paths: frozenset[str] = PUBLIC_PATHS

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: frozenset[str]) -> frozenset[str]:
        refused = sorted(value - ASYMMETRIC_ALGORITHMS)
        if refused or not value:
            allowed = ", ".join(sorted(ASYMMETRIC_ALGORITHMS))
            msg = f"only asymmetric algorithms are accepted ({allowed}); refused: {refused}"
            raise ValueError(msg)
        return value

    @field_validator("issuer", "jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            msg = "must be an https:// (or http://) URL"
            raise ValueError(msg)
        return value
