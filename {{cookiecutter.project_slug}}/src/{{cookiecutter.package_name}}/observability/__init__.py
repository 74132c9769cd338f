"""Observability: structured logs, access logs, tracing and metrics.

Each module is self-contained and wired up by the application factory, so a
generated project can drop tracing or metrics by deleting a single file.
"""
