"""Callers' bearer tokens (OAuth 2.0 / OpenID Connect JWTs), verified as a resource server."""
