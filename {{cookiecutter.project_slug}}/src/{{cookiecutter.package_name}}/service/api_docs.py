"""The interactive API docs (Swagger UI at `/docs`), served by the service itself.

FastAPI's own `/docs` page loads Swagger UI from a public CDN: on a private network, or
behind a Content-Security-Policy that allows only `'self'`, the page stays blank. Here
the page refers only to paths of this service; the assets come from the
`swagger-ui-bundle-v2` package and are served under `/docs/assets`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import HTMLResponse

DOCS_PATH = "/docs"
ASSETS_PATH = f"{DOCS_PATH}/assets"
OAUTH2_REDIRECT_PATH = f"{DOCS_PATH}/oauth2-redirect"


def routes(*, title: str, openapi_url: str) -> list[BaseRoute]:
    """The docs page, its OAuth2 redirect page and its static assets."""

    async def swagger_ui(request: Request) -> HTMLResponse:
        # Behind a proxy that strips a path prefix, every URL needs that prefix back.
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_PATH,
        )

    async def oauth2_redirect(_: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    return [
        Route(DOCS_PATH, swagger_ui, methods=["GET"], include_in_schema=False),
        Route(OAUTH2_REDIRECT_PATH, oauth2_redirect, methods=["GET"], include_in_schema=False),
        Mount(ASSETS_PATH, app=StaticFiles(directory=str(swagger_ui_path)), name="docs-assets"),
    ]
