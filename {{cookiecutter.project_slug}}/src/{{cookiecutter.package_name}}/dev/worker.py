"""The worker of a dev run: the worker with reload (`dev/run_worker.py`), beside the API."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.dev.context import LOCALHOST, Part
from {{ cookiecutter.package_name }}.dev.supervisor import Child

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.dev.context import DevRun


def provide(run: DevRun) -> None:
    """Run the worker as a supervised child with reload; its lines are tagged `worker`."""
    argv = [sys.executable, "-m", "{{ cookiecutter.package_name }}.dev.run_worker"]
    run.children.append(Child("worker", argv, restart=True))
    port = run.setting("BROKER__WORKER_PORT") or "8081"
    run.parts.append(Part("worker", f"http://{LOCALHOST}:{port}/health/ready", "reloads on change"))
