"""Stopping a service with several workers under load: no connection is accepted, then reset.

Every connection either gets its answer or is refused (or, in the last moments, never
completes its handshake, which a client sees as a connect timeout and retries elsewhere).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest

from tests.service_process import running_service

DRAIN_SECONDS = 1.0
# Well within the second and a half the server waits for a connection's first request.
LATE_REQUEST_SECONDS = 0.4
REQUEST = b"GET /health/live HTTP/1.1\r\nHost: service\r\nConnection: close\r\n\r\n"


def one_connection(address: tuple[str, int]) -> str:
    """Open a new connection, send one request; say how it ended."""
    try:
        sock = socket.create_connection(address, timeout=5)
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "connect timeout"
    with sock:
        try:
            sock.sendall(REQUEST)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            return "accepted then reset"
        except TimeoutError:
            return "accepted then stalled"
    if received.startswith(b"HTTP/1.1 200"):
        return "answered"
    # Closed without an answer: accepted, then dropped.
    return "accepted then reset" if not received else "other answer"


@pytest.mark.parametrize("workers", [2, 1])
def test_stopping_under_load_resets_no_accepted_connection(database_url: str, workers: int) -> None:
    with running_service(
        database_url, workers=str(workers), shutdown__drain_seconds=str(DRAIN_SECONDS)
    ) as service:
        parts = urlsplit(service.url)
        address = (parts.hostname or "127.0.0.1", parts.port or 80)
        outcomes: Counter[str] = Counter()
        after_signal: Counter[str] = Counter()
        signalled = threading.Event()
        stopped = threading.Event()
        lock = threading.Lock()

        def load() -> None:
            while not stopped.is_set():
                outcome = one_connection(address)
                with lock:
                    (after_signal if signalled.is_set() else outcomes)[outcome] += 1

        threads = [threading.Thread(target=load) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        os.kill(service.process.pid, signal.SIGTERM)
        signalled.set()
        exit_code = service.process.wait(timeout=30)
        time.sleep(0.3)  # connections keep coming after the exit: refused
        stopped.set()
        for thread in threads:
            thread.join(timeout=30)

    print(f"before the signal: {dict(outcomes)}; after: {dict(after_signal)}")  # noqa: T201 - the figures
    assert exit_code == 0
    assert set(outcomes) == {"answered"}, outcomes
    assert after_signal["answered"] > 0, after_signal  # still serving while draining
    assert after_signal["refused"] > 0, after_signal  # kept going past the exit
    assert after_signal["accepted then reset"] == 0, after_signal
    assert set(after_signal) <= {"answered", "refused", "connect timeout"}, after_signal


def test_a_request_sent_late_on_a_connection_accepted_before_the_signal_is_answered(
    database_url: str,
) -> None:
    # A busy client connects, then takes a moment to send its request: the server was
    # told to stop meanwhile, and must not close the connection it accepted unanswered.
    with running_service(database_url, shutdown__drain_seconds="0") as service:
        parts = urlsplit(service.url)
        address = (parts.hostname or "127.0.0.1", parts.port or 80)
        with socket.create_connection(address, timeout=10) as sock:
            time.sleep(0.2)  # accepted by the server by now
            os.kill(service.process.pid, signal.SIGTERM)
            time.sleep(LATE_REQUEST_SECONDS)
            sock.sendall(REQUEST)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        exit_code = service.process.wait(timeout=30)

    assert received.startswith(b"HTTP/1.1 200"), received
    assert exit_code == 0
