"""Run the real service (`python -m {{ cookiecutter.package_name }}`) as a child process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from {{ cookiecutter.package_name }}.settings import ENV_PREFIX
from tests.session_context import SERVICE_ENV

if TYPE_CHECKING:
    from collections.abc import Iterator


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    """A running service process and where to reach it."""

    process: subprocess.Popen[bytes]
    url: str
    stdout_path: Path

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait for the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        """Everything the process wrote to stdout so far."""
        return self.stdout_path.read_text(encoding="utf-8")


def service_env(
    database_url: str, port: int, extra_env: dict[str, str] | None = None, **settings: str
) -> dict[str, str]:
    """The environment of a child service: settings as `PREFIX_NAME` variables."""
    # The test run's broker names (set by tests/messaging.py, when there is a broker) stay.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(ENV_PREFIX) or k.startswith(f"{ENV_PREFIX}BROKER__")
    } | SERVICE_ENV
    env |= {
        f"{ENV_PREFIX}DATABASE_URL": database_url,
        f"{ENV_PREFIX}HOST": "127.0.0.1",
        f"{ENV_PREFIX}PORT": str(port),
        f"{ENV_PREFIX}ENVIRONMENT": "test",
        f"{ENV_PREFIX}MIGRATE_ON_STARTUP": "true",
    }
    env |= {f"{ENV_PREFIX}{name.upper()}": value for name, value in settings.items()}
    return env | (extra_env or {})


@contextmanager
def running_service(
    database_url: str, extra_env: dict[str, str] | None = None, **settings: str
) -> Iterator[Service]:
    """Start the service, wait until it is live, kill it if the test did not stop it."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        stdout_path = Path(tmp) / "stdout.log"
        with stdout_path.open("wb") as stdout:
            process = subprocess.Popen(
                [sys.executable, "-m", "{{ cookiecutter.package_name }}"],
                env=service_env(database_url, port, extra_env, **settings),
                stdout=stdout,
                stderr=subprocess.STDOUT,
                # Its own process group: killing it on failure takes its workers too.
                start_new_session=True,
            )
        service = Service(process, f"http://127.0.0.1:{port}", stdout_path)
        try:
            wait_until_live(service)
            yield service
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_until_live(service: Service, timeout: float = 30) -> None:
    """Poll `/health/live` until it answers; fail with the output if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            msg = f"service exited with {service.process.returncode}:\n{service.output()}"
            raise AssertionError(msg)
        try:
            if httpx.get(f"{service.url}/health/live", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    msg = f"service not live after {timeout}s:\n{service.output()}"
    raise AssertionError(msg)
