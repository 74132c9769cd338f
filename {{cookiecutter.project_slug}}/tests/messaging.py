"""Messaging test fixtures (a pytest plugin: `-p tests.messaging` in pyproject.toml).

A real broker for the run, names of the run's own for every app the tests start (so the
example API's events never land in another run's queues), and unique names per test.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest

from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings
from {{ cookiecutter.package_name }}.settings import ENV_PREFIX
from tests.broker_server import broker_server, delete_topology
from tests.service_process import Service, free_port, service_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

URL_VARIABLE = f"{ENV_PREFIX}BROKER__URL"
PREFIX_VARIABLE = f"{ENV_PREFIX}BROKER__PREFIX"


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    """The broker server of this test run."""
    with broker_server() as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def _run_broker_names(broker_url: str) -> Iterator[None]:
    """Every app and process of the run publishes to this run's own names, deleted after."""
    settings = BrokerSettings(url=broker_url, prefix=f"run-{secrets.token_hex(6)}")
    saved = {name: os.environ.get(name) for name in (URL_VARIABLE, PREFIX_VARIABLE)}
    os.environ[URL_VARIABLE] = broker_url
    os.environ[PREFIX_VARIABLE] = settings.prefix
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    asyncio.run(delete_topology(settings))


@pytest.fixture
async def broker_settings(broker_url: str) -> AsyncIterator[BrokerSettings]:
    """Settings with names no other test (or test run) uses; deleted afterwards."""
    settings = fast_broker_settings(broker_url, prefix=f"test-{secrets.token_hex(6)}")
    yield settings
    await delete_topology(settings)


def fast_broker_settings(url: str, **overrides: Any) -> BrokerSettings:
    """Short polls and backoffs, so that tests wait little."""
    values: dict[str, Any] = {
        "url": url,
        "relay_poll_seconds": 0.05,
        "relay_max_backoff_seconds": 0.5,
        "retry_backoff_seconds": 0.05,
        "retry_max_backoff_seconds": 0.2,
        "max_deliveries": 3,
        "worker_shutdown_seconds": 10,
    } | overrides
    return BrokerSettings(**values)


def broker_env(settings: BrokerSettings) -> dict[str, str]:
    """The same settings as environment variables for a child process."""
    values = settings.model_dump(exclude={"breaker"})
    values["url"] = settings.url.get_secret_value()
    return {f"broker__{name}": str(value) for name, value in values.items()}


async def count(database_url: str, query: str, *args: object) -> int:
    """One number from the database."""
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval(query, *args))
    finally:
        await connection.close()


@contextmanager
def running_worker(database_url: str, broker: BrokerSettings) -> Iterator[Service]:
    """Start `python -m <package> worker`, wait until it consumes, kill it if still running."""
    port = free_port()
    settings = broker_env(broker) | {"broker__worker_port": str(port)}
    env = service_env(database_url, free_port(), None, **settings)
    with tempfile.TemporaryDirectory() as tmp:
        stdout_path = Path(tmp) / "worker.log"
        with stdout_path.open("wb") as stdout:
            process = subprocess.Popen(
                [sys.executable, "-m", "{{ cookiecutter.package_name }}", "worker"],
                env=env,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Service(process, f"http://127.0.0.1:{port}", stdout_path)
        try:
            wait_until_ready(worker)
            yield worker
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_until_ready(worker: Service, timeout: float = 30) -> None:
    """Poll the worker's `/health/ready` until it consumes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            msg = f"worker exited with {worker.process.returncode}:\n{worker.output()}"
            raise AssertionError(msg)
        try:
            if httpx.get(f"{worker.url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    msg = f"worker not ready after {timeout}s:\n{worker.output()}"
    raise AssertionError(msg)


def log_lines(output: str) -> list[dict[str, Any]]:
    """The JSON log lines of a process's output."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def wait_for_count(database_url: str, query: str, expected: int, timeout: float = 30) -> None:  # noqa: ASYNC109
    """Poll `query` until it returns `expected`; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    value = -1
    while time.monotonic() < deadline:
        value = await count(database_url, query)
        if value == expected:
            return
        await asyncio.sleep(0.05)
    msg = f"{query!r} returned {value}, expected {expected}"
    raise AssertionError(msg)
