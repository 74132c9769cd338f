"""RabbitMQ for a dev run: `BROKER__URL` must be set, as no wheel ships a RabbitMQ server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.dev.context import DevError
from {{ cookiecutter.package_name }}.settings import ENV_PREFIX

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.dev.context import DevRun

SETTING = "BROKER__URL"


def provide(run: DevRun) -> None:
    """Use the configured RabbitMQ; without one, stop with how to get one."""
    if run.use_configured("rabbitmq", SETTING):
        return
    msg = (
        f"RabbitMQ cannot be embedded: set {ENV_PREFIX}{SETTING} (in the environment or .env),"
        " e.g. to amqp://guest:guest@127.0.0.1:5672/ after starting one with"
        " `docker compose up -d broker`"
    )
    raise DevError(msg)
