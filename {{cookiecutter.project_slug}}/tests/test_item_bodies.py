"""Large and rejected bodies against the real server: cut off early, memory given back."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path

from tests.raw_http import connect, exchange, head, read_response, status_of
from tests.service_process import running_service
from tests.session_context import CLIENT_HEADERS

MIB = 1 << 20
LIMIT = MIB  # the default


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    msg = "no VmRSS"
    raise AssertionError(msg)


def post_items(*headers: str) -> bytes:
    """The head of a `POST /items` with the test client's headers (its token, if any).

    Authentication answers before a chunked body is read: without a token these bodies
    would get a 401, never reaching the limit under test.
    """
    client = (f"{name}: {value}" for name, value in CLIENT_HEADERS.items())
    return head("POST", "/items", *client, *headers)


def post_chunked(url: str, body: bytes, chunk: int = 64 * 1024) -> int | None:
    """Stream `body` chunked, stopping when the server answers or closes; the status."""
    with closing(connect(url)) as sock:
        sock.sendall(post_items("Transfer-Encoding: chunked", "Content-Type: a/b"))
        try:
            for start in range(0, len(body), chunk):
                part = body[start : start + chunk]
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        return status_of(read_response(sock))


def test_streamed_body_past_the_limit_is_413_before_the_rest_is_sent(database_url: str) -> None:
    with running_service(database_url) as service, closing(connect(service.url)) as sock:
        sock.sendall(post_items("Transfer-Encoding: chunked", "Content-Type: a/b"))
        chunk = b"x" * (64 * 1024)
        for _ in range(LIMIT // len(chunk) + 1):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        # 64 KiB past the limit, the body not finished: the answer comes now.
        response = read_response(sock)
        assert status_of(response) == 413
        assert b"application/problem+json" in response


def test_rss_returns_to_baseline_after_a_burst_of_rejected_bodies(database_url: str) -> None:
    with running_service(database_url, log__level="WARNING") as service:
        pid = service.process.pid
        baseline = rss_mib(pid)
        huge = b"x" * (10 * MIB)
        near_limit = b"x" * (LIMIT - 1)  # read in full, rejected as invalid JSON (422)
        statuses: set[int | None] = set()
        for _ in range(12):
            request = post_items(f"Content-Length: {len(huge)}", "Content-Type: a/b")
            statuses.add(status_of(exchange(service.url, request + huge)))
            statuses.add(post_chunked(service.url, huge))
            for _ in range(8):
                statuses.add(post_chunked(service.url, near_limit))
        assert statuses <= {413, 422, None}
        assert 422 in statuses
        assert 413 in statuses
        deadline = time.monotonic() + 5
        while rss_mib(pid) > baseline + 50 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rss_mib(pid) <= baseline + 50, (baseline, rss_mib(pid))
