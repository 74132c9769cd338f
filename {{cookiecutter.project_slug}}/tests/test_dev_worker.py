"""`make dev` with a broker: the worker runs beside the API and handles its events."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.dev_process import DevProcess, assert_nothing_left, summary_ports
from tests.messaging import wait_for_count


def test_dev_worker_handles_the_apis_events(dev_run: DevProcess) -> None:
    dev_run.start()
    summary = dev_run.wait_until_ready()
    # The summary is printed once the API answers; the worker may still be starting.
    assert worker_status(summary["worker"].split()[0], timeout=30) == 200
    _, headers = dev_run.try_request()  # with the printed token when auth is on
    created = httpx.post(
        f"{dev_run.url}/items", json={"name": "from dev", "price_cents": 1}, headers=headers
    )
    assert created.status_code == 201, created.text
    database = summary["postgresql"].split()[0]
    item_id = int(created.json()["id"])
    query = f"SELECT count(*) FROM item_audit WHERE item_id = {item_id}"  # noqa: S608 - an int
    asyncio.run(wait_for_count(database, query, 1, timeout=20))
    assert "worker | " in dev_run.output()
    assert dev_run.interrupt() == 0, dev_run.output()
    assert_nothing_left(dev_run, [dev_run.port, *summary_ports(summary)])


def worker_status(url: str, timeout: float) -> int:
    """The worker's readiness status, polled until it is 200 or `timeout` passes."""
    deadline = time.monotonic() + timeout
    status = 0
    while time.monotonic() < deadline:
        try:
            status = httpx.get(url, timeout=5).status_code
        except httpx.TransportError:
            status = 0  # not listening yet
        if status == 200:
            break
        time.sleep(0.1)
    return status
