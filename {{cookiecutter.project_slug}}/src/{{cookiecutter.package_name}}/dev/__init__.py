"""`python -m {{ cookiecutter.package_name }} dev`: the service and everything it needs, on one machine.

Each dependency whose URL is not set is started embedded, on 127.0.0.1 only, its data
kept under `.dev/` between runs (`make dev-reset` deletes it): see the modules beside
this one, one per dependency. The API{% if cookiecutter.broker != "none" %} and the worker run{% else %} runs{% endif %} as supervised child
processes that reload on code changes, their lines tagged on one console. Once the API
answers, one summary says where each part is. Ctrl-C or SIGTERM stops the children, then
the embedded servers, and leaves no process behind.

Everything here runs in development only: its dependencies are dev dependencies,
imported lazily by the module that needs them.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING
{% if cookiecutter.broker != "none" %}
from {{ cookiecutter.package_name }}.dev.broker import provide as provide_broker
{%- endif %}
from {{ cookiecutter.package_name }}.dev.context import LOCALHOST, DevError, DevRun, Part
{%- if cookiecutter.auth == "jwt" %}
from {{ cookiecutter.package_name }}.dev.identity import provide as provide_identity
{%- endif %}
from {{ cookiecutter.package_name }}.dev.postgres import provide as provide_postgres
{%- if cookiecutter.redis == "yes" %}
from {{ cookiecutter.package_name }}.dev.redis import provide as provide_redis
{%- endif %}
from {{ cookiecutter.package_name }}.dev.supervisor import Child, say, stop_all
{%- if cookiecutter.broker != "none" %}
from {{ cookiecutter.package_name }}.dev.worker import provide as provide_worker
{%- endif %}
from {{ cookiecutter.package_name }}.settings import ENV_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

DEV_DIR = Path(".dev")
# Each part of the run, in start order (stopped in reverse, after the service processes).
PROVIDERS: list[Callable[[DevRun], None]] = [
{%- if cookiecutter.broker != "none" %}
    provide_broker,  # first: RabbitMQ cannot be embedded, say so before starting anything
{%- endif %}
    provide_postgres,
{%- if cookiecutter.redis == "yes" %}
    provide_redis,
{%- endif %}
{%- if cookiecutter.broker != "none" %}
    provide_worker,
{%- endif %}
{%- if cookiecutter.auth == "jwt" %}
    provide_identity,
{%- endif %}
]
# The request the summary's curl line makes.
TRY_PATH = "{% if cookiecutter.include_example_api == "yes" %}/items{% else %}/health{% endif %}"
DEFAULTS = {
    "ENVIRONMENT": "development",
    "DEBUG": "true",
    "LOG__FORMAT": "console",
    # Ctrl-C should stop the run at once: no load balancer is waiting for readiness.
    "SHUTDOWN__DRAIN_SECONDS": "0",
}
STOP_SECONDS = 15.0
READY_SECONDS = 60.0
_EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Stop:
    """Set by SIGINT or SIGTERM: the main thread then stops everything in order."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def handle(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        self.event.set()


def main() -> int:
    """Provide the dependencies, run the service processes, stop everything on a signal."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(ENV_PREFIX + name, value)
    # Forced, even over `.env`: a dev run (debug on, dev identity) is never reachable
    # from the network.
    os.environ[ENV_PREFIX + "HOST"] = LOCALHOST
    stop = _Stop()
    for signum in _EXIT_SIGNALS:
        signal.signal(signum, stop.handle)
    run = DevRun(DEV_DIR)
    with run.stack:
        try:
            for provide in PROVIDERS:
                if stop.event.is_set():
                    return 0
                provide(run)
        except DevError as exc:
            say("dev", f"error: {exc}")
            return 2
        return _serve(run, stop)


def _serve(run: DevRun, stop: _Stop) -> int:
    """Run the API and the other children until a signal, or until the API exits."""
    api_argv = [sys.executable, "-m", "{{ cookiecutter.package_name }}.dev.run_api"]
    api = Child("api", api_argv, restart=False)
    children = [api, *run.children]
    run.stack.callback(stop_all, children, STOP_SECONDS)
    for child in children:
        child.start()
    api_url = f"http://{LOCALHOST}:{run.setting('PORT') or {{ cookiecutter.http_port }}}"
    if _wait_until_live(api_url, api, stop):
        for ready in run.when_ready:
            ready(api_url)
        say("dev", summary(run, api_url))
    while not (stop.event.wait(0.2) or api.exited.is_set()):
        pass
    if stop.event.is_set():
        say("dev", "stopping")
        return 0
    return api.returncode or 1


def _wait_until_live(api_url: str, api: Child, stop: _Stop) -> bool:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if stop.event.is_set() or api.exited.is_set():
            return False
        try:
            # S310: our own http://127.0.0.1 URL.
            with urllib.request.urlopen(f"{api_url}/health/live", timeout=1):  # noqa: S310
                return True
        except OSError:
            time.sleep(0.1)
    say("dev", f"the API does not answer after {READY_SECONDS:.0f} s; see its lines above")
    return False


def summary(run: DevRun, api_url: str) -> str:
    """Where each part runs (passwords masked), the docs page and a request to try."""
    parts = [
        Part("api", api_url, "reloads on change"),
        Part("docs", f"{api_url}/docs"),
        *run.parts,
    ]
    width = max(len(part.name) for part in parts)
    lines = ["ready (Ctrl-C stops everything; `make dev-reset` deletes .dev/):"]
    lines += [f"  {p.name:<{width}}  {p.where}" + (f"  ({p.note})" * bool(p.note)) for p in parts]
    headers = "".join(f' -H "{header}"' for header in run.curl_headers)
    lines.append(f"  {'try':<{width}}  curl{headers} {api_url}{TRY_PATH}")
    return "\n".join(lines)
