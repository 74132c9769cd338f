"""W3C trace context through the whole app: in from the client, out to a downstream."""

from __future__ import annotations

from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.outbound.client import HttpClient  # noqa: TC001 - FastAPI resolves it at run time
from tests.downstream import Downstream

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def received_header(request: bytes, name: bytes) -> str | None:
    for line in request.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode()
    return None


async def call_downstream_through(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str]
) -> bytes:
    async with Downstream() as downstream:

        async def relay(http: HttpClient) -> dict[str, int]:
            return {"status": (await http.get(f"{downstream.url}/x")).status_code}

        app.add_api_route("/relay-trace", relay)
        assert (await client.get("/relay-trace", headers=headers)).status_code == 200
        return downstream.requests[-1]


async def test_incoming_trace_reaches_the_downstream_with_a_new_parent(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=abc,other=1"}
    request = await call_downstream_through(app, client, headers)
    traceparent = received_header(request, b"traceparent")
    assert traceparent is not None
    version, trace_id, parent_id, flags = traceparent.split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert parent_id != PARENT_ID
    assert len(parent_id) == 16
    assert received_header(request, b"tracestate") == "vendor=abc,other=1"


async def test_malformed_traceparent_starts_a_new_trace(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    bad = f"00-{TRACE_ID.upper()}-{PARENT_ID}-01"
    request = await call_downstream_through(app, client, {"traceparent": bad})
    traceparent = received_header(request, b"traceparent")
    assert traceparent is not None
    trace_id = traceparent.split("-")[1]
    assert trace_id not in {TRACE_ID, TRACE_ID.upper(), "0" * 32}
    assert len(trace_id) == 32


async def test_a_malformed_tracestate_is_dropped_whole_and_random_flag_is_kept(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-03", "tracestate": "foo@=1,Bad=2,x@@y=4"}
    request = await call_downstream_through(app, client, headers)
    traceparent = received_header(request, b"traceparent")
    assert traceparent is not None
    assert traceparent.startswith(f"00-{TRACE_ID}-")
    assert traceparent.endswith("-03")
    assert received_header(request, b"tracestate") is None
