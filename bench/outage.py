"""Database outage under load: how fast are requests refused, how soon does service return?

    python3 bench/run.py --outage [--connections 32] [--seconds 5]

The wrapper `bench/run.py` bakes the defaults and runs this file with the baked
project's interpreter, `--project <dir>`, and the project on `PYTHONPATH` (template
only: it uses the generated project's test helpers). It starts the real service
(`python -m <package>`) behind a TCP proxy to PostgreSQL, cuts the proxy, and once the
circuit is open drives `GET /items/1` with `wrk` (fixed connections and duration);
then restores the proxy and polls until the first 2xx. Reports the latency of the
refused requests (all must be 503) and the time from the database's return to the
first 2xx, next to the breaker's wait. `DATABASE_URL` names the server (default:
local PostgreSQL, database `test`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

# The baked project's test helpers: `bench/run.py` puts the project on PYTHONPATH.
from tests.postgres import create_database, drop_database
from tests.service_process import running_service
from tests.session_context import CLIENT_HEADERS, SERVICE_ENV
from tests.tcp_proxy import TcpProxy

if TYPE_CHECKING:
    from collections.abc import Coroutine

WAIT_IN_OPEN = 5.0
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


class ProxyThread:
    """The proxy on its own event loop, so that blocking waits here cannot stall it."""

    def __init__(self, database_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.proxy = TcpProxy(database_url)
        self._run(self.proxy.start())

    def _run(self, coroutine: Coroutine[object, object, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def cut(self) -> None:
        self.loop.call_soon_threadsafe(self.proxy.cut)

    def restore(self) -> None:
        self.loop.call_soon_threadsafe(self.proxy.restore)

    def close(self) -> None:
        self._run(self.proxy.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


def wrk(url: str, connections: int, seconds: float) -> dict[str, float]:
    """Run wrk and read requests, non-2xx count, p50 and p99 (ms) from its report."""
    command = [
        shutil.which("wrk") or "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        *(f"-H{name}: {value}" for name, value in CLIENT_HEADERS.items()),
        url,
    ]
    report = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    figures = {"requests": float(re.search(r"(\d+) requests in", report).group(1))}  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
    figures["non_2xx"] = float(non_2xx.group(1)) if non_2xx else 0.0
    for label, key in (("50%", "p50_ms"), ("99%", "p99_ms")):
        found = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", report)
        if found is None:
            msg = f"unexpected wrk report:\n{report}"
            raise RuntimeError(msg)
        figures[key] = float(found.group(1)) * _UNITS[found.group(2)]
    return figures


def wait_for(url: str, predicate: str, timeout: float = 30) -> float:
    """Poll `url` every 10 ms until the answer matches; return when it did."""
    deadline = time.perf_counter() + timeout
    with httpx.Client(timeout=2, headers=CLIENT_HEADERS) as http:
        while time.perf_counter() < deadline:
            try:
                response = http.get(url)
            except httpx.HTTPError:
                response = None
            if response is not None and (
                (predicate == "2xx" and response.status_code < 300)
                or (predicate == "open" and "circuit" in response.text)
            ):
                return time.perf_counter()
            time.sleep(0.01)
    msg = f"{url} never became {predicate}"
    raise TimeoutError(msg)


def measure(server_url: str, connections: int, seconds: float) -> dict[str, float]:
    """Run the scenario and return the figures."""
    database = asyncio.run(create_database(server_url, prefix="outage"))
    proxy = ProxyThread(database)
    settings = {
        "db__breaker__wait_in_open_seconds": str(WAIT_IN_OPEN),
        "db__acquire_timeout": "1",
        "log__level": "WARNING",
    }
    try:
        with running_service(proxy.proxy.url, None, **settings) as service:
            item = {"name": "bench", "price_cents": 1}
            httpx.post(f"{service.url}/items", json=item, headers=CLIENT_HEADERS)
            url = f"{service.url}/items/1"
            healthy = wrk(url, connections, 2)
            proxy.cut()
            wait_for(url, "open")
            refused = wrk(url, connections, seconds)
            restored_at = time.perf_counter()
            proxy.restore()
            recovered_at = wait_for(url, "2xx")
            service.stop()
    finally:
        proxy.close()
        asyncio.run(drop_database(server_url, database))
    return {
        "healthy_rps": healthy["requests"] / 2,
        "healthy_p99_ms": healthy["p99_ms"],
        "refused_requests": refused["requests"],
        "refused_not_503": refused["requests"] - refused["non_2xx"],
        "refused_p50_ms": refused["p50_ms"],
        "refused_p99_ms": refused["p99_ms"],
        "breaker_wait_s": WAIT_IN_OPEN,
        "recovery_s": recovered_at - restored_at,
    }


def authenticate(stack: contextlib.ExitStack[bool | None], project: Path) -> None:
    """With auth=jwt: a local identity provider the service trusts, and its token on the load."""
    if not (project / "tests" / "identity_provider.py").exists():
        return
    # Imported by name: the module exists only in projects generated with auth=jwt.
    provider = stack.enter_context(
        importlib.import_module("tests.identity_provider").IdentityProvider()
    )
    SERVICE_ENV.update(provider.env())
    CLIENT_HEADERS["Authorization"] = f"Bearer {provider.token(scope='items:write')}"


def main() -> None:
    """Parse arguments, run, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="the baked project")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="load while the circuit is open")
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    with contextlib.ExitStack() as stack:
        authenticate(stack, args.project)
        figures = measure(server, args.connections, args.seconds)
    for name, value in figures.items():
        print(f"{name:>18}: {value:.3f}")


if __name__ == "__main__":
    main()
