"""Graceful shutdown of the real process under load: nothing in flight is lost."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import TYPE_CHECKING

import httpx

from tests.service_process import running_service
from tests.session_context import CLIENT_HEADERS

if TYPE_CHECKING:
    from collections.abc import Iterator

DRAIN_SECONDS = 1.0


def slow_body(seconds: float) -> Iterator[bytes]:
    """A request body that takes `seconds` to arrive: the request is in flight meanwhile."""
    yield b'{"name": "slow-upload", '
    time.sleep(seconds)
    yield b'"price_cents": 1}'


def test_sigterm_under_load_completes_every_started_request(database_url: str) -> None:
    with running_service(database_url, shutdown__drain_seconds=str(DRAIN_SECONDS)) as service:
        seeded = httpx.post(
            f"{service.url}/items", json={"name": "seed", "price_cents": 1}, headers=CLIENT_HEADERS
        )
        item = seeded.json()["id"]
        results: list[tuple[float, int | str]] = []
        signalled = threading.Event()
        signal_time = [0.0]

        def keep_going() -> bool:
            # Until halfway through the drain period after the signal.
            return not signalled.is_set() or time.monotonic() < signal_time[0] + DRAIN_SECONDS / 2

        def hammer() -> None:
            with httpx.Client(base_url=service.url, headers=CLIENT_HEADERS, timeout=10) as http:
                while keep_going():
                    started = time.monotonic()
                    try:
                        results.append((started, http.get(f"/items/{item}").status_code))
                    except httpx.TransportError as exc:
                        results.append((started, type(exc).__name__))

        def upload() -> None:
            headers = {"content-type": "application/json"}
            started = time.monotonic()
            with httpx.Client(base_url=service.url, headers=CLIENT_HEADERS, timeout=10) as http:
                response = http.post("/items", content=slow_body(1.5), headers=headers)
            results.append((started, response.status_code))

        workers = [threading.Thread(target=hammer) for _ in range(4)]
        workers.append(threading.Thread(target=upload))
        for worker in workers:
            worker.start()
        time.sleep(0.5)  # load running, upload in flight
        signal_time[0] = time.monotonic()
        os.kill(service.process.pid, signal.SIGTERM)
        signalled.set()
        for worker in workers:
            worker.join(timeout=30)
        exit_code = service.process.wait(timeout=30)

    before = [status for started, status in results if started < signal_time[0]]
    during_drain = [
        status
        for started, status in results
        if signal_time[0] <= started < signal_time[0] + DRAIN_SECONDS / 2
    ]
    assert exit_code == 0
    assert before
    assert all(status in {200, 201} for status in before), before
    assert 201 in before, "the slow upload started before SIGTERM must complete"
    # While draining, the service still serves new requests (load balancers lag behind).
    assert during_drain
    assert all(status == 200 for status in during_drain), during_drain
