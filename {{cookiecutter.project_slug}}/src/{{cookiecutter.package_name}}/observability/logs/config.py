"""Logging set-up: structlog for the service, the standard library (uvicorn, asyncio) alike.

`configure_logging` configures structlog and returns the matching access log;
`uvicorn_log_config` gives uvicorn and the standard library the same line shape.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from structlog.processors import ExceptionRenderer, JSONRenderer
from structlog.tracebacks import ExceptionDictTransformer

from {{ cookiecutter.package_name }}.observability.logs.access import AccessLog
from {{ cookiecutter.package_name }}.observability.logs.context import ORJSON_OPTIONS, Envelope
from {{ cookiecutter.package_name }}.observability.logs.output import LineLoggerFactory, LineWriter
from {{ cookiecutter.package_name }}.observability.logs.redaction import redact_secrets

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Sequence

    from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "configure_logging",
    "enable_loop_debug",
    "stdlib_formatter",
    "uvicorn_log_config",
]


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
    *, json: bool, stdlib: bool, envelope: Envelope, extra_processors: Sequence[Processor] = ()
) -> list[Processor]:
    """Return the processors shared by the structlog and the stdlib paths."""
    if json:
        # Locals can hold secrets and are costly to render.
        exceptions: Processor = ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        renderer: Processor = JSONRenderer(
            serializer=_orjson_str if stdlib else orjson.dumps, option=ORJSON_OPTIONS
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
    envelope = Envelope(
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
                envelope=Envelope(
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
