"""The servers under test: a scratch database, their environment, their processes.

`database()` creates `bench_<random>` next to `DATABASE_URL`, migrates and seeds it,
and drops it afterwards; `launch()` says how to start one of `APPS`, `start()` and
`stop()` run it. With the redis option `redis()` provides a server, and with auth=jwt
`authenticate()` starts the tests' local identity provider: the service is measured
as it is deployed, every feature on.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

PROJECT = Path(__file__).resolve().parent.parent
PACKAGE = next((PROJECT / "src").glob("*/__main__.py")).parent.name
PREFIX: str = importlib.import_module(f"{PACKAGE}.settings").ENV_PREFIX
HAS_REDIS = (PROJECT / "bench" / "redis_server.py").exists()
HAS_AUTH = (PROJECT / "tests" / "identity_provider.py").exists()
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
HOST = "127.0.0.1"
APPS = {"generated": "this service", "fastapi": "bare FastAPI", "raw": "raw ASGI"}
ROUTES = {"health_live": "/health/live", "items_get": "/items/{id}"}
# Filled for the run by `redis()` and `authenticate()`: what the service gets on top of
# its production settings, and what every client sends. The references ignore both.
EXTRA_ENV: dict[str, str] = {}
HEADERS: dict[str, str] = {}


@dataclass(frozen=True)
class Launch:
    """How to start one server: its command, environment and port."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int


def say(message: str) -> None:
    """Progress on stderr: stdout holds only the table."""
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


async def _admin(dsn: str, statement: str) -> None:
    connection: Any = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _seed(dsn: str, items: int) -> None:
    connection: Any = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO items (name, description, price_cents) SELECT 'item ' || g, "
            "'benchmark item number ' || g, g FROM generate_series(1, $1::int) AS g",
            items,
        )
        await connection.execute("ANALYZE items")
        bounds = tuple(await connection.fetchrow("SELECT min(id), max(id) FROM items"))
    finally:
        await connection.close()
    if bounds != (1, items):
        msg = f"expected item ids 1..{items}, the table holds {bounds}"
        raise RuntimeError(msg)


def _pool_size(env: dict[str, str], workdir: Path) -> tuple[int, int]:
    """The service's pool bounds, read from its settings: the references open the same."""
    script = f"from {PACKAGE}.settings import Settings; db = Settings().db; "
    script += "print([db.pool_min_size, db.pool_max_size])"
    command = [sys.executable, "-c", script]
    completed = subprocess.run(command, env=env, cwd=workdir, capture_output=True, check=True)
    low, high = json.loads(completed.stdout)
    return int(low), int(high)


@contextlib.contextmanager
def database(items: int, workdir: Path) -> Iterator[tuple[str, tuple[int, int]]]:
    """A migrated database with items 1..`items`: its URL, and the service's pool bounds."""
    admin = os.environ.get("DATABASE_URL", DEFAULT_DSN)
    name = f"bench_{secrets.token_hex(4)}"
    dsn = urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
    asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
    try:
        say("migrating and seeding the benchmark database")
        env = service_env(dsn)
        migrate = [sys.executable, "-m", PACKAGE, "migrate"]
        subprocess.run(migrate, env=env, cwd=workdir, check=True, stdout=subprocess.DEVNULL)
        asyncio.run(_seed(dsn, items))
        yield dsn, _pool_size(env, workdir)
    finally:
        asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def redis() -> Iterator[None]:
    """With the redis option, a Redis for the run (`redis_server.py`); without, nothing."""
    if not HAS_REDIS:
        yield
        return
    with importlib.import_module("redis_server").redis_settings(say) as settings:
        EXTRA_ENV.update({f"{PREFIX}REDIS__{key}": value for key, value in settings.items()})
        yield


def authenticate(stack: contextlib.ExitStack[bool | None]) -> None:
    """With auth=jwt: a local identity provider the service trusts, its token on every request."""
    sys.path.insert(0, str(PROJECT))
    provider = stack.enter_context(
        importlib.import_module("tests.identity_provider").IdentityProvider()
    )
    EXTRA_ENV.update(provider.env())
    HEADERS["Authorization"] = f"Bearer {provider.token(lifetime=24 * 3600)}"
    say(f"auth=jwt: every request carries a bearer token ({provider.issuer} signs it)")


def service_env(dsn: str) -> dict[str, str]:
    """The caller's environment minus what would reconfigure the service, plus production."""
    env = {k: v for k, v in os.environ.items() if not k.startswith((PREFIX, "OTEL_", "BENCH_"))}
    settings = {
        "DATABASE_URL": dsn,
        "ENVIRONMENT": "production",
        "HOST": HOST,
        "WORKERS": "1",
        "LOG__FORMAT": "json",
        "LOG__LEVEL": "INFO",
        "SHUTDOWN__DRAIN_SECONDS": "0",  # nothing to drain between runs
    }
    env |= {PREFIX + key: value for key, value in settings.items()} | EXTRA_ENV
    # Log lines reach the file at once, as in the image; the same hashes in every run,
    # so that instruction counts repeat.
    return env | {"PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0"}


def launch(name: str, dsn: str, pool: tuple[int, int], workdir: Path) -> Launch:
    """How to start server `name` (one of `APPS`) on a free port."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    env = service_env(dsn)
    if name == "generated":
        # From a scratch directory, so that a developer's `.env` cannot change its settings.
        env[f"{PREFIX}PORT"] = str(port)
        return Launch(name, [sys.executable, "-m", PACKAGE], env, workdir, port)
    env |= {
        "BENCH_DATABASE_URL": dsn,
        "BENCH_POOL_MIN_SIZE": str(pool[0]),
        "BENCH_POOL_MAX_SIZE": str(pool[1]),
    }
    uvicorn = [sys.executable, "-m", "uvicorn", f"bench.reference_{name}:app", "--host", HOST]
    options = ["--workers", "1", "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    argv = [*uvicorn, "--port", str(port), *options, "--log-level", "warning"]
    return Launch(name, argv, env, PROJECT, port)


def start(server: Launch, log: Path, prefix: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Start `server` (under `prefix`: taskset, valgrind) with its output to `log`."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            [*prefix, *server.argv],
            cwd=server.cwd,
            env=server.env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def wait_ready(process: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    """Return once `/health/live` answers 200; raise with the log's tail if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection = http.client.HTTPConnection(HOST, port, timeout=5)
            connection.request("GET", "/health/live")
            if connection.getresponse().status == 200:
                connection.close()
                return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-4000:]
    msg = f"{log.stem} did not become ready on port {port}; log tail:\n{tail}"
    raise RuntimeError(msg)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the server has not stopped within two minutes (valgrind)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
