"""The example API's part: the items routes{% if cookiecutter.broker != "none" %}, and its event handler for the worker{% endif %}."""

from __future__ import annotations

from typing import TYPE_CHECKING
{% if cookiecutter.broker != "none" %}
from {{ cookiecutter.package_name }}.items.events import HANDLERS
{%- endif %}
from {{ cookiecutter.package_name }}.items.repository import ItemRepository
from {{ cookiecutter.package_name }}.items.routes import router

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

    from {{ cookiecutter.package_name }}.service.parts import Parts


def add_items(parts: Parts) -> None:
    """The `/items` routes; writes need `items:write` with auth, POST takes an Idempotency-Key."""
    # No outbox unless the messaging part replaces this one.
    parts.app.state.outbox = None
    parts.add_routes(router.routes, write_scope="items:write")
    parts.idempotent_operations.append(("POST", "/items"))

    async def open_repository(_stack: AsyncExitStack) -> None:
        # Made once the database is open, for the app's life: the routes read it off
        # `app.state` rather than build one per request.
        state = parts.app.state
        state.items = ItemRepository(state.db, state.outbox)

    parts.resources.append(open_repository)
{%- if cookiecutter.broker != "none" %}
    parts.event_handlers.update(HANDLERS)
{%- endif %}
