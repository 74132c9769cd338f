"""Command line: `python -m {{ cookiecutter.package_name }} [serve|migrate|dev{% if cookiecutter.broker != "none" %}|worker{% endif %}]`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from {{ cookiecutter.package_name }}.settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    """Run a command; a bad setting exits 2 with the variable named, before any port is bound."""
    parser = argparse.ArgumentParser(prog="python -m {{ cookiecutter.package_name }}")
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "migrate", "dev"{% if cookiecutter.broker != "none" %}, "worker"{% endif %}],
        help="serve (default): run the HTTP service; migrate: apply SQL migrations and exit; "
        "dev: the service with reload, and embedded dependencies where no URL is set"
{%- if cookiecutter.broker != "none" %}
        "; worker: consume events from the broker",
{%- else %},
{%- endif %}
    )
    command = parser.parse_args(argv).command
    if command == "dev":
        from {{ cookiecutter.package_name }}.dev import main as dev  # noqa: PLC0415 - dev-only dependencies

        return dev()
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)  # noqa: T201 - logging is not set up yet
        return 2
    if command == "migrate":
        from {{ cookiecutter.package_name }}.app import migrate  # noqa: PLC0415

        asyncio.run(migrate(settings))
        return 0
{%- if cookiecutter.broker != "none" %}
    if command == "worker":
        from {{ cookiecutter.package_name }}.runtime.server import serve  # noqa: PLC0415

        serve(
            settings,
            target="{{ cookiecutter.package_name }}.app:worker_from_env",
            port=settings.broker.worker_port,
            workers=1,
            # The lifespan's exit waits for in-flight handlers: give it that long and more.
            graceful_seconds=settings.broker.worker_shutdown_seconds + 5,
        )
        return 0
{%- endif %}
    from {{ cookiecutter.package_name }}.runtime.server import serve  # noqa: PLC0415

    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
