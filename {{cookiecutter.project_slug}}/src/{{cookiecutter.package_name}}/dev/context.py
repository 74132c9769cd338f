"""What the parts of a dev run share: settings, the `.dev/` folder, ports, the summary.

Each dependency's module (`dev/postgres.py`, ...) offers one `provide(run)` that either
takes the URL already configured or starts an embedded server, registers how to stop
it on `run.stack`, and adds its line to the summary.
"""

from __future__ import annotations

import os
import socket
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path  # noqa: TC003 - a dataclass field's type, resolved at run time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values

from {{ cookiecutter.package_name }}.settings import ENV_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable

    from {{ cookiecutter.package_name }}.dev.supervisor import Child

LOCALHOST = "127.0.0.1"


class DevError(Exception):
    """A dependency cannot be provided; the message tells the developer what to do."""


@dataclass(frozen=True)
class Part:
    """One line of the summary: a part of the run and where it is."""

    name: str
    where: str
    note: str = ""


@dataclass
class DevRun:
    """The state of one `dev` run, filled by each part's `provide`."""

    root: Path
    stack: ExitStack = field(default_factory=ExitStack)
    parts: list[Part] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)
    # Called with the API's URL once it answers; may add summary lines and curl headers.
    when_ready: list[Callable[[str], None]] = field(default_factory=list)
    curl_headers: list[str] = field(default_factory=list)

    def setting(self, name: str) -> str | None:
        """The setting `name` (without the prefix) from the environment or `.env`, if set."""
        variable = ENV_PREFIX + name
        value = os.environ.get(variable) or dotenv_values(".env").get(variable)
        return value or None

    def set(self, name: str, value: str) -> None:
        """Set `name` (without the prefix) for the service processes this run starts."""
        os.environ[ENV_PREFIX + name] = value

    def data_dir(self, name: str) -> Path:
        """`.dev/<name>`, created: where an embedded server keeps its data between runs."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def use_configured(self, name: str, setting: str) -> bool:
        """Whether `setting` is configured; if so, the summary says the run uses it."""
        value = self.setting(setting)
        if value is None:
            return False
        self.parts.append(Part(name, mask(value), f"from {ENV_PREFIX}{setting}"))
        return True


def free_port() -> int:
    """A port free on 127.0.0.1 a moment ago.

    Embedded servers take any free port, as Aspire's resources do: a fixed one would
    clash with a server the machine runs already, or with a second dev run (the tests
    run several at once). The summary says where each one is.
    """
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def mask(url: str) -> str:
    """`url` with its password, if any, replaced by `***`: safe to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
