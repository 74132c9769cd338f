"""Observability: structured logs (`logs`), tracing (`tracing`), metrics (`metrics`), loop lag.

Each concern is a folder of its own: a generated project without tracing or metrics has
no such folder.
"""
