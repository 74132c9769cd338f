"""The access line: ``event="request"``, one per request, written by the service middleware."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
import structlog

from {{ cookiecutter.package_name }}.observability.logs.context import (
    DEFAULT_LOGGER_NAME,
    ORJSON_OPTIONS,
    request_id_var,
    user_id_var,
)
from {{ cookiecutter.package_name }}.observability.logs.redaction import redact_url_passwords

if TYPE_CHECKING:
    from collections.abc import Sequence

    from structlog.typing import EventDict, FilteringBoundLogger, Processor

    from {{ cookiecutter.package_name }}.observability.logs.context import Envelope
    from {{ cookiecutter.package_name }}.observability.logs.output import LineWriter

__all__ = ["AccessLog"]


class AccessLog:
    """Writes the access line, ``event="request"``, once per request.

    Made by ``config.configure_logging`` in JSON mode, it builds and renders the line
    itself: the fields, their order and their redaction are those of a structlog
    line through the configured processors, at about a third of the cost, which
    the access line can afford to skip because the middleware controls every
    field. Made without an envelope (console mode, levels above INFO, tests), it
    logs through structlog.
    """

    __slots__ = ("_envelope", "_extra_processors", "_log", "_name", "_static", "_writer")

    def __init__(
        self,
        *,
        name: str = f"{DEFAULT_LOGGER_NAME}.access",
        writer: LineWriter | None = None,
        envelope: Envelope | None = None,
        extra_processors: Sequence[Processor] = (),
    ) -> None:
        """Log as `name`; with a `writer` and `envelope`, render JSON lines directly."""
        self._name = name
        self._writer = writer
        self._envelope = envelope
        # The envelope's fields as a dict: added to a line in one update.
        self._static = dict(envelope.static) if envelope is not None else {}
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
        trace_ids: tuple[str, str] | None = None,
    ) -> None:
        """Write one access line; `trace_ids` are the request span's (else a processor's)."""
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
            "path": redact_url_passwords(path),
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
        line.update(self._static)
        if trace_ids is not None:
            # Where `add_trace_ids` puts them, which then leaves the line alone.
            line["trace_id"], line["span_id"] = trace_ids
        for processor in self._extra_processors:
            line = processor(self._log, "info", line)  # type: ignore[assignment]  # a dict here
        try:
            # The fields are ours, keyed by strings: orjson's option for other keys
            # costs a quarter of the rendering, so it is used only if a processor
            # added such a key.
            rendered = orjson.dumps(line, option=orjson.OPT_UTC_Z)
        except TypeError:
            rendered = orjson.dumps(line, option=ORJSON_OPTIONS)
        self._writer.write_line(rendered)

    def flush(self) -> None:
        """Flush the output stream."""
        if self._writer is not None:
            self._writer.flush()
