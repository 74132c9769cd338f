"""W3C Trace Context propagation and OpenTelemetry spans, over real HTTP.

The app runs in uvicorn in this process (so spans can be inspected), and
outbound calls go to a real HTTP server on 127.0.0.1 that records the
headers it receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import pytest
import structlog
import uvicorn
from fastapi import FastAPI
from opentelemetry import context, trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode

from {{ cookiecutter.package_name }}.observability.logs.config import configure_logging
from {{ cookiecutter.package_name }}.observability.logs.context import user_id_var
from {{ cookiecutter.package_name }}.observability.tracing import spans as tracing
from {{ cookiecutter.package_name }}.observability.tracing.client_spans import (
    end_client_span,
    inject_trace_headers,
    query_span,
)
from {{ cookiecutter.package_name }}.observability.tracing.spans import RequestTracing, add_trace_ids
from {{ cookiecutter.package_name }}.observability.tracing.traceparent import parse_traceparent
from {{ cookiecutter.package_name }}.service.middleware import Rejection, ServiceMiddleware

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from opentelemetry.sdk.trace import ReadableSpan
    from starlette.types import Scope

PACKAGE = tracing.__name__.partition(".")[0]
SERVICE = {"service": "obs-test", "version": "9.9.9", "environment": "test"}
EXCLUDED = frozenset({"/health/live"})
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
# A trace started here is not sampled and says its trace id is random (Level 2).
NEW_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-02")
log = structlog.get_logger("tracing_test")


class Downstream(BaseHTTPRequestHandler):
    """Records the headers of each request and answers with them as JSON."""

    received: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.received.append(headers)
        body = json.dumps(headers).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        """Keep the test output quiet."""


@pytest.fixture(scope="module")
def downstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Downstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def log_output() -> Iterator[io.BytesIO]:
    """The service's log configuration, writing to a buffer instead of stdout."""
    output = io.BytesIO()
    configure_logging(level="INFO", json=True, extra_processors=[add_trace_ids], **SERVICE)
    structlog.configure(logger_factory=structlog.BytesLoggerFactory(output))
    yield output
    structlog.reset_defaults()


def records(output: io.BytesIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.getvalue().splitlines()]


def build_app(
    downstream: str, provider: TracerProvider | None = None, *, fastapi_telemetry: bool = False
) -> FastAPI:
    """The service's middleware stack around a few routes."""
    telemetry: Any = {"tracer_provider": provider} if fastapi_telemetry else {"tracing": False}
    app = FastAPI(telemetry=telemetry)
    client = httpx.AsyncClient(
        event_hooks={"request": [inject_trace_headers], "response": [end_client_span]}
    )

    @app.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, int]:
        log.info("item_fetched", item_id=item_id)
        return {"id": item_id}

    @app.get("/outbound")
    async def outbound() -> Any:
        response = await client.get(f"{downstream}/echo?q=secret")
        log.info("downstream_called")
        return response.json()

    @app.get("/outbound-thrice")
    async def outbound_thrice() -> list[Any]:
        received = [(await client.get(f"{downstream}/echo")).json() for _ in range(3)]
        log.info("downstream_called")
        return received

    @app.get("/query")
    async def query() -> dict[str, str]:
        with query_span("SELECT", table="items", statement="SELECT * FROM items WHERE id = $1"):
            log.info("querying")
        return {}

    @app.get("/boom")
    async def boom() -> None:
        msg = "boom"
        raise RuntimeError(msg)

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        log.info("live_checked")
        return {"status": "ok"}

    app.add_middleware(ServiceMiddleware, exempt_paths=EXCLUDED, hooks=[RequestTracing(provider)])
    return app


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run app in uvicorn on 127.0.0.1 (port 0) and yield a client for it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections wait in the backlog until uvicorn has started
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    port = sock.getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="module")
async def propagating(downstream: str, log_output: io.BytesIO) -> AsyncIterator[httpx.AsyncClient]:
    """The app without an SDK: propagation only."""
    assert log_output is not None
    async with serve(build_app(downstream)) as client:
        yield client


def lines_for(output: io.BytesIO, response: httpx.Response) -> list[dict[str, Any]]:
    request_id = response.headers["x-request-id"]
    found = [line for line in records(output) if line.get("request_id") == request_id]
    assert found, "no log lines for the request"
    return found


class TestPropagationOnly:
    """Without the SDK, the middleware carries ids but records nothing."""

    async def test_log_lines_carry_the_incoming_trace_id_and_a_new_span_id(
        self, propagating: httpx.AsyncClient, log_output: io.BytesIO
    ) -> None:
        response = await propagating.get("/items/1", headers={"traceparent": TRACEPARENT})
        lines = lines_for(log_output, response)

        assert [line["event"] for line in lines] == ["item_fetched", "request"]
        assert {line["trace_id"] for line in lines} == {TRACE_ID}
        (span_id,) = {line["span_id"] for line in lines}
        assert re.fullmatch(r"[0-9a-f]{16}", span_id)
        assert span_id != PARENT_ID

    async def test_outbound_call_continues_the_trace_with_a_new_parent_id(
        self, propagating: httpx.AsyncClient, log_output: io.BytesIO
    ) -> None:
        response = await propagating.get(
            "/outbound", headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE}
        )
        received = response.json()
        (logged,) = [line for line in lines_for(log_output, response) if line["event"] == "request"]

        version, trace_id, parent_id, flags = received["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
        assert re.fullmatch(r"[0-9a-f]{16}", parent_id)
        assert parent_id not in {logged["span_id"], PARENT_ID, "0" * 16}
        assert received["tracestate"] == TRACESTATE

    async def test_each_outbound_call_gets_its_own_parent_id(
        self, propagating: httpx.AsyncClient, log_output: io.BytesIO
    ) -> None:
        response = await propagating.get("/outbound-thrice", headers={"traceparent": TRACEPARENT})
        parents = [received["traceparent"].split("-")[2] for received in response.json()]
        lines = lines_for(log_output, response)

        assert len(set(parents)) == 3
        (span_id,) = {line["span_id"] for line in lines}  # the request's, on every line
        assert span_id not in parents
        assert {received["traceparent"].split("-")[1] for received in response.json()} == {TRACE_ID}

    async def test_each_outbound_call_of_a_new_trace_gets_its_own_parent_id(
        self, propagating: httpx.AsyncClient, log_output: io.BytesIO
    ) -> None:
        response = await propagating.get("/outbound-thrice")
        sent = [NEW_TRACEPARENT.fullmatch(item["traceparent"]) for item in response.json()]
        (logged,) = [line for line in lines_for(log_output, response) if line["event"] == "request"]

        assert all(sent)
        assert {match[1] for match in sent if match} == {logged["trace_id"]}
        parents = {match[2] for match in sent if match}
        assert len(parents) == 3
        assert logged["span_id"] not in parents

    @pytest.mark.parametrize(
        ("flags", "expected"),
        [("00", "00"), ("01", "01"), ("02", "02"), ("03", "03"), ("09", "01"), ("fe", "02")],
    )
    async def test_the_sampled_and_random_flags_are_passed_on(
        self, propagating: httpx.AsyncClient, flags: str, expected: str
    ) -> None:
        traceparent = f"00-{TRACE_ID}-{PARENT_ID}-{flags}"
        response = await propagating.get("/outbound", headers={"traceparent": traceparent})
        assert response.json()["traceparent"].endswith(f"-{expected}")

    @pytest.mark.parametrize(
        ("tracestate", "expected"),
        [
            # Keys of the current grammar that the older vendor grammar rejected.
            ("foo@=1,congo=t61", "foo@=1,congo=t61"),
            ("foo@@bar=1,1abc@x1=2,x/y*z-_=3", "foo@@bar=1,1abc@x1=2,x/y*z-_=3"),
            # A repeated key keeps its leftmost member; empty members are skipped.
            ("congo=t61,congo=other,rojo=00f", "congo=t61,rojo=00f"),
            ("congo=t61 ,\t, rojo=00f", "congo=t61,rojo=00f"),
            ("k= v", "k= v"),
            # One malformed member discards the whole list (W3C test suite, level 2).
            ("congo=t61,Bad=1,rojo=00f", ""),
            ("congo=t61,@vendor=1", ""),
            ("congo=t61,nokey", ""),
            ("congo=t61,=v", ""),
            ("congo=t61,k=", ""),
            ("congo=t61,k=a=b", ""),
            ("congo=t61,k=a\xe9b", ""),
            (f"k={'v' * 257},congo=t61", ""),
            (f"{'z' * 257}=1,congo=t61", ""),
        ],
    )
    async def test_tracestate_is_kept_or_discarded_whole(
        self,
        propagating: httpx.AsyncClient,
        log_output: io.BytesIO,
        caplog: pytest.LogCaptureFixture,
        tracestate: str,
        expected: str,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        response = await propagating.get(
            "/outbound",
            headers=[
                (b"traceparent", TRACEPARENT.encode()),
                (b"tracestate", tracestate.encode("latin-1")),
            ],
        )
        assert response.json().get("tracestate", "") == expected
        # The caller's bytes are not echoed into the logs, by any logger.
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert [r.getMessage() for r in caplog.records if tracestate in r.getMessage()] == []
        for line in lines_for(log_output, response):
            assert tracestate not in json.dumps(line, ensure_ascii=False)

    async def test_32_tracestate_members_are_passed_on_and_33_discard_the_list(
        self, propagating: httpx.AsyncClient
    ) -> None:
        members = [f"k{index}=v{index}" for index in range(33)]
        headers = [
            ("traceparent", TRACEPARENT),
            ("tracestate", ",".join(members[:20])),
            ("tracestate", ",".join(members[20:32])),
        ]
        response = await propagating.get("/outbound", headers=headers)
        assert response.json()["tracestate"] == ",".join(members[:32])
        headers.append(("tracestate", members[32]))
        response = await propagating.get("/outbound", headers=headers)
        assert "tracestate" not in response.json()
        assert response.json()["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]

    async def test_a_later_version_is_read_as_version_00(
        self, propagating: httpx.AsyncClient
    ) -> None:
        traceparent = f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-be-like"
        response = await propagating.get("/outbound", headers={"traceparent": traceparent})
        assert response.json()["traceparent"].startswith(f"00-{TRACE_ID}-")

    @pytest.mark.parametrize(
        "traceparent",
        [
            f"ff-{TRACE_ID}-{PARENT_ID}-01",
            f"00-{TRACE_ID}-{PARENT_ID}-01-extra",
            f"00-{TRACE_ID}0-{PARENT_ID}-01",
            f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",
            f"00-{TRACE_ID}-{PARENT_ID}0-01",
            f"00-{TRACE_ID}-{PARENT_ID[:-1]}-01",
            f"00-{TRACE_ID}-{PARENT_ID}-1",
            f"00-{'0' * 32}-{PARENT_ID}-01",
            f"00-{TRACE_ID}-{'0' * 16}-01",
            f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
            f"00-{TRACE_ID}-{PARENT_ID.upper()}-01",
            f"00-{TRACE_ID}-{PARENT_ID}-0A",
            f"0A-{TRACE_ID}-{PARENT_ID}-01",
            f"00-{TRACE_ID}-{PARENT_ID}-0.",
            f"00_{TRACE_ID}_{PARENT_ID}_01",
            "garbage",
            "",
        ],
    )
    async def test_an_invalid_traceparent_starts_a_new_trace_without_tracestate(
        self, propagating: httpx.AsyncClient, log_output: io.BytesIO, traceparent: str
    ) -> None:
        response = await propagating.get(
            "/outbound", headers={"traceparent": traceparent, "tracestate": TRACESTATE}
        )
        received = response.json()
        match = NEW_TRACEPARENT.fullmatch(received["traceparent"])
        assert match is not None, received["traceparent"]
        assert match[1] != TRACE_ID
        assert "tracestate" not in received
        (logged,) = [line for line in lines_for(log_output, response) if line["event"] == "request"]
        assert logged["trace_id"] == match[1]
        assert logged["span_id"] != match[2]  # the outbound call's own parent id

    async def test_two_traceparent_headers_start_a_new_trace(
        self, propagating: httpx.AsyncClient
    ) -> None:
        other = f"00-{'1' * 32}-{PARENT_ID}-01"
        response = await propagating.get(
            "/outbound", headers=[("traceparent", TRACEPARENT), ("traceparent", other)]
        )
        trace_id = response.json()["traceparent"].split("-")[1]
        assert trace_id not in {TRACE_ID, "1" * 32}

    async def test_each_request_without_traceparent_gets_its_own_trace(
        self, propagating: httpx.AsyncClient
    ) -> None:
        first = (await propagating.get("/outbound")).json()["traceparent"]
        second = (await propagating.get("/outbound")).json()["traceparent"]
        assert NEW_TRACEPARENT.fullmatch(first)
        assert NEW_TRACEPARENT.fullmatch(second)
        assert first.split("-")[1] != second.split("-")[1]

    async def test_excluded_paths_are_not_traced(
        self, propagating: httpx.AsyncClient, log_output: io.BytesIO
    ) -> None:
        response = await propagating.get("/health/live", headers={"traceparent": TRACEPARENT})
        (line,) = lines_for(log_output, response)
        assert line["event"] == "live_checked"
        assert "trace_id" not in line

    async def test_nothing_is_injected_outside_a_trace(self) -> None:
        request = httpx.Request("GET", "http://example.invalid/")
        await inject_trace_headers(request)
        assert "traceparent" not in request.headers


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE_ID}-{PARENT_ID}-01", (TRACE_ID, PARENT_ID, 1)),
        (f" \t00-{TRACE_ID}-{PARENT_ID}-00\t ", (TRACE_ID, PARENT_ID, 0)),
        (f"00-{TRACE_ID}-{PARENT_ID}-0a", (TRACE_ID, PARENT_ID, 2)),
        (f"00-{TRACE_ID}-{PARENT_ID}-0b", (TRACE_ID, PARENT_ID, 3)),
        (f"cc-{TRACE_ID}-{PARENT_ID}-03", (TRACE_ID, PARENT_ID, 3)),
        (f"cc-{TRACE_ID}-{PARENT_ID}-f8", (TRACE_ID, PARENT_ID, 0)),
        (f"cc-{TRACE_ID}-{PARENT_ID}-01-future", (TRACE_ID, PARENT_ID, 1)),
        (f"cc-{TRACE_ID}-{PARENT_ID}-01.future", None),
        (f"00-{TRACE_ID}-{PARENT_ID}-01.", None),
        (f"000-{TRACE_ID}-{PARENT_ID}-01", None),
        (f"0-{TRACE_ID}-{PARENT_ID}-01", None),
        (f".0-{TRACE_ID}-{PARENT_ID}-01", None),
        (f"00-+{TRACE_ID[1:]}-{PARENT_ID}-01", None),
        (f"00-1_{TRACE_ID[2:]}-{PARENT_ID}-01", None),
        (f"00-{TRACE_ID[:10]}-{TRACE_ID[11:]}-{PARENT_ID}-01", None),
        (f"00-{TRACE_ID}-{PARENT_ID}-001", None),
    ],
)
def test_traceparent_parsing_follows_the_w3c_test_suite(
    header: str, expected: tuple[str, str, int] | None
) -> None:
    assert parse_traceparent(header.encode()) == expected


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def provider(spans: InMemorySpanExporter) -> TracerProvider:
    """An SDK provider that keeps spans in memory; not installed globally."""
    sdk = TracerProvider()
    sdk.add_span_processor(SimpleSpanProcessor(spans))
    return sdk


@pytest.fixture(scope="module")
async def recording(
    downstream: str, log_output: io.BytesIO, provider: TracerProvider
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with the SDK: spans are recorded."""
    assert log_output is not None
    async with serve(build_app(downstream, provider)) as client:
        yield client


def finished(spans: InMemorySpanExporter) -> list[ReadableSpan]:
    found = list(spans.get_finished_spans())
    spans.clear()
    return found


class TestWithSdk:
    """With the SDK, each request gets exactly one SERVER span."""

    async def test_one_server_span_per_request_child_of_the_incoming_parent(
        self,
        recording: httpx.AsyncClient,
        spans: InMemorySpanExporter,
        log_output: io.BytesIO,
    ) -> None:
        finished(spans)
        response = await recording.get("/items/7", headers={"traceparent": TRACEPARENT})

        (span,) = finished(spans)
        assert span.kind == SpanKind.SERVER
        assert span.name == "GET /items/{item_id}"
        assert span.parent is not None
        assert span.parent.is_remote
        assert f"{span.parent.span_id:016x}" == PARENT_ID
        assert f"{span.context.trace_id:032x}" == TRACE_ID
        assert dict(span.attributes or {}) == {
            "http.request.method": "GET",
            "url.scheme": "http",
            "url.path": "/items/7",
            "network.protocol.version": "1.1",
            "client.address": "127.0.0.1",
            "http.route": "/items/{item_id}",
            "http.response.status_code": 200,
        }
        assert span.status.status_code == StatusCode.UNSET
        for line in lines_for(log_output, response):
            assert line["trace_id"] == TRACE_ID
            assert line["span_id"] == f"{span.context.span_id:016x}"

    async def test_a_request_without_traceparent_gets_a_root_span(
        self, recording: httpx.AsyncClient, spans: InMemorySpanExporter
    ) -> None:
        finished(spans)
        await recording.get("/items/8")
        (span,) = finished(spans)
        assert span.parent is None

    async def test_outbound_call_gets_a_client_span_that_is_the_downstream_parent(
        self, recording: httpx.AsyncClient, spans: InMemorySpanExporter
    ) -> None:
        finished(spans)
        response = await recording.get(
            "/outbound", headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE}
        )
        received = response.json()

        by_kind = {span.kind: span for span in finished(spans)}
        server, client = by_kind[SpanKind.SERVER], by_kind[SpanKind.CLIENT]
        assert len(by_kind) == 2
        assert client.parent is not None
        assert client.parent.span_id == server.context.span_id
        assert received["traceparent"] == f"00-{TRACE_ID}-{client.context.span_id:016x}-01"
        assert received["tracestate"] == TRACESTATE

    async def test_the_random_flag_reaches_the_downstream_through_the_client_span(
        self, recording: httpx.AsyncClient, spans: InMemorySpanExporter
    ) -> None:
        finished(spans)
        response = await recording.get(
            "/outbound", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-03"}
        )
        by_kind = {span.kind: span for span in finished(spans)}
        client = by_kind[SpanKind.CLIENT]
        assert response.json()["traceparent"] == f"00-{TRACE_ID}-{client.context.span_id:016x}-03"
        assert client.name == "GET"
        attributes = dict(client.attributes or {})
        assert attributes["http.response.status_code"] == 200
        assert str(attributes["url.full"]).endswith("/echo")  # no query string

    async def test_query_span_is_a_client_span_under_the_server_span(
        self,
        recording: httpx.AsyncClient,
        spans: InMemorySpanExporter,
        log_output: io.BytesIO,
    ) -> None:
        finished(spans)
        response = await recording.get("/query")

        by_kind = {span.kind: span for span in finished(spans)}
        server, query = by_kind[SpanKind.SERVER], by_kind[SpanKind.CLIENT]
        assert query.name == "SELECT items"
        assert query.parent is not None
        assert query.parent.span_id == server.context.span_id
        assert dict(query.attributes or {}) == {
            "db.system.name": "postgresql",
            "db.operation.name": "SELECT",
            "db.collection.name": "items",
            "db.query.text": "SELECT * FROM items WHERE id = $1",
        }
        (querying,) = [
            line for line in lines_for(log_output, response) if line["event"] == "querying"
        ]
        assert querying["span_id"] == f"{query.context.span_id:016x}"

    async def test_a_server_error_marks_the_span_as_failed(
        self, recording: httpx.AsyncClient, spans: InMemorySpanExporter
    ) -> None:
        finished(spans)
        response = await recording.get("/boom")
        assert response.status_code == 500
        (span,) = finished(spans)
        assert span.status.status_code == StatusCode.ERROR
        assert dict(span.attributes or {})["error.type"] == "500"

    async def test_excluded_paths_are_not_traced(
        self, recording: httpx.AsyncClient, spans: InMemorySpanExporter
    ) -> None:
        finished(spans)
        await recording.get("/health/live")
        assert finished(spans) == []

    async def test_fastapi_builtin_telemetry_never_adds_a_second_server_span(
        self, downstream: str, provider: TracerProvider, spans: InMemorySpanExporter
    ) -> None:
        # Misconfigured on purpose: FastAPI's telemetry is on, with the same provider.
        async with serve(build_app(downstream, provider, fastapi_telemetry=True)) as client:
            finished(spans)
            await client.get("/items/9", headers={"traceparent": TRACEPARENT})
            server_spans = [span for span in finished(spans) if span.kind == SpanKind.SERVER]
        assert len(server_spans) == 1
        assert f"{server_spans[0].context.trace_id:032x}" == TRACE_ID

    async def test_the_callers_id_goes_on_the_span(
        self, downstream: str, provider: TracerProvider, spans: InMemorySpanExporter
    ) -> None:
        class NamesTheCaller:
            """What an authentication step does once a caller is verified."""

            async def admit(
                self, scope: Scope, response_headers: list[tuple[bytes, bytes]]
            ) -> Rejection | None:
                del scope, response_headers
                user_id_var.set("user-7")
                return None

        app = build_app(downstream, provider)
        app.user_middleware[0].kwargs["admission"] = [NamesTheCaller()]
        async with serve(app) as client:
            finished(spans)
            await client.get("/items/10")
            (span,) = finished(spans)
        assert dict(span.attributes or {})["enduser.id"] == "user-7"


CONFIGURE_SOURCE = """
import json
import sys

from opentelemetry import trace

from PACKAGE.observability.tracing.export import configure_tracing

provider = configure_tracing(service="obs-test", version="9.9.9", environment="test")
if provider is None:
    print(json.dumps(None))
    sys.exit()
with trace.get_tracer("probe").start_as_current_span("probe-span"):
    pass
provider.shutdown()  # flushes the batch to the exporter
print(json.dumps({"global": trace.get_tracer_provider() is provider}))
"""


class Collector(BaseHTTPRequestHandler):
    """A minimal OTLP/HTTP trace receiver."""

    requests: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        """Keep the test output quiet."""


@pytest.fixture
def collector() -> Iterator[str]:
    Collector.requests.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_configure(tmp_path: Path, env: dict[str, str]) -> Any:
    """Run configure_tracing in a fresh process: it installs a global provider."""
    script = tmp_path / "configure.py"
    script.write_text(textwrap.dedent(CONFIGURE_SOURCE).replace("PACKAGE", PACKAGE))
    clean = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**clean, **env},
    )
    return json.loads(result.stdout)


def test_configure_tracing_does_nothing_without_an_endpoint(tmp_path: Path) -> None:
    assert run_configure(tmp_path, {}) is None


def test_configure_tracing_honours_otel_sdk_disabled(tmp_path: Path, collector: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector, "OTEL_SDK_DISABLED": "true"}
    assert run_configure(tmp_path, env) is None
    assert Collector.requests == []


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
)
def test_configure_tracing_exports_over_otlp_http(
    tmp_path: Path, collector: str, variable: str
) -> None:
    endpoint = collector if variable == "OTEL_EXPORTER_OTLP_ENDPOINT" else f"{collector}/v1/traces"
    env = {variable: endpoint, "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=staging"}
    assert run_configure(tmp_path, env) == {"global": True}

    ((path, body),) = Collector.requests
    assert path == "/v1/traces"
    export = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = export.resource_spans
    resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert resource["service.name"] == "obs-test"
    assert resource["service.version"] == "9.9.9"
    assert resource["deployment.environment"] == "test"
    assert resource["deployment.environment.name"] == "staging"  # the environment wins
    (scope_spans,) = resource_spans.scope_spans
    assert [span.name for span in scope_spans.spans] == ["probe-span"]


def test_the_span_key_is_where_opentelemetry_keeps_the_current_span() -> None:
    """`add_trace_ids` and the hook use OpenTelemetry's private key: pinned here."""
    span = NonRecordingSpan(SpanContext(1, 2, is_remote=False))
    assert dict(trace.set_span_in_context(span)) == {tracing._SPAN_KEY: span}
    token = context.attach(context.set_value(tracing._SPAN_KEY, span))
    try:
        assert trace.get_current_span() is span
        assert context.get_current().get(tracing._SPAN_KEY) is span
    finally:
        context.detach(token)


@pytest.mark.parametrize("sdk", [None, TracerProvider()], ids=["propagation", "sdk"])
async def test_the_json_access_line_carries_the_ids_of_the_request_span(
    capsysbinary: pytest.CaptureFixture[bytes], sdk: TracerProvider | None
) -> None:
    """The hook hands the ids to the access line: the same the handler's lines carry."""
    saved = structlog.get_config()
    access_log = configure_logging(
        level="INFO", json=True, extra_processors=[add_trace_ids], **SERVICE
    )
    current: list[tuple[str, str]] = []

    async def app(_scope: Scope, _receive: Any, send: Any) -> None:
        span_context = trace.get_current_span().get_span_context()
        current.append((f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"))
        structlog.get_logger("handler").info("handled")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: Any) -> None:
        pass

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "headers": [(b"traceparent", TRACEPARENT.encode())],
    }
    middleware = ServiceMiddleware(app, hooks=[RequestTracing(sdk)], access_log=access_log)
    try:
        await middleware(scope, receive, send)
        access_log.flush()
    finally:
        structlog.configure(**saved)
    handled, request = (json.loads(line) for line in capsysbinary.readouterr().out.splitlines())
    assert request["event"] == "request"
    ((trace_id, span_id),) = current
    assert trace_id == TRACE_ID
    assert (handled["trace_id"], handled["span_id"]) == (trace_id, span_id)
    assert (request["trace_id"], request["span_id"]) == (trace_id, span_id)
    # Where the processor chain puts them: after the envelope, last.
    assert list(request)[-2:] == ["trace_id", "span_id"]
