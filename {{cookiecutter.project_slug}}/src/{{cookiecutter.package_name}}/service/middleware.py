"""The service's one middleware: every request's id, admission, deadline, hooks and log line.

One pure ASGI layer rather than one per concern: each layer costs a coroutine, a
closure and a wrapped `send` per request, and the concerns share most of their work
(the exempt-path check, the response status, the duration). The concerns keep their
own modules; this one only sequences them:

1. paths in `exempt_paths` (probes, scrapes) get only the request id: no hooks,
   shedding or deadline, and no access line unless `log_exempt` asks for it;
2. the request id is taken from ``X-Request-ID`` (its first value; 1-128 characters of
   ``[A-Za-z0-9._:-]``) or generated, set in `request_id_var` and echoed back;
3. each hook's `request_started` runs (tracing makes the request's span current);
4. a body declared larger than `max_body_bytes` is answered 413 at once; a body of
   unknown length is counted as the app reads it and cut off with 413 (`body_limit`);
   then `RequestStats.admit` sheds the request (503 + `Retry-After`) or counts it in;
5. within the request deadline, each admission step (authentication, rate limiting)
   may turn the request away with a problem answer, or add response headers; then
   the app runs: past the deadline, the handler is cancelled (a pooled connection it
   held is released) and answered 504;
6. an exception that escapes is logged once with a structured traceback and answered
   500 (`application/problem+json`) if no response has started; it is not re-raised,
   since Starlette and uvicorn would log it again without structure;
7. one access line (``event="request"``: method, route template, path, status,
   duration, client; never header values), then the hooks' `request_finished` in
   reverse order, so the line is written while the span is still current.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING

import structlog

from {{ cookiecutter.package_name }}.observability.logs.access import AccessLog
from {{ cookiecutter.package_name }}.observability.logs.context import (
    TRACE_IDS_KEY,
    request_id_var,
    user_id_var,
)
from {{ cookiecutter.package_name }}.service.body_limit import limit_body, send_too_large
from {{ cookiecutter.package_name }}.service.hooks import AdmissionStep, Rejection, RequestHook
from {{ cookiecutter.package_name }}.service.problems import retry_after, send_problem
from {{ cookiecutter.package_name }}.service.request_info import (
    REQUEST_ID_HEADER_NAME,
    read_request_id,
    route_template,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from starlette.types import ASGIApp, Message, Receive, Scope, Send
    from structlog.typing import FilteringBoundLogger

    from {{ cookiecutter.package_name }}.resilience.deadline import Deadlines
    from {{ cookiecutter.package_name }}.resilience.shedding import RequestStats

# The extension points (request_hooks) are re-exported: they are the middleware's interface.
__all__ = [
    "AdmissionStep",
    "Rejection",
    "RequestHook",
    "ServiceMiddleware",
]


class ServiceMiddleware:
    """Request id, admission, deadline, hooks and the access log, in one pure ASGI layer.

    Every part is optional: without `stats` nothing is shed, without `deadlines`
    nothing is timed out, without `hooks` nothing else observes the request.
    """

    __slots__ = (
        "_access_log",
        "_admission",
        "_app",
        "_deadlines",
        "_exempt_paths",
        "_hooks",
        "_log",
        "_log_exempt",
        "_max_body_bytes",
        "_on_shed",
        "_reversed_hooks",
        "_stats",
        "_timeout",
    )

    def __init__(  # noqa: PLR0913 - keyword-only, one per concern sequenced here
        self,
        app: ASGIApp,
        *,
        exempt_paths: frozenset[str] = frozenset(),
        log_exempt: bool = False,
        stats: RequestStats | None = None,
        on_shed: Callable[[], None] | None = None,
        deadlines: Deadlines | None = None,
        timeout: float = 0.0,
        max_body_bytes: int = 0,
        hooks: Sequence[RequestHook] = (),
        admission: Sequence[AdmissionStep] = (),
        access_log: AccessLog | None = None,
    ) -> None:
        """Wrap `app`; build it after logging is configured (it binds its logger).

        `access_log` is what `configure_logging` returns; by default, lines go
        through structlog. `max_body_bytes` 0 sets no body limit.
        """
        self._access_log = access_log if access_log is not None else AccessLog()
        self._app = app
        self._exempt_paths = exempt_paths
        self._log_exempt = log_exempt
        self._stats = stats
        self._on_shed = on_shed
        self._deadlines = deadlines if timeout > 0 else None
        self._timeout = timeout
        self._max_body_bytes = max_body_bytes
        self._hooks = tuple(hooks)
        self._admission = tuple(admission)
        self._reversed_hooks = self._hooks[::-1]
        # Bound once: each call on the lazy proxy would resolve it again.
        self._log: FilteringBoundLogger = structlog.get_logger(__name__).bind()

    # One frame on purpose: every helper coroutine here would cost each request.
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: C901, PLR0912, PLR0915
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        exempt = scope["path"] in self._exempt_paths
        # One pass over the header list for the lookups below, at C speed; reversed,
        # so that of a header sent twice the first value counts.
        headers = dict(reversed(scope["headers"]))
        request_id, header_value = read_request_id(headers)
        # The request id, then whatever the admission steps add.
        response_headers = [(REQUEST_ID_HEADER_NAME, header_value)]
        status = 0

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # A new list: the response object may reuse its own.
                message["headers"] = [*message.get("headers", ()), *response_headers]
            await send(message)

        token = request_id_var.set(request_id)
        if exempt and not self._log_exempt:
            # Probes and scrapes: the request id and the last resort, nothing else.
            try:
                await self._app(scope, receive, send_with_request_id)
            except Exception as exc:  # noqa: BLE001 - last resort, as below
                await self._unhandled(scope, exc, send_with_request_id, responded=status != 0)
            finally:
                request_id_var.reset(token)
            return

        start = perf_counter()
        hooks = () if exempt else self._hooks
        # Loops, not a comprehension or zip(): on Python 3.11 each costs a frame or
        # an iterator per request. `started` is emptied from the end, in reverse order.
        started: list[object] = []
        for hook in hooks:
            started.append(hook.request_started(scope))  # noqa: PERF401 - see above
        stats = None if exempt else self._stats
        deadline = None
        if not (exempt or self._deadlines is None):
            deadline = self._deadlines.within(self._timeout)
        admitted = False
        error: Exception | None = None
        seconds = 0.0
        route = None
        body: Receive | None = receive
        if self._max_body_bytes:
            body = limit_body(receive, headers, self._max_body_bytes)
        try:
            try:
                if body is None:
                    await send_too_large(send_with_request_id, self._max_body_bytes, scope["path"])
                elif stats is not None and not stats.admit():
                    await self._shed(send_with_request_id)
                else:
                    admitted = stats is not None
                    handled = (
                        self._admit_then_run(scope, body, send_with_request_id, response_headers)
                        if self._admission and not exempt
                        else self._app(scope, body, send_with_request_id)
                    )
                    if deadline is None:
                        await handled
                    else:
                        with deadline:
                            await handled
            except Exception as exc:  # noqa: BLE001 - last resort: logged, answered, not re-raised
                if status == 0 and deadline is not None and deadline.expired:
                    await send_problem(
                        send_with_request_id,
                        504,
                        f"the request took longer than {self._timeout:g}s",
                    )
                else:
                    error = exc
                    await self._unhandled(scope, exc, send_with_request_id, responded=status != 0)
            seconds = perf_counter() - start
            route = route_template(scope)
            # Not written for a cancelled request (client gone, server stopping).
            if not exempt or self._log_exempt:
                client = scope.get("client")
                self._access_log.write(
                    method=scope["method"],
                    route=route,
                    path=scope["path"],
                    status=status or 500,
                    # Not round(seconds * 1000, 3): given digits, round goes through a string.
                    duration_ms=round(seconds * 1_000_000) / 1000,
                    client=client[0] if client else None,
                    trace_ids=scope.get(TRACE_IDS_KEY),
                )
        finally:
            status = status or 500  # cancelled, or no response at all
            if admitted:
                stats.release(status)  # type: ignore[union-attr]
            if hooks:
                if not seconds:
                    seconds = perf_counter() - start
                    route = route_template(scope)
                for hook in self._reversed_hooks:
                    hook.request_finished(scope, started.pop(), route, status, seconds, error)
            if self._admission:
                user_id_var.set(None)  # a step may have named the caller for this request
            request_id_var.reset(token)

    async def _admit_then_run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        response_headers: list[tuple[bytes, bytes]],
    ) -> None:
        for step in self._admission:
            rejection = await step.admit(scope, response_headers)
            if rejection is not None:
                await send_problem(
                    send,
                    rejection.status,
                    rejection.detail,
                    instance=scope["path"],
                    headers=rejection.headers,
                )
                return
        await self._app(scope, receive, send)

    async def _shed(self, send: Send) -> None:
        if self._on_shed is not None:
            self._on_shed()
        await send_problem(send, 503, "too many requests in flight", headers=retry_after(1))

    async def _unhandled(
        self, scope: Scope, exc: Exception, send: Send, *, responded: bool
    ) -> None:
        """Log an exception that escaped the app once, and answer 500 if still possible."""
        self._log.error(
            "unhandled_exception",
            method=scope["method"],
            path=scope["path"],
            route=route_template(scope),
            exc_info=exc,
        )
        # After the response started no 500 can follow: uvicorn closes the connection,
        # so the client cannot take a truncated body for a whole one.
        if not responded:
            await send_problem(
                send, 500, "The server encountered an unexpected error.", instance=scope["path"]
            )
