"""The extension points: what each part of the service offers to the assembly in `app.py`.

.NET Aspire's `AddX`, for a Python service: every part (the database, tracing, Redis, a
broker, the example API...) has one `add_<part>(parts, settings)` function that appends
what it brings to a `Parts`; `app.py` calls them in order, then builds the app, its
middleware and its lifespan from the lists. A part never reaches into another one: where
two meet (tracing and auth both add headers to outbound requests), each appends to the
shared list on its own, and neither knows whether the other is there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
    from contextlib import AbstractContextManager, AsyncExitStack

    from starlette.applications import Starlette
    from starlette.routing import BaseRoute
    from structlog.typing import Processor

    from {{ cookiecutter.package_name }}.resilience.breaker import (
        CircuitBreaker,
        CircuitState,
        StateChangeCallback,
    )
    from {{ cookiecutter.package_name }}.service.hooks import AdmissionStep, RequestHook

__all__ = ["Parts", "Reading", "open_all"]


@dataclass(frozen=True, slots=True)
class Reading:
    """A number a part keeps (a plain counter or gauge), exported at scrape time.

    Parts count with integer increments on their hot paths; the metrics part, when
    present, reads them when `/metrics` is scraped, so no part depends on it.
    """

    name: str
    documentation: str
    kind: Literal["counter", "gauge"]
    read: Callable[[], float]


@dataclass(eq=False)
class Parts:
    """Everything the parts offer, appended in the order `app.py` adds them.

    The lists are read when the app is built (routes, middleware, OpenAPI) or when its
    lifespan starts (resources, breakers, health checks), so a part may append to a
    list that an earlier part reads, as long as it is added before the app is built.
    """

    app: Starlette
    # Opened in order on the lifespan's AsyncExitStack, closed in reverse: each one may
    # use what the ones before it put on `app.state`.
    resources: list[Callable[[AsyncExitStack], Awaitable[None]]] = field(default_factory=list)
    # Opened by the worker process instead (`python -m <package> worker`), when there is one.
    worker_resources: list[Callable[[AsyncExitStack], Awaitable[None]]] = field(
        default_factory=list
    )
    # API routes, in groups added with `add_routes`, matched after the probes; then each
    # change in `route_changes` may replace some (idempotency keys, for instance).
    route_groups: list[tuple[list[BaseRoute], str | None]] = field(default_factory=list)
    route_changes: list[Callable[[list[BaseRoute]], list[BaseRoute]]] = field(default_factory=list)
    # Set by auth: makes a group's unsafe methods need its write scope. Without auth,
    # every caller may write.
    scope_guard: Callable[[str, list[BaseRoute]], list[BaseRoute]] | None = None
    # Operations (method, path) that accept an Idempotency-Key when a part offers them.
    idempotent_operations: list[tuple[str, str]] = field(default_factory=list)
    # Routes of the service itself (probes, scrapes), matched first.
    service_routes: list[BaseRoute] = field(default_factory=list)
    worker_routes: list[BaseRoute] = field(default_factory=list)
    # Paths that skip admission, hooks, shedding, the deadline and the access line, unless
    # a filter (auth's public paths) takes one out.
    exempt_paths: set[str] = field(default_factory=set)
    exempt_filters: list[Callable[[str], bool]] = field(default_factory=list)
    # The service middleware's steps (authentication, rate limits) and hooks (tracing, metrics).
    admission: list[AdmissionStep] = field(default_factory=list)
    hooks: list[RequestHook] = field(default_factory=list)
    on_shed: list[Callable[[], None]] = field(default_factory=list)
    # Changes to the OpenAPI document, each given the app once it is built.
    openapi: list[Callable[[Any], None]] = field(default_factory=list)
    # Where the breakers are (some are created on first use), and who hears of changes.
    breaker_sources: list[Callable[[], Iterable[CircuitBreaker]]] = field(default_factory=list)
    breaker_listeners: list[StateChangeCallback] = field(default_factory=list)
    # More entries for the `/health` report (Redis, a broker).
    health_checks: list[Callable[[], Awaitable[dict[str, list[dict[str, Any]]]]]] = field(
        default_factory=list
    )
    readings: list[Reading] = field(default_factory=list)
    # What is done with each event-loop lag sample (seconds), for example a histogram.
    loop_lag_listeners: list[Callable[[float], None]] = field(default_factory=list)
    # Who hears each readiness result (probes are not counted as requests).
    readiness_listeners: list[Callable[[bool], None]] = field(default_factory=list)
    log_processors: list[Processor] = field(default_factory=list)
    # httpx event hooks of the outbound client: "request" and "response".
    outbound_hooks: dict[str, list[Callable[[Any], Awaitable[None]]]] = field(
        default_factory=lambda: {"request": [], "response": []}
    )
    # Set by tracing when spans are exported: wraps a database or Redis command in a span.
    client_span: Callable[..., AbstractContextManager[object]] | None = None
    # Set by tracing: the current trace as message headers, and a consumer's way back in.
    trace_headers: Callable[[], dict[str, str]] | None = None
    continue_trace: Callable[[Mapping[str, str], str], AbstractContextManager[object]] | None = None
    # Message handlers by type, for the worker (the example API's audit trail).
    event_handlers: dict[str, Callable[..., Awaitable[None]]] = field(default_factory=dict)

    def breaker_changed(
        self, breaker: CircuitBreaker, old: CircuitState, new: CircuitState
    ) -> None:
        """Tell every listener of a breaker's state change."""
        for listener in self.breaker_listeners:
            listener(breaker, old, new)

    def loop_lag(self, lag: float) -> None:
        """Hand one event-loop lag sample to every listener."""
        for listener in self.loop_lag_listeners:
            listener(lag)

    def readiness(self, ready: bool) -> None:  # noqa: FBT001 - a Health callback
        """Hand one readiness result to every listener."""
        for listener in self.readiness_listeners:
            listener(ready)

    def shed(self) -> None:
        """A request was shed: tell whoever counts it."""
        for listener in self.on_shed:
            listener()

    def add_routes(self, routes: Iterable[BaseRoute], *, write_scope: str | None = None) -> None:
        """Add API routes; with auth on, their unsafe methods need `write_scope`."""
        self.route_groups.append((list(routes), write_scope))

    def api_routes(self) -> list[BaseRoute]:
        """The API routes with every change applied, in the order they were added."""
        routes: list[BaseRoute] = []
        for group, scope in self.route_groups:
            if scope is not None and self.scope_guard is not None:
                routes += self.scope_guard(scope, group)
            else:
                routes += group
        for change in self.route_changes:
            routes = change(routes)
        return routes

    def exempt(self) -> frozenset[str]:
        """The exempt paths that every filter keeps."""
        return frozenset(p for p in self.exempt_paths if all(f(p) for f in self.exempt_filters))

    def breakers(self) -> Iterator[CircuitBreaker]:
        """Every breaker there is now."""
        for source in self.breaker_sources:
            yield from source()


async def open_all(
    resources: list[Callable[[AsyncExitStack], Awaitable[None]]], stack: AsyncExitStack
) -> None:
    """Open each resource in order on `stack`."""
    for open_resource in resources:
        await open_resource(stack)
