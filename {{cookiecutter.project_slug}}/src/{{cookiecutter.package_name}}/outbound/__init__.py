"""Calling other services: the outbound HTTP client with timeouts and a breaker per host."""
