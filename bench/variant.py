"""Serve the baked service with some of its features switched off (benchmark only).

Started by `bench/features.py`, under valgrind, in place of `python -m <package>`:

    BENCH_PACKAGE=my_service BENCH_OFF=metrics,breaker python bench/variant.py

It builds the app exactly as the service does (`app_from_env`), then switches off the
features named in `BENCH_OFF` on the built app, before its middleware stack is built,
and serves it as `python -m <package>` would. None of these switches exists in the
service's settings: a user never needs them, only the cost table does.

A feature added to the template (rate limiting, idempotency, JWT verification) gets a
switch here, a function that takes the app, and an entry in `bench/features.py`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

PACKAGE = os.environ["BENCH_PACKAGE"]


def _module(name: str) -> Any:  # noqa: ANN401 - the baked package has no stubs here
    return importlib.import_module(f"{PACKAGE}.{name}")


def _service_middleware(app: Any) -> Any:  # noqa: ANN401
    """The `Middleware` entry of the service middleware (its kwargs are still editable)."""
    for entry in app.user_middleware:
        if entry.cls.__name__ == "ServiceMiddleware":
            return entry
    msg = "the app has no ServiceMiddleware"
    raise LookupError(msg)


def _without_hook(app: Any, class_name: str) -> None:  # noqa: ANN401
    kwargs = _service_middleware(app).kwargs
    hooks = kwargs.get("hooks", ())
    kwargs["hooks"] = [hook for hook in hooks if type(hook).__name__ != class_name]


class _NoAccessLog:
    """Writes nothing."""

    def write(self, **_fields: object) -> None:
        pass

    def flush(self) -> None:
        pass


def request_id_and_access_line(app: Any) -> None:  # noqa: ANN401
    """No access line, and a constant request id instead of a generated one."""
    _service_middleware(app).kwargs["access_log"] = _NoAccessLog()
    middleware = _module("service.middleware")
    # The name the middleware calls, not the one in request_info.
    middleware.read_request_id = lambda _headers: ("-", b"-")


def trace_propagation(app: Any) -> None:  # noqa: ANN401
    """No request span, and no trace ids looked up for the access line."""
    _without_hook(app, "RequestTracing")
    access_log = _service_middleware(app).kwargs.get("access_log")
    if access_log is not None and hasattr(access_log, "_extra_processors"):
        access_log._extra_processors = ()  # noqa: SLF001


def metrics(app: Any) -> None:  # noqa: ANN401
    """No request counter or latency histogram."""
    _without_hook(app, "Metrics")


def shedding_and_deadline(app: Any) -> None:  # noqa: ANN401
    """No admission count and no request deadline (the pool acquire's stays)."""
    kwargs = _service_middleware(app).kwargs
    kwargs["stats"] = None
    kwargs["timeout"] = 0.0


def body_limit(app: Any) -> None:  # noqa: ANN401
    """No request body limit: the app reads `receive` unwrapped."""
    _service_middleware(app).kwargs["max_body_bytes"] = 0


def database_breaker(_app: Any) -> None:  # noqa: ANN401
    """The database breaker admits and records nothing."""
    breaker = _module("resilience.breaker").CircuitBreaker
    breaker.admit = lambda _self: (0, 0.0)
    breaker.settle = lambda _self, _admitted, _exc: None


def rate_limiting(app: Any) -> None:  # noqa: ANN401
    """No rate limiter among the admission steps (Redis stays connected)."""
    kwargs = _service_middleware(app).kwargs
    kwargs["admission"] = [
        step for step in kwargs.get("admission", ()) if type(step).__name__ != "RateLimiter"
    ]


def jwt_verification(app: Any) -> None:  # noqa: ANN401
    """No bearer token verification among the admission steps (auth=jwt bakes).

    The token is still sent and its header parsed by nobody; GET routes need no scope,
    and the rate limiter, with no principal, keys on the client's address instead.
    """
    kwargs = _service_middleware(app).kwargs
    kwargs["admission"] = [
        step for step in kwargs.get("admission", ()) if type(step).__name__ != "Authenticator"
    ]


def gc_collector(_app: Any) -> None:  # noqa: ANN401
    """CPython's own garbage collection: no freeze, default thresholds, no periodic pass."""
    collector = _module("lifecycle.collector").GarbageCollector

    @contextlib.asynccontextmanager
    async def running(self: Any) -> AsyncIterator[Any]:  # noqa: ANN401
        yield self

    collector.running = running


def service_middleware(app: Any) -> None:  # noqa: ANN401
    """No service middleware at all: every per-request feature of the chassis at once."""
    app.user_middleware.remove(_service_middleware(app))


SWITCHES: dict[str, Callable[[Any], None]] = {
    "request_id_access_line": request_id_and_access_line,
    "trace_propagation": trace_propagation,
    "metrics": metrics,
    "shedding_deadline": shedding_and_deadline,
    "body_limit": body_limit,
    "database_breaker": database_breaker,
    "rate_limiting": rate_limiting,
    "jwt_verification": jwt_verification,
    "gc_collector": gc_collector,
    "service_middleware": service_middleware,
}


def main() -> None:
    """Patch the app factory, then serve as `python -m <package>` does."""
    off = [name for name in os.environ.get("BENCH_OFF", "").split(",") if name]
    if unknown := set(off) - set(SWITCHES):
        msg = f"unknown BENCH_OFF switches {sorted(unknown)}; known: {sorted(SWITCHES)}"
        raise SystemExit(msg)
    app_module = _module("app")
    build = app_module.app_from_env

    def app_from_env() -> Any:  # noqa: ANN401
        app = build()
        for name in off:
            SWITCHES[name](app)
        return app

    # uvicorn imports "<package>.app:app_from_env" by name in this process (one worker).
    app_module.app_from_env = app_from_env
    _module("runtime.server").serve(_module("settings").load_settings())


if __name__ == "__main__":
    main()
