"""Outbound HTTP: one pooled httpx client, a circuit breaker per downstream host.

Each request gets httpx's per-phase timeouts (connect, read, write, pool) and, on top,
a total deadline, so a server that trickles bytes cannot hold a caller forever.

What trips a host's breaker: transport errors (refused, reset, DNS, httpx timeouts),
the total deadline, and 5xx answers. A 5xx is raised as `DownstreamStatusError` (the
response is attached) so that routes map it explicitly instead of passing it on as if
it were data. 4xx answers are the caller's problem: they are returned, and count as
successes. While a host's breaker is open, requests to it raise `CircuitOpenError`
without opening a connection; the app answers those with 503 and Retry-After.

Breakers are created on first use and never dropped: meant for the fixed set of
hosts a service talks to, not for URLs taken from user input.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, TypedDict, Unpack

import httpx
from fastapi import Depends, Request

from {{ cookiecutter.package_name }}.outbound.settings import HttpClientSettings
from {{ cookiecutter.package_name }}.resilience.breaker import BreakerConfig, CircuitBreaker, StateChangeCallback

EventHook = Callable[..., Awaitable[None]]
"""An httpx async event hook: takes the `httpx.Request` ("request") or `httpx.Response`."""

_DEFAULT_PORTS = {"http": 80, "https": 443}


class RequestOptions(TypedDict, total=False):
    """What a request may carry besides method and URL."""

    params: Mapping[str, str | int | float | bool]
    headers: Mapping[str, str]
    json: object
    content: bytes | str


class DownstreamStatusError(Exception):
    """A downstream host answered 5xx; the response is in ``response``."""

    def __init__(self, response: httpx.Response) -> None:
        """Describe the failed request without its query string, which may hold secrets."""
        url = response.request.url
        super().__init__(
            f"{response.request.method} {url.scheme}://{url.host}{url.path} "
            f"answered {response.status_code}"
        )
        self.response = response


def is_downstream_failure(exc: BaseException) -> bool:
    """Tell a failing host (trips its breaker) from any other error (does not)."""
    # httpx.TimeoutException is a TransportError; TimeoutError is the total deadline.
    return isinstance(exc, httpx.TransportError | TimeoutError | DownstreamStatusError)


class OutboundClient:
    """An `httpx.AsyncClient` with a circuit breaker per host and a total deadline."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        breaker_config: BreakerConfig,
        *,
        total_timeout: float,
        on_state_change: StateChangeCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Take ownership of ``client``; `aclose` closes it."""
        if not total_timeout > 0:
            msg = f"total_timeout must be > 0, got {total_timeout!r}"
            raise ValueError(msg)
        self._client = client
        self._breaker_config = breaker_config
        self._total_timeout = total_timeout
        self._on_state_change = on_state_change
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    @property
    def breakers(self) -> Mapping[str, CircuitBreaker]:
        """The breakers created so far, by ``host:port``, for health reports and metrics."""
        return self._breakers

    async def request(
        self, method: str, url: httpx.URL | str, **options: Unpack[RequestOptions]
    ) -> httpx.Response:
        """Send a request through the host's breaker and return the (non-5xx) response.

        Raises `CircuitOpenError` (host's breaker open), `DownstreamStatusError` (5xx),
        `TimeoutError` (total deadline) or an `httpx.HTTPError`.
        """
        request = self._client.build_request(method, url, **options)
        breaker = self._breaker_for(request.url)
        # The deadline sits inside the guard so that the guard sees TimeoutError (a
        # failure) rather than the CancelledError that asyncio.timeout uses internally.
        async with breaker.guard(), asyncio.timeout(self._total_timeout):
            response = await self._client.send(request)
            if response.status_code >= httpx.codes.INTERNAL_SERVER_ERROR:
                raise DownstreamStatusError(response)
        return response

    async def get(self, url: httpx.URL | str, **options: Unpack[RequestOptions]) -> httpx.Response:
        """Send a GET; see `request`."""
        return await self.request("GET", url, **options)

    async def post(self, url: httpx.URL | str, **options: Unpack[RequestOptions]) -> httpx.Response:
        """Send a POST; see `request`."""
        return await self.request("POST", url, **options)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()

    def _breaker_for(self, url: httpx.URL) -> CircuitBreaker:
        key = f"{url.host}:{url.port or _DEFAULT_PORTS.get(url.scheme, 0)}"
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(
                key,
                self._breaker_config,
                is_failure=is_downstream_failure,
                clock=self._clock,
                on_state_change=self._on_state_change,
            )
            self._breakers[key] = breaker
        return breaker


def build_outbound_client(  # noqa: PLR0913 - keyword-only, one per setting
    *,
    connect_timeout: float,
    read_timeout: float,
    total_timeout: float,
    max_connections: int,
    breaker_config: BreakerConfig,
    on_state_change: StateChangeCallback | None = None,
    event_hooks: Mapping[str, list[EventHook]] | None = None,
) -> OutboundClient:
    """Create the app's outbound client; the lifespan closes it with ``aclose()``.

    ``read_timeout`` also bounds each write and ``connect_timeout`` the wait for a
    pooled connection; ``total_timeout`` bounds the whole request, body included.
    ``event_hooks`` is httpx's, e.g. ``{"request": [inject_trace_headers]}``.
    """
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
        ),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        event_hooks=event_hooks,
    )
    return OutboundClient(
        client, breaker_config, total_timeout=total_timeout, on_state_change=on_state_change
    )


@asynccontextmanager
async def open_outbound_client(
    settings: HttpClientSettings,
    *,
    on_state_change: StateChangeCallback | None = None,
    event_hooks: Mapping[str, list[EventHook]] | None = None,
) -> AsyncIterator[OutboundClient]:
    """The service's outbound client for as long as the block runs, then closed."""
    client = build_outbound_client(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        total_timeout=settings.total_timeout,
        max_connections=settings.max_connections,
        breaker_config=BreakerConfig.from_settings(settings.breaker),
        on_state_change=on_state_change,
        event_hooks=event_hooks,
    )
    try:
        yield client
    finally:
        await client.aclose()


async def get_outbound_client(request: Request) -> OutboundClient:
    """FastAPI dependency: the client the lifespan put on ``app.state.http_client``."""
    client: OutboundClient = request.app.state.http_client
    return client


HttpClient = Annotated[OutboundClient, Depends(get_outbound_client)]
"""Route parameter type: ``async def route(http: HttpClient) -> ...``."""
