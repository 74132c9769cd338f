"""Structured logging: one JSON object per line on stdout; what every line carries.

Two paths produce the same line shape:

* structlog (application code and the access log) renders straight to bytes
  with orjson and writes them to ``sys.stdout.buffer``. This is the hot path.
* The standard library (uvicorn, asyncio, third-party libraries) goes through
  :class:`structlog.stdlib.ProcessorFormatter`, installed by the dict that
  ``config.uvicorn_log_config`` returns. It is slower, but these lines are rare.

Every line carries ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``,
``event``, ``service``, ``version`` and ``environment``. Lines logged while a
request is handled also carry ``request_id`` (and ``user_id`` once the caller is
known) and, when the tracing processor is
installed, ``trace_id`` and ``span_id``. Secrets are redacted on both paths.

Usage in application code::

    import structlog

    log = structlog.get_logger(__name__)
    log.info("item_created", item_id=item.id)

For a logger used on every request, bind it once (``.bind()``) after
``config.configure_logging`` has run: calls on the lazy proxy that
``get_logger`` returns cost about 1 µs more each.

This module holds what every line carries: the request context (`request_id_var`,
`user_id_var`) and the envelope of common fields. `config` sets the two paths up,
`access` writes the access line, `redaction` keeps secrets out of every line.
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import orjson

if TYPE_CHECKING:
    from structlog.typing import EventDict, WrappedLogger

__all__ = [
    "DEFAULT_LOGGER_NAME",
    "ORJSON_OPTIONS",
    "TRACE_IDS_KEY",
    "Envelope",
    "request_id_var",
    "user_id_var",
]

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
"""Id of the request being handled; set by the access log middleware."""

user_id_var: ContextVar[str | None] = ContextVar("user_id", default=None)
"""Who the request acts for (an authenticated subject); set once the caller is verified."""

TRACE_IDS_KEY: Final = "trace_ids"
"""ASGI scope key: the request span's (trace id, span id) in hex, for the access line.

Left there by the tracing hook; a scope entry costs a tenth of a context variable.
"""

# Lines from loggers created without a name are attributed to the package.
DEFAULT_LOGGER_NAME: Final = __name__.partition(".")[0]

# structlog passes the method name; a few methods are aliases of a level.
_LEVEL_NAMES: Final = {
    "warn": "warning",
    "exception": "error",
    "fatal": "critical",
    "msg": "info",
}

# orjson renders datetimes natively (faster than isoformat()); UTC becomes "Z".
# Non-string dict keys would otherwise make a log call raise.
ORJSON_OPTIONS: Final = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


class Envelope:
    """Put the fields every line carries first, and add the per-line context.

    Also read by `AccessLog`, which writes the same fields itself.
    """

    __slots__ = ("_iso_timestamp", "static")

    def __init__(
        self, *, service: str, version: str, environment: str, iso_timestamp: bool
    ) -> None:
        """Add these to every line; timestamps as ISO text, or datetimes for orjson."""
        self.static = (("service", service), ("version", version), ("environment", environment))
        self._iso_timestamp = iso_timestamp

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """Return the line: envelope fields first, then the event's (structlog processor)."""
        now = datetime.now(UTC)
        line: EventDict = {
            "timestamp": now.isoformat().replace("+00:00", "Z") if self._iso_timestamp else now,
            "level": _LEVEL_NAMES.get(method_name, method_name),
            "logger": getattr(logger, "name", None) or DEFAULT_LOGGER_NAME,
            # structlog puts the event after the keyword arguments.
            "event": event_dict.pop("event", None),
        }
        line.update(event_dict)
        request_id = request_id_var.get()
        if request_id is not None:
            line.setdefault("request_id", request_id)
        user_id = user_id_var.get()
        if user_id is not None:
            line.setdefault("user_id", user_id)
        for key, value in self.static:
            line.setdefault(key, value)
        return line
