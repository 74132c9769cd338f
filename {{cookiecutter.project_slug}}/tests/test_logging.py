"""Structured logging and the access log, observed from a real uvicorn process.

The server runs in a subprocess with the same uvicorn options the service
uses (``log_config=uvicorn_log_config(...)``, ``access_log=False``), so what
is checked here is exactly what reaches stdout, from start-up to shutdown.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import structlog

from {{ cookiecutter.package_name }}.observability.logs import context as obs_logging
from {{ cookiecutter.package_name }}.observability.logs.config import configure_logging, uvicorn_log_config
from {{ cookiecutter.package_name }}.observability.logs.redaction import REDACTED, redact_secrets
from {{ cookiecutter.package_name }}.service.middleware import ServiceMiddleware

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from starlette.types import Message, Receive, Scope, Send

PACKAGE = obs_logging.__name__.partition(".")[0]
SERVICE = {"service": "obs-test", "version": "9.9.9", "environment": "test"}
REQUIRED_FIELDS = {"timestamp", "level", "logger", "event", "service", "version", "environment"}
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
SECRETS = ("s3cr3t", "hunter2")
DSN = "postgresql://u:hunter2@h/db"

APP_SOURCE = """
import asyncio
import sys
from collections.abc import AsyncIterator

import structlog
import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import StreamingResponse

from PACKAGE.service.middleware import ServiceMiddleware
from PACKAGE.observability.logs.config import configure_logging, uvicorn_log_config

SERVICE = {"service": "obs-test", "version": "9.9.9", "environment": "test"}
DSN = "postgresql://u:hunter2@h/db"
log = structlog.get_logger("obs_app")


def create_app() -> FastAPI:
    access_log = configure_logging(level="INFO", json=True, **SERVICE)
    app = FastAPI()
    items = APIRouter(prefix="/items")

    @items.get("/{item_id}")
    async def get_item(item_id: int, request: Request) -> dict[str, int]:
        log.info("item_fetched", item_id=item_id, target=DSN, database_url=DSN)
        log.info("headers_seen", headers=dict(request.headers))
        return {"id": item_id}

    app.include_router(items)
    v1 = APIRouter(prefix="/v1")
    v1.include_router(items)
    app.include_router(v1)

    @app.get("/slow")
    async def slow(request: Request) -> dict[str, str]:
        await asyncio.sleep(0.05)
        log.info("slept", expected=request.headers["x-expected"])
        return {}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(f"database unreachable at {DSN}")

    @app.get("/stream-fails")
    async def stream_fails() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"partial"
            raise RuntimeError("failed mid-stream")

        return StreamingResponse(chunks())

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        log.info("live_checked")
        return {"status": "ok"}

    app.add_middleware(
        ServiceMiddleware, exempt_paths=frozenset({"/health/live"}), access_log=access_log
    )
    return app


if __name__ == "__main__":
    uvicorn.run(
        "obs_app:create_app",
        factory=True,
        app_dir=sys.argv[2],
        host="127.0.0.1",
        port=0,
        workers=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_config=uvicorn_log_config(level="INFO", json=True, **SERVICE),
        access_log=False,
    )
"""


class Server:
    """A uvicorn subprocess whose stdout lines are collected as they come."""

    def __init__(self, directory: Path, workers: int) -> None:
        self.lines: list[str] = []
        self.stderr = ""
        self._process = subprocess.Popen(
            [sys.executable, str(directory / "obs_app.py"), str(workers), str(directory)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # its own process group, workers included
        )
        # Both pipes drained by threads: communicate() would race the stdout reader.
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        try:
            running = self.wait_for(lambda line: "Uvicorn running on" in line.get("event", ""))
            self.url = re.findall(r"http://127\.0\.0\.1:\d+", running["event"])[0]
            started = "Application startup complete."
            self.wait_for(lambda line: line.get("event") == started, workers)
        except BaseException:
            # A server that failed to start is not left running, nor are its workers.
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=15)
            raise

    def _read_stdout(self) -> None:
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            self.lines.append(raw.rstrip("\n"))

    def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        self.stderr = self._process.stderr.read()

    def records(self) -> list[dict[str, Any]]:
        """Every line so far, parsed; fails on a line that is not a JSON object."""
        parsed = [json.loads(line) for line in list(self.lines)]
        assert all(isinstance(record, dict) for record in parsed)
        return parsed

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = 15
    ) -> dict[str, Any]:
        """Return the count-th record matching predicate, waiting for it to be written."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            matches = [record for record in self.records() if predicate(record)]
            if len(matches) >= count:
                return matches[count - 1]
            if self._process.poll() is not None:
                break
            time.sleep(0.02)
        pytest.fail(f"no matching log line; stdout: {self.lines}; stderr: {self.stderr}")

    def stop(self) -> None:
        """SIGTERM the server and wait until it and the reader are done."""
        self._process.send_signal(signal.SIGTERM)
        self._process.wait(timeout=15)
        for reader in self._readers:
            reader.join(timeout=5)


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("obs_app")
    source = textwrap.dedent(APP_SOURCE).replace("PACKAGE", PACKAGE)
    (directory / "obs_app.py").write_text(source)
    return directory


@pytest.fixture(scope="module")
def server(app_dir: Path) -> Iterator[Server]:
    running = Server(app_dir, workers=1)
    yield running
    running.stop()


def access_line(server: Server, request_id: str) -> dict[str, Any]:
    return server.wait_for(
        lambda line: line.get("event") == "request" and line.get("request_id") == request_id
    )


def test_lines_are_json_with_the_standard_fields_from_startup_to_shutdown(app_dir: Path) -> None:
    server = Server(app_dir, workers=2)  # uvicorn applies the log config in each worker
    response = httpx.get(f"{server.url}/items/1")
    access_line(server, response.headers["x-request-id"])
    server.stop()

    records = server.records()
    events = [record["event"] for record in records]
    assert any(re.fullmatch(r"Started server process \[\d+\]", event) for event in events)
    for expected in ("Application startup complete.", "Shutting down", "Finished server process"):
        assert sum(event.startswith(expected) for event in events) >= 2, events
    for record in records:
        assert record.keys() >= REQUIRED_FIELDS, record
        assert ISO_UTC.fullmatch(record["timestamp"]), record
        assert {key: record[key] for key in SERVICE} == SERVICE
        assert "positional_args" not in record
        assert "color_message" not in record
    assert "\x1b" not in "".join(server.lines)  # no ANSI colour codes
    assert server.stderr == ""
    assert {record["logger"] for record in records} >= {"uvicorn.error", "obs_app"}


def test_access_line_has_route_template_status_duration_and_request_id(server: Server) -> None:
    response = httpx.get(f"{server.url}/items/42")
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert GENERATED_ID.fullmatch(request_id)

    line = access_line(server, request_id)
    assert line["method"] == "GET"
    assert line["route"] == "/items/{item_id}"
    assert line["path"] == "/items/42"
    assert line["status"] == 200
    assert line["client"] == "127.0.0.1"
    assert line["level"] == "info"
    assert isinstance(line["duration_ms"], float)
    assert line["duration_ms"] > 0
    assert round(line["duration_ms"], 3) == line["duration_ms"]


def test_route_template_includes_the_prefixes_of_outer_routers(server: Server) -> None:
    response = httpx.get(f"{server.url}/v1/items/7")
    assert access_line(server, response.headers["x-request-id"])["route"] == "/v1/items/{item_id}"


def test_unmatched_path_has_no_route(server: Server) -> None:
    response = httpx.get(f"{server.url}/no/such/path")
    line = access_line(server, response.headers["x-request-id"])
    assert line["status"] == 404
    assert line["route"] is None


@pytest.mark.parametrize(
    "request_id",
    [str(uuid.uuid4()), "a" * 128, "Req.1_2:3-4", "0"],
    ids=["uuid", "128-chars", "punctuation", "one-char"],
)
def test_valid_request_id_is_echoed_and_logged(server: Server, request_id: str) -> None:
    response = httpx.get(f"{server.url}/items/1", headers={"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id
    assert access_line(server, request_id)["status"] == 200
    handler_line = server.wait_for(
        lambda line: line.get("event") == "item_fetched" and line.get("request_id") == request_id
    )
    assert handler_line["item_id"] == 1


def test_a_request_id_sent_twice_counts_once_the_first(server: Server) -> None:
    response = httpx.get(
        f"{server.url}/items/1",
        headers=[(b"X-Request-ID", b"first-id"), (b"X-Request-ID", b"second-id")],
    )
    assert response.headers.get_list("x-request-id") == ["first-id"]
    assert access_line(server, "first-id")["status"] == 200


@pytest.mark.parametrize(
    "request_id",
    ["a" * 129, "has space", "slash/es", 'quote"d', "new\\nline", "ünïcode", "{json}", ""],
)
def test_invalid_request_id_is_replaced(server: Server, request_id: str) -> None:
    response = httpx.get(
        f"{server.url}/items/1", headers=[(b"X-Request-ID", request_id.encode("utf-8"))]
    )
    replacement = response.headers["x-request-id"]
    assert GENERATED_ID.fullmatch(replacement)
    assert access_line(server, replacement)["status"] == 200
    assert all(line.get("request_id") != request_id for line in server.records())


async def test_request_ids_do_not_leak_between_concurrent_requests(server: Server) -> None:
    ids = [f"concurrent-{n}" for n in range(20)]
    async with httpx.AsyncClient(base_url=server.url) as client:
        await asyncio.gather(
            *(client.get("/slow", headers={"X-Request-ID": rid, "X-Expected": rid}) for rid in ids)
        )

    for request_id in ids:
        assert access_line(server, request_id)["route"] == "/slow"
    slept = {line["expected"]: line for line in server.records() if line["event"] == "slept"}
    for request_id in ids:
        assert slept[request_id]["request_id"] == request_id


def test_excluded_path_gets_a_request_id_but_no_access_line(server: Server) -> None:
    response = httpx.get(f"{server.url}/health/live")
    request_id = response.headers["x-request-id"]
    assert GENERATED_ID.fullmatch(request_id)
    # The handler's own line still carries the id; no access line follows it.
    server.wait_for(
        lambda line: line.get("event") == "live_checked" and line.get("request_id") == request_id
    )
    marker = httpx.get(f"{server.url}/items/5").headers["x-request-id"]
    access_line(server, marker)  # written after the health check's would have been
    assert not [
        line
        for line in server.records()
        if line.get("event") == "request" and line.get("request_id") == request_id
    ]


def test_secrets_never_reach_the_log(server: Server) -> None:
    secret_headers = {"Authorization": "Bearer s3cr3t", "Cookie": "session=s3cr3t"}
    ok = httpx.get(f"{server.url}/items/3", headers=secret_headers)
    failed = httpx.get(f"{server.url}/boom", headers=secret_headers)
    access_line(server, ok.headers["x-request-id"])
    access_line(server, failed.headers["x-request-id"])

    output = "\n".join(server.lines)
    for secret in SECRETS:
        assert secret not in output
    request_id = ok.headers["x-request-id"]
    seen = server.wait_for(
        lambda line: line.get("event") == "headers_seen" and line.get("request_id") == request_id
    )
    assert seen["headers"]["authorization"] == REDACTED
    assert seen["headers"]["cookie"] == REDACTED
    assert seen["headers"]["host"].startswith("127.0.0.1:")
    fetched = server.wait_for(
        lambda line: line.get("event") == "item_fetched" and line.get("request_id") == request_id
    )
    assert fetched["target"] == "postgresql://u:***@h/db"
    assert fetched["database_url"] == REDACTED


def test_unhandled_exception_is_logged_once_and_answered_with_problem_json(
    server: Server,
) -> None:
    response = httpx.get(f"{server.url}/boom")
    request_id = response.headers["x-request-id"]

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "The server encountered an unexpected error.",
        "instance": "/boom",
    }
    access = access_line(server, request_id)
    assert access["status"] == 500
    assert access["route"] == "/boom"

    lines_for_request = [line for line in server.records() if line.get("request_id") == request_id]
    errors = [line for line in lines_for_request if line["level"] == "error"]
    assert [line["event"] for line in errors] == ["unhandled_exception"]
    (exception,) = errors[0]["exception"]
    assert exception["exc_type"] == "RuntimeError"
    assert exception["exc_value"] == "database unreachable at postgresql://u:***@h/db"
    assert exception["frames"][-1]["name"] == "boom"
    assert "locals" not in exception["frames"][-1]
    # Neither Starlette nor uvicorn logged it a second time.
    assert not [line for line in server.lines if "Exception in ASGI application" in line]
    mentions = [json.loads(line) for line in server.lines if "RuntimeError" in line]
    assert {line["event"] for line in mentions} == {"unhandled_exception"}
    assert [line["request_id"] for line in mentions].count(request_id) == 1


def test_exception_after_the_response_started_is_logged_once_and_the_body_cut(
    server: Server,
) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{server.url}/stream-fails")
    line = server.wait_for(
        lambda line: line.get("event") == "request" and line.get("path") == "/stream-fails"
    )
    assert line["status"] == 200  # what the client was sent before the failure
    errors = [
        record
        for record in server.records()
        if record.get("request_id") == line["request_id"] and record["level"] == "error"
    ]
    assert [error["event"] for error in errors] == ["unhandled_exception"]
    assert errors[0]["exception"][-1]["exc_value"] == "failed mid-stream"
    # uvicorn closes the connection and says so in one line, without a traceback.
    incomplete = server.wait_for(
        lambda record: record["event"] == "ASGI callable returned without completing response."
    )
    assert "exception" not in incomplete


async def test_log_excluded_writes_lines_for_excluded_paths_too() -> None:
    async def app(_scope: Scope, _receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/health/live",
        "headers": [],
        "client": ("10.0.0.1", 1234),
    }
    with structlog.testing.capture_logs() as logs:
        middleware = ServiceMiddleware(
            app, exempt_paths=frozenset({"/health/live"}), log_exempt=True
        )
        await middleware(scope, receive, send)

    assert [(log["event"], log["path"], log["status"]) for log in logs] == [
        ("request", "/health/live", 204)
    ]
    assert sent[0]["headers"][-1][0] == b"x-request-id"


def test_access_log_writes_the_line_structlog_would(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    """The JSON fast path: same fields, order and redaction as the processor chain."""
    access_log = configure_logging(
        level="INFO", json=True, service="s", version="1", environment="test"
    )
    fields: dict[str, Any] = {
        "method": "GET",
        "route": "/items/{item_id}",
        "path": f"/items/{DSN}",
        "status": 200,
        "duration_ms": 1.5,
        "client": "10.0.0.1",
    }
    token = obs_logging.request_id_var.set("req-1")
    try:
        access_log.write(**fields)
        structlog.get_logger(f"{PACKAGE}.access").info("request", **fields)
        access_log.flush()
    finally:
        obs_logging.request_id_var.reset(token)
        structlog.reset_defaults()
    fast, chained = (json.loads(line) for line in capsysbinary.readouterr().out.splitlines())
    assert ISO_UTC.fullmatch(fast.pop("timestamp"))
    chained.pop("timestamp")
    assert list(fast.items()) == list(chained.items())
    assert fast["request_id"] == "req-1"
    assert fast["path"] == "/items/postgresql://u:***@h/db"


def test_access_lines_follow_the_log_level(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    access_log = configure_logging(
        level="WARNING", json=True, service="s", version="1", environment="test"
    )
    try:
        access_log.write(
            method="GET", route="/", path="/", status=200, duration_ms=1.0, client=None
        )
        structlog.get_logger("probe").warning("still_written")
        access_log.flush()
    finally:
        structlog.reset_defaults()
    events = [json.loads(line)["event"] for line in capsysbinary.readouterr().out.splitlines()]
    assert events == ["still_written"]


class TestRedaction:
    """The redaction processor on its own."""

    @pytest.mark.parametrize(
        "key",
        [
            "authorization",
            "Authorization",
            "proxy-authorization",
            "cookie",
            "Set-Cookie",
            "password",
            "db_password",
            "client_secret",
            "access_token",
            "dsn",
            "DATABASE_URL",
            "MY_SERVICE_DATABASE_URL",
            "x-api-key",
        ],
    )
    def test_sensitive_keys_are_redacted(self, key: str) -> None:
        assert redact_secrets(None, "info", {key: "value", "event": "e"}) == {
            key: REDACTED,
            "event": "e",
        }

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (DSN, "postgresql://u:***@h/db"),
            ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
            (
                "first postgresql+asyncpg://a:b@h1/x then amqp://c:d@h2",
                "first postgresql+asyncpg://a:***@h1/x then amqp://c:***@h2",
            ),
            ("postgresql://user@host/db", "postgresql://user@host/db"),
            ("http://host:8080/path?email=a@b.c", "http://host:8080/path?email=a@b.c"),
            ("no url here: a@b", "no url here: a@b"),
        ],
    )
    def test_passwords_in_urls_are_masked(self, text: str, expected: str) -> None:
        assert redact_secrets(None, "info", {"event": text}) == {"event": expected}

    def test_nested_values_are_redacted_without_changing_the_originals(self) -> None:
        headers = {"Authorization": "Bearer s3cr3t", "Accept": "*/*"}
        raw = [(b"cookie", b"a=s3cr3t"), (b"host", b"example")]
        event = {"headers": headers, "raw": raw, "urls": [DSN], "count": 3, "ratio": 0.5}

        redacted = redact_secrets(None, "info", event)

        assert redacted == {
            "headers": {"Authorization": REDACTED, "Accept": "*/*"},
            "raw": [("cookie", REDACTED), ["host", "example"]],
            "urls": ["postgresql://u:***@h/db"],
            "count": 3,
            "ratio": 0.5,
        }
        assert headers["Authorization"] == "Bearer s3cr3t"
        assert raw[0] == (b"cookie", b"a=s3cr3t")


def test_uvicorn_log_config_is_plain_data_for_worker_processes() -> None:
    config = uvicorn_log_config(level="info", json=True, **SERVICE)
    assert pickle.loads(pickle.dumps(config)) == config  # noqa: S301 - our own bytes
    assert config["root"]["level"] == "INFO"
    assert config["loggers"]["uvicorn.access"]["propagate"] is False


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        uvicorn_log_config(level="LOUD", json=True, **SERVICE)


LOOP_DEBUG_SOURCE = """
import asyncio
import logging.config
import sys
import time

import uvloop

from PACKAGE.observability.logs.config import enable_loop_debug, uvicorn_log_config

logging.config.dictConfig(
    uvicorn_log_config(
        level="INFO", json=sys.argv[1] == "json", service="s", version="1", environment="dev"
    )
)


async def main() -> None:
    enable_loop_debug(asyncio.get_running_loop(), slow_callback_ms=20)
    await asyncio.sleep(0)  # the step that enabled debug mode is not timed
    time.sleep(0.1)  # blocks the loop: exactly what debug mode is for
    await asyncio.sleep(0)


if sys.argv[2] == "uvloop":
    uvloop.run(main())
else:
    asyncio.run(main())
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_loop_debug_logs_blocking_callbacks_as_json(tmp_path: Path, loop: str) -> None:
    script = tmp_path / "loop_debug.py"
    script.write_text(textwrap.dedent(LOOP_DEBUG_SOURCE).replace("PACKAGE", PACKAGE))
    result = subprocess.run(
        [sys.executable, str(script), "json", loop],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    records = [json.loads(line) for line in result.stdout.splitlines()]
    slow = [record for record in records if record["logger"] == "asyncio"]
    assert slow, result
    assert slow[0]["level"] == "warning"
    assert "took" in slow[0]["event"]
    assert slow[0].keys() >= REQUIRED_FIELDS


CONSOLE_SOURCE = """
import structlog

from PACKAGE.observability.logs.config import configure_logging

configure_logging(level="DEBUG", json=False, service="s", version="1", environment="development")
log = structlog.get_logger("console_test")
log.debug("visible", password="s3cr3t", url="postgresql://u:hunter2@h/db")
try:
    raise ValueError("postgresql://u:hunter2@h/db")
except ValueError:
    log.exception("failed")
"""


def test_console_format_is_readable_and_redacted(tmp_path: Path) -> None:
    script = tmp_path / "console.py"
    script.write_text(textwrap.dedent(CONSOLE_SOURCE).replace("PACKAGE", PACKAGE))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=30
    )
    assert "visible" in result.stdout
    assert "[console_test]" in result.stdout
    assert "ValueError" in result.stdout
    for secret in SECRETS:
        assert secret not in result.stdout
    assert result.stderr == ""
