"""Structured JSON logs: configuration, the access line, request context, redaction."""
