"""Run `python -m {{ cookiecutter.package_name }} dev` as a developer does, and clean up after it.

Each run gets its own working directory (so its own `.dev/`) and a marker in its
environment, which every process it starts inherits: the fixture finds and kills any
of them that a failing test left behind, and the tests use it to prove none remains.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from {{ cookiecutter.package_name }}.settings import ENV_PREFIX
from tests.service_process import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

MARKER = "DEV_TEST_RUN"
# Settings a dev run is given rather than provides itself: this test run's broker names
{%- if cookiecutter.broker == "rabbitmq" %}
# and its RabbitMQ (no wheel embeds one; tests/messaging.py sets both).
GIVEN = ("BROKER__PREFIX", "BROKER__URL")
{%- else %}
# (tests/messaging.py sets them when there is a broker).
GIVEN = ("BROKER__PREFIX",)
{%- endif %}
SUMMARY_LINE = re.compile(r"^dev    \|   (\S+)\s+(.*)$")
START_SECONDS = 180.0  # the first run creates the database cluster


@dataclass
class DevProcess:
    """One `dev` run: its process, output and, once it is up, its summary."""

    workdir: Path
    marker: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    summary: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start `python -m <package> dev` in its own process group, as a terminal does."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "{{ cookiecutter.package_name }}", "dev"],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        """Everything the runs in this directory printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_until_ready(self) -> dict[str, str]:
        """Wait for this start's summary; return its parts (name -> first word)."""
        assert self.process is not None
        offset = len(self.output())
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            text = self.output()[offset:]
            if "dev    | ready (" in text and "dev    |   try " in text:
                block = text[text.index("dev    | ready (") :]
                self.summary = {}
                for line in block.splitlines()[1:]:
                    found = SUMMARY_LINE.match(line)
                    if found is None:
                        break
                    self.summary.setdefault(found[1], found[2])
                return self.summary
            if self.process.poll() is not None:
                pytest.fail(f"dev exited with {self.process.returncode}:\n{self.output()}")
            time.sleep(0.1)
        pytest.fail(f"no summary after {START_SECONDS} s:\n{self.output()}")

    def try_request(self) -> tuple[str, dict[str, str]]:
        """The summary's curl line, as the URL and headers it sends."""
        words = shlex.split(self.summary["try"])
        assert words[0] == "curl"
        headers = {}
        for flag, value in itertools.pairwise(words):
            if flag == "-H":
                name, _, content = value.partition(":")
                headers[name.strip()] = content.strip()
        return words[-1], headers

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C: SIGINT to the whole process group, then wait for the exit code."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=timeout)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM to the dev command alone, as a process manager sends it; wait for the exit."""
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(timeout=timeout)


def processes_of(marker: str, workdir: Path) -> list[int]:
    """Processes started by a run: the marker in their environment or the dir in their command.

    The command line catches the embedded PostgreSQL, which its start-up tool may have
    started with a fresh environment.
    """
    found = []
    needle = f"{MARKER}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        if needle in environ.split(b"\0") or str(workdir).encode() in cmdline:
            found.append(int(entry.name))
    return found


def refuses(port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def summary_ports(summary: dict[str, str]) -> list[int]:
    """Every 127.0.0.1 port the summary names, but those of servers the run was given."""
    texts = [text for text in summary.values() if f"(from {ENV_PREFIX}" not in text]
    found = {port for text in texts for port in re.findall(r"127\.0\.0\.1:(\d+)", text)}
    return sorted(int(port) for port in found)


def assert_nothing_left(run: DevProcess, ports: list[int]) -> None:
    """No process of the run remains and none of its ports is listening."""
    deadline = time.monotonic() + 10
    while processes_of(run.marker, run.workdir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_of(run.marker, run.workdir) == [], run.output()
    assert [port for port in ports if not refuses(port)] == []


def health_checks_pass(url: str) -> None:
    """`/health` reports pass, and so does every check in it."""
    response = httpx.get(f"{url}/health", timeout=10)
    report = response.json()
    assert response.status_code == 200, report
    assert report["status"] == "pass", report
    failing = {
        name: item
        for name, items in report["checks"].items()
        for item in items
        if item["status"] != "pass"
    }
    assert failing == {}


@contextmanager
def dev_process() -> Iterator[DevProcess]:
    """A dev run in a fresh directory; whatever it leaves behind is killed and deleted."""
    # Directly under the temp dir and world-traversable: run as root, the embedded
    # PostgreSQL drops to its own user, which must reach `.dev/postgres`.
    workdir = Path(tempfile.mkdtemp(prefix="devrun-"))
    workdir.chmod(0o755)
    marker = secrets.token_hex(8)
    port = free_port()
    given = tuple(ENV_PREFIX + name for name in GIVEN)
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX) or k in given}
    if env.get("PYTHONPATH"):  # the run's working directory is elsewhere
        paths = env["PYTHONPATH"].split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(str(Path(path).resolve()) for path in paths)
    env |= {
        MARKER: marker,
        f"{ENV_PREFIX}PORT": str(port),
{%- if cookiecutter.broker != "none" %}
        f"{ENV_PREFIX}BROKER__WORKER_PORT": str(free_port()),
{%- endif %}
    }
    run = DevProcess(workdir, marker, port, env, workdir / "dev.log")
    try:
        yield run
    finally:
        for pid in processes_of(marker, workdir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if run.process is not None and run.process.poll() is None:
            run.process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
