"""The example API's part: the items routes{% if cookiecutter.broker != "none" %}, and its event handler for the worker{% endif %}."""

from __future__ import annotations

from typing import TYPE_CHECKING
{% if cookiecutter.broker != "none" %}
from {{ cookiecutter.package_name }}.items.events import HANDLERS
{%- endif %}
from {{ cookiecutter.package_name }}.items.routes import router

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.service.parts import Parts


def add_items(parts: Parts) -> None:
    """The `/items` routes; writes need `items:write` with auth, POST takes an Idempotency-Key."""
    # Read on every item request: preset, a missing attribute of `app.state` costs a
    # raised and caught AttributeError each time. The messaging part replaces it.
    parts.app.state.outbox = None
    parts.add_routes(router.routes, write_scope="items:write")
    parts.idempotent_operations.append(("POST", "/items"))
{%- if cookiecutter.broker != "none" %}
    parts.event_handlers.update(HANDLERS)
{%- endif %}
