"""The request body limit: 413 as soon as a body passes it, nothing more read or buffered."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from fastapi import Request  # noqa: TC002 - FastAPI reads handler annotations at run time
from pydantic import BaseModel

from tests.conftest import make_settings, serving
from tests.raw_http import exchange, head, status_of
from tests.service_process import running_service

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx
    from fastapi import FastAPI

LIMIT = 1000


class Note(BaseModel):
    text: str


def add_routes(app: FastAPI, reads: list[int]) -> None:
    async def raw(request: Request) -> dict[str, int]:
        body = await request.body()
        reads.append(len(body))
        return {"bytes": len(body)}

    async def parsed(note: Note) -> dict[str, int]:
        reads.append(len(note.text))
        return {"chars": len(note.text)}

    app.add_api_route("/raw", raw, methods=["POST"])
    app.add_api_route("/parsed", parsed, methods=["POST"])


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["connection"] == "close"
    assert str(LIMIT) in response.json()["detail"]


@pytest.fixture
async def limited(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, list[int]]]:
    settings = make_settings(database_url, limits={"max_body_bytes": LIMIT})
    async with serving(settings) as (app, client):
        reads: list[int] = []
        add_routes(app, reads)
        yield client, reads


async def test_bodies_up_to_the_limit_pass(
    limited: tuple[httpx.AsyncClient, list[int]],
) -> None:
    client, reads = limited
    assert (await client.post("/raw", content=b"x" * LIMIT)).json() == {"bytes": LIMIT}

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * (LIMIT // 10)

    assert (await client.post("/raw", content=chunks())).json() == {"bytes": LIMIT}
    assert reads == [LIMIT, LIMIT]


@pytest.mark.parametrize("path", ["/raw", "/parsed", "/no-such-route"])
async def test_declared_length_over_the_limit_is_413_before_the_app_runs(
    limited: tuple[httpx.AsyncClient, list[int]], path: str
) -> None:
    client, reads = limited
    assert_too_large(await client.post(path, content=b"{" + b" " * LIMIT + b"}"))
    assert reads == []


@pytest.mark.parametrize("path", ["/raw", "/parsed"])
async def test_streamed_body_is_cut_off_once_past_the_limit(
    limited: tuple[httpx.AsyncClient, list[int]], path: str
) -> None:
    client, reads = limited
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < 100 * LIMIT:
            sent += 100
            yield b" " * 100

    assert_too_large(await client.post(path, content=endless()))
    assert reads == []
    # The chunk that passed the limit was the last one read.
    assert sent == LIMIT + 100


async def test_real_server_answers_a_declared_oversize_body_without_reading_it(
    database_url: str,
) -> None:
    with running_service(database_url) as service:
        request = head("POST", "/items", "Content-Length: 10485760", "Content-Type: text/plain")
        # Only the head is sent: the answer cannot wait for the 10 MB.
        response = exchange(service.url, request)
        assert status_of(response) == 413
        assert b"content-type: application/problem+json" in response.lower()
        assert b"connection: close" in response.lower()


MALFORMED_CHUNK_HEADS = [
    b"ffffffffffffffffffffffff\r\n",  # a size that overflows
    b"zz\r\n",  # not hexadecimal
    b"-1\r\n",  # negative
    b"10 ; x\x00\r\n",  # a NUL in a chunk extension
]


def test_malformed_chunked_bodies_are_answered_400_or_closed(database_url: str) -> None:
    with running_service(database_url) as service:
        for chunk_head in MALFORMED_CHUNK_HEADS:
            request = head("POST", "/items", "Transfer-Encoding: chunked", "Content-Type: a/b")
            # Answered or closed: a connection left open fails on the socket's timeout.
            response = exchange(service.url, request + chunk_head + b"abc")
            assert status_of(response) == 400 or response == b"", (chunk_head, response)
        assert service.process.poll() is None
