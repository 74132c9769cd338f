"""The service's tests, against a real PostgreSQL."""
