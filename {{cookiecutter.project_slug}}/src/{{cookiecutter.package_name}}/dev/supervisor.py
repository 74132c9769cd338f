"""Child processes of a dev run: started in their own process group, output tagged.

Each child (the API, the worker) runs under uvicorn's reloader, which restarts it when
the code changes. Its lines go to one console, each prefixed with the child's name. Its
own process group keeps the terminal's Ctrl-C away from it: the dev command stops the
children first, then the servers they use, so nothing logs a lost connection on the way
out; whatever is left of a group after the grace period is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO

_OUTPUT_LOCK = threading.Lock()
_MAX_BACKOFF_SECONDS = 30.0


def say(tag: str, text: str) -> None:
    """Write `text` to the console, every line tagged with `tag`."""
    lines = "".join(f"{tag:<6} | {line}\n" for line in text.splitlines())
    with _OUTPUT_LOCK:
        sys.stdout.write(lines)
        sys.stdout.flush()


class Child:
    """A supervised child process; `restart` brings it back (with backoff) when it exits."""

    def __init__(self, name: str, argv: list[str], *, restart: bool) -> None:
        """`argv` runs the child; nothing starts until `start`."""
        self.name = name
        self.argv = argv
        self.restart = restart
        self.exited = threading.Event()  # set when it exits for good
        self.returncode: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the process and the thread that relays (and supervises) it."""
        self._spawn()
        self._thread = threading.Thread(target=self._relay, name=f"dev-{self.name}", daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )

    def _relay(self) -> None:
        backoff = 1.0
        while True:
            process = self._process
            if process is None:  # pragma: no cover - start() spawns first
                return
            started = time.monotonic()
            self._copy(process.stdout)
            self.returncode = process.wait()
            if self._stopping or not self.restart:
                break
            backoff = 1.0 if time.monotonic() - started > _MAX_BACKOFF_SECONDS else backoff
            say("dev", f"{self.name} exited with {self.returncode}; restarting in {backoff:.0f} s")
            if self._wait_unless_stopping(backoff):
                break
            backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
            self._spawn()
        self.exited.set()

    def _copy(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        for raw in stream:
            say(self.name, raw.decode(errors="replace").rstrip("\n"))

    def _wait_unless_stopping(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._stopping:
                return True
            time.sleep(0.1)
        return self._stopping

    def signal(self) -> None:
        """Ask it to stop (SIGTERM to the reloader, which stops the server it runs)."""
        self._stopping = True
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill whatever is left of its process group."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)


def stop_all(children: list[Child], timeout: float) -> None:
    """Signal every child at once, wait up to `timeout` for them, then kill what is left."""
    for child in children:
        child.signal()
    deadline = time.monotonic() + timeout
    for child in children:
        child.exited.wait(max(0.0, deadline - time.monotonic()))
    for child in children:
        child.kill()
