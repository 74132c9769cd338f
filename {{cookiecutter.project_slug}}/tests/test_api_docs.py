"""/docs works on a private network: every asset comes from the service itself."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from fastapi import FastAPI


class References(HTMLParser):
    """Every URL a page makes the browser load or follow (src, href)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:  # noqa: ARG002
        self.urls += [value for name, value in attrs if name in {"src", "href"} and value]


async def test_docs_page_references_no_external_host(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    # No absolute URL anywhere: not in tags, not in the inline script that starts the UI.
    assert re.search(r"(?:https?:)?//[\w.-]+", page) is None, re.findall(r"\S*//\S+", page)
    parser = References()
    parser.feed(page)
    assert len(parser.urls) >= 3, parser.urls  # the script, the stylesheet, the icon
    types = {"js": "javascript", "css": "text/css", "png": "image/png"}
    for url in parser.urls:
        assert url.startswith("/docs/assets/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert types[url.rsplit(".", 1)[-1]] in asset.headers["content-type"], url
        assert len(asset.content) > 100, url
    # The page loads the OpenAPI document of this service, from this service.
    assert "'/openapi.json'" in page or '"/openapi.json"' in page
    spec = await client.get("/openapi.json")
    assert spec.status_code == 200
    assert spec.json()["openapi"].startswith("3.1")


async def test_docs_behind_a_path_prefix(app: FastAPI) -> None:
    """A proxy that strips `/svc` sets root_path; the page's URLs keep the prefix."""
    prefixed = httpx.ASGITransport(app=app, root_path="/svc")
    async with httpx.AsyncClient(transport=prefixed, base_url="http://service.test") as http:
        response = await http.get("/svc/docs")
        assert response.status_code == 200
        assert "/svc/docs/assets/swagger-ui-bundle.js" in response.text
        assert "/svc/openapi.json" in response.text
        assert (await http.get("/svc/docs/assets/swagger-ui.css")).status_code == 200


async def test_oauth2_redirect_page_and_no_redoc(client: httpx.AsyncClient) -> None:
    redirect = await client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200
    assert "swaggerUIRedirectOauth2" in redirect.text
    assert re.search(r"https?://", redirect.text) is None
    # ReDoc would load its script from a CDN: it is not offered rather than half-broken.
    assert (await client.get("/redoc")).status_code == 404
