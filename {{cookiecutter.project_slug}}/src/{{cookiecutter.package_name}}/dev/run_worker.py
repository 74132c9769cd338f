"""The worker child of a dev run (`python -m` this): `python -m <package> worker`, reloading."""

from __future__ import annotations

from {{ cookiecutter.package_name }}.runtime.server import serve
from {{ cookiecutter.package_name }}.settings import load_settings

if __name__ == "__main__":
    settings = load_settings()
    serve(
        settings,
        target="{{ cookiecutter.package_name }}.app:worker_from_env",
        port=settings.broker.worker_port,
        workers=1,
        graceful_seconds=settings.broker.worker_shutdown_seconds + 5,
        reload=True,
    )
