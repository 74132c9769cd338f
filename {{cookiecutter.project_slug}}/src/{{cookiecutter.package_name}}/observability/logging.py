"""Structured logging: one JSON object per line on stdout.

Two paths produce the same line shape:

* structlog (application code and the access log) renders straight to bytes
  with orjson and writes them to ``sys.stdout.buffer``. This is the hot path.
* The standard library (uvicorn, asyncio, third-party libraries) goes through
  :class:`structlog.stdlib.ProcessorFormatter`, installed by the dict that
  :func:`uvicorn_log_config` returns. It is slower, but these lines are rare.

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
:func:`configure_logging` has run: calls on the lazy proxy that
``get_logger`` returns cost about 1 µs more each.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import orjson
import structlog
from structlog.processors import ExceptionRenderer, JSONRenderer
from structlog.tracebacks import ExceptionDictTransformer

from {{ cookiecutter.package_name }}.observability.output import LineLoggerFactory, LineWriter

if TYPE_CHECKING:
    import asyncio

    from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "AccessLog",
    "configure_logging",
    "enable_loop_debug",
    "redact_secrets",
    "request_id_var",
    "stdlib_formatter",
    "user_id_var",
    "uvicorn_log_config",
]

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
"""Id of the request being handled; set by the access log middleware."""

user_id_var: ContextVar[str | None] = ContextVar("user_id", default=None)
"""Who the request acts for (an authenticated subject); set once the caller is verified."""

REDACTED: Final = "[REDACTED]"

# Lines from loggers created without a name are attributed to the package.
_DEFAULT_LOGGER_NAME: Final = __name__.partition(".")[0]

# structlog passes the method name; a few methods are aliases of a level.
_LEVEL_NAMES: Final = {
    "warn": "warning",
    "exception": "error",
    "fatal": "critical",
    "msg": "info",
}

# orjson renders datetimes natively (faster than isoformat()); UTC becomes "Z".
# Non-string dict keys would otherwise make a log call raise.
_ORJSON_OPTIONS: Final = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS

# Substrings that mark a key as holding a secret. Matching errs on the side of
# redacting (``max_tokens`` is redacted too): a lost value is cheaper than a
# leaked credential.
_SENSITIVE_KEY: Final = re.compile(
    r"authorization|cookie|passw(?:or)?d|secret|token|dsn|database_url"
    r"|api[-_]?key|private[-_]?key|credential",
    re.IGNORECASE,
)
# scheme://user:password@ -> scheme://user:***@ (RFC 3986 userinfo cannot
# contain "/", "?", "#" or "@", which keeps the match from running on).
_DSN_PASSWORD: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:@/?#\s]*:)[^@/?#\s]*@")
_DSN_REPLACEMENT: Final = r"\1***@"

_SCALAR_TYPES: Final = frozenset({int, float, bool, type(None)})
_PAIR: Final = 2

# Key verdicts are cached: the set of keys a service logs is small, and a dict
# lookup is cheaper than a regex search. Bounded in case keys come from input.
_sensitive_cache: dict[str, bool] = {}
_SENSITIVE_CACHE_MAX: Final = 4096


def _is_sensitive(key: str) -> bool:
    verdict = _sensitive_cache.get(key)
    if verdict is None:
        verdict = _SENSITIVE_KEY.search(key) is not None
        if len(_sensitive_cache) < _SENSITIVE_CACHE_MAX:
            _sensitive_cache[key] = verdict
    return verdict


def _redact_str(value: str) -> str:
    return _DSN_PASSWORD.sub(_DSN_REPLACEMENT, value) if "://" in value else value


def _redact_pair(item: Sequence[object]) -> object:
    # (name, value) pairs, such as ASGI or httpx header lists.
    name = item[0]
    if isinstance(name, bytes):
        name = name.decode("latin-1")
    if isinstance(name, str) and _is_sensitive(name):
        return (name, REDACTED)
    return [_redact(element) for element in item]


def _redact(value: object) -> object:
    if isinstance(value, str):
        return _redact_str(value)
    if type(value) in _SCALAR_TYPES:
        return value
    if isinstance(value, bytes):
        return _redact_str(value.decode("utf-8", "replace"))
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and _is_sensitive(key) else _redact(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [
            _redact_pair(item)
            if isinstance(item, (list, tuple)) and len(item) == _PAIR
            else _redact(item)
            for item in value
        ]
    return value


def redact_secrets(_logger: WrappedLogger, _method_name: str, event_dict: EventDict) -> EventDict:
    """Redact secrets from a log event (structlog processor).

    Values under keys that look sensitive (``authorization``, ``cookie``,
    ``password``, ``secret``, ``token``, ``dsn``, ``database_url``, ...; any
    case, nested mappings and ``(name, value)`` pairs included) become
    ``"[REDACTED]"``. Passwords inside URLs in any string become ``***``.
    Nested containers are copied, never modified in place.
    """
    cache = _sensitive_cache
    for key, value in event_dict.items():
        # The cache lookup inlined: this loop runs for every field of every line.
        sensitive = cache.get(key)
        if sensitive is None:
            sensitive = _is_sensitive(key)
        if sensitive:
            event_dict[key] = REDACTED
            continue
        kind = type(value)
        if kind is str:
            if "://" in value:
                event_dict[key] = _DSN_PASSWORD.sub(_DSN_REPLACEMENT, value)
        elif kind not in _SCALAR_TYPES:
            event_dict[key] = _redact(value)
    return event_dict


class _Envelope:
    """Put the fields every line carries first, and add the per-line context."""

    __slots__ = ("_iso_timestamp", "static")

    def __init__(
        self, *, service: str, version: str, environment: str, iso_timestamp: bool
    ) -> None:
        self.static = (("service", service), ("version", version), ("environment", environment))
        self._iso_timestamp = iso_timestamp

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        now = datetime.now(UTC)
        line: EventDict = {
            "timestamp": now.isoformat().replace("+00:00", "Z") if self._iso_timestamp else now,
            "level": _LEVEL_NAMES.get(method_name, method_name),
            "logger": getattr(logger, "name", None) or _DEFAULT_LOGGER_NAME,
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


class AccessLog:
    """Writes the access line, ``event="request"``, once per request.

    Made by :func:`configure_logging` in JSON mode, it builds and renders the line
    itself: the fields, their order and their redaction are those of a structlog
    line through the configured processors, at about a third of the cost, which
    the access line can afford to skip because the middleware controls every
    field. Made without an envelope (console mode, levels above INFO, tests), it
    logs through structlog.
    """

    __slots__ = ("_envelope", "_extra_processors", "_log", "_name", "_writer")

    def __init__(
        self,
        *,
        name: str = f"{_DEFAULT_LOGGER_NAME}.access",
        writer: LineWriter | None = None,
        envelope: _Envelope | None = None,
        extra_processors: Sequence[Processor] = (),
    ) -> None:
        """Log as `name`; with a `writer` and `envelope`, render JSON lines directly."""
        self._name = name
        self._writer = writer
        self._envelope = envelope
        self._extra_processors = tuple(extra_processors)
        # Bound once: each call on the lazy proxy would resolve it again.
        self._log: FilteringBoundLogger = structlog.get_logger(name).bind()

    def write(  # noqa: PLR0913 - the line's fields
        self,
        *,
        method: str,
        route: str | None,
        path: str,
        status: int,
        duration_ms: float,
        client: str | None,
    ) -> None:
        """Write one access line."""
        if self._writer is None or self._envelope is None:
            self._log.info(
                "request",
                method=method,
                route=route,
                path=path,
                status=status,
                duration_ms=duration_ms,
                client=client,
            )
            return
        line: EventDict = {
            "timestamp": datetime.now(UTC),
            "level": "info",
            "logger": self._name,
            "event": "request",
            "method": method,
            "route": route,
            "path": _redact_str(path),
            "status": status,
            "duration_ms": duration_ms,
            "client": client,
        }
        request_id = request_id_var.get()
        if request_id is not None:
            line["request_id"] = request_id
        user_id = user_id_var.get()
        if user_id is not None:
            line["user_id"] = user_id
        for key, value in self._envelope.static:
            line[key] = value
        for processor in self._extra_processors:
            line = processor(self._log, "info", line)  # type: ignore[assignment]  # a dict here
        self._writer.write_line(orjson.dumps(line, option=_ORJSON_OPTIONS))

    def flush(self) -> None:
        """Flush the output stream."""
        if self._writer is not None:
            self._writer.flush()


def _orjson_str(
    obj: object, *, default: Callable[[Any], object] | None = None, option: int | None = None
) -> str:
    # logging.Formatter must return str.
    return orjson.dumps(obj, default=default, option=option).decode()


class _ConsoleBytesRenderer:
    """ConsoleRenderer for the bytes logger."""

    __slots__ = ("_render",)

    def __init__(self) -> None:
        self._render = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> bytes:
        return self._render(logger, method_name, event_dict).encode()


def _level_number(level: str) -> int:
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        msg = f"unknown log level: {level!r}"
        raise ValueError(msg)
    return number


def _chain(
    *, json: bool, stdlib: bool, envelope: _Envelope, extra_processors: Sequence[Processor] = ()
) -> list[Processor]:
    """Return the processors shared by the structlog and the stdlib paths."""
    if json:
        # Locals can hold secrets and are costly to render.
        exceptions: Processor = ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        renderer: Processor = JSONRenderer(
            serializer=_orjson_str if stdlib else orjson.dumps, option=_ORJSON_OPTIONS
        )
    else:
        # Formatting exceptions ourselves lets redaction see the traceback text.
        exceptions = structlog.processors.format_exc_info
        renderer = (
            structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
            if stdlib
            else _ConsoleBytesRenderer()
        )
    return [
        structlog.contextvars.merge_contextvars,
        exceptions,
        # Before the envelope: the fields it adds need no redaction, and every
        # field walked costs time on every line.
        redact_secrets,
        envelope,
        *extra_processors,
        renderer,
    ]


def configure_logging(  # noqa: PLR0913 - keyword-only, each one documented
    *,
    level: str,
    json: bool,
    service: str,
    version: str,
    environment: str,
    extra_processors: Sequence[Processor] = (),
) -> AccessLog:
    """Configure structlog for the process; return the access log that matches it.

    Call it once, early (the app factory does), before loggers are bound.

    Args:
        level: Minimum level, e.g. ``"INFO"``. Calls below it cost ~0.1 µs.
        json: One JSON object per line; otherwise human-readable console output.
        service: Service name added to every line.
        version: Service version added to every line.
        environment: Deployment environment added to every line.
        extra_processors: Processors run last before rendering, after
            redaction, e.g. the tracing module's ``add_trace_ids``.

    Raises:
        ValueError: If ``level`` is not a standard logging level name.

    """
    envelope = _Envelope(
        service=service, version=version, environment=environment, iso_timestamp=not json
    )
    processors = _chain(
        json=json, stdlib=False, envelope=envelope, extra_processors=extra_processors
    )
    writer = LineWriter(sys.stdout.buffer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_level_number(level)),
        context_class=dict,
        # Bytes straight to sys.stdout.buffer, one write per line: no stdlib
        # logging machinery on the hot path.
        logger_factory=LineLoggerFactory(writer),
        cache_logger_on_first_use=True,
    )
    if not json or _level_number(level) > logging.INFO:
        # Console lines go through structlog's renderer; above INFO, its level filter
        # drops the access line.
        return AccessLog(writer=writer)
    return AccessLog(writer=writer, envelope=envelope, extra_processors=extra_processors)


def stdlib_formatter(
    *, json: bool, service: str, version: str, environment: str
) -> logging.Formatter:
    """Build the formatter that gives standard-library records the structlog shape.

    Referenced by name from :func:`uvicorn_log_config`, so the config dict
    holds only plain data and can be pickled into uvicorn worker processes.
    """
    return structlog.stdlib.ProcessorFormatter(
        # Record arguments are already interpolated into the message by
        # getMessage(); passing them on as well (pass_foreign_args=True) would
        # add a ``positional_args`` field of repr()'d objects to each line.
        pass_foreign_args=False,
        processors=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_chain(
                json=json,
                stdlib=True,
                envelope=_Envelope(
                    service=service,
                    version=version,
                    environment=environment,
                    iso_timestamp=not json,
                ),
            ),
        ],
    )


def uvicorn_log_config(
    *,
    level: str,
    json: bool,
    service: str,
    version: str,
    environment: str,
) -> dict[str, Any]:
    """Return a :func:`logging.config.dictConfig` dict for uvicorn and the stdlib.

    uvicorn's own loggers and the root logger (asyncio, libraries) write the
    same line shape as structlog. uvicorn's ``color_message`` extra is never
    rendered, so lines hold no ANSI codes. ``uvicorn.access`` is silenced: the
    access log middleware writes one richer line per request instead. Pass it
    as ``uvicorn.run(..., log_config=..., access_log=False)``; uvicorn applies
    it in every worker process.

    Args:
        level: Minimum level for uvicorn and the root logger.
        json: JSON lines; otherwise human-readable console output.
        service: Service name added to every line.
        version: Service version added to every line.
        environment: Deployment environment added to every line.

    Raises:
        ValueError: If ``level`` is not a standard logging level name.

    """
    level_name = logging.getLevelName(_level_number(level))
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": f"{__name__}.stdlib_formatter",
                "json": json,
                "service": service,
                "version": version,
                "environment": environment,
            },
        },
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "structured",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            # uvicorn and uvicorn.error propagate to the root handler.
            "uvicorn": {"level": level_name},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
        "root": {"handlers": ["stdout"], "level": level_name},
    }


def enable_loop_debug(loop: asyncio.AbstractEventLoop, slow_callback_ms: float) -> None:
    """Turn on asyncio debug mode, for development only.

    asyncio then logs (logger ``asyncio``, level WARNING, through the stdlib
    formatter) every callback or task step that blocks the loop longer than
    ``slow_callback_ms``, which is how blocking calls in async code are found.
    Debug mode slows the loop down; never enable it in production.
    """
    loop.set_debug(True)
    loop.slow_callback_duration = slow_callback_ms / 1000
