"""The request body limit, enforced while the body streams in.

A declared `Content-Length` over the limit is refused before the app runs; a body of
unknown length (chunked) is counted as it arrives, and the read that passes the limit
raises `BodyTooLargeError` instead of handing the app more: nothing beyond the limit is
buffered. Both answers are 413 with `Connection: close`, so that the server drops the
rest of the body instead of reading it to find the next request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from starlette.exceptions import HTTPException

from {{ cookiecutter.package_name }}.service.problems import send_problem

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.types import Message, Receive, Send

__all__ = ["BodyTooLargeError", "LimitedReceive", "limit_body", "send_too_large"]

CLOSE: Final = {"Connection": "close"}
_CONTENT_LENGTH: Final = b"content-length"
_TRANSFER_ENCODING: Final = b"transfer-encoding"


def too_large_detail(limit: int) -> str:
    """The problem detail of a 413."""
    return f"the request body is larger than {limit} bytes"


class BodyTooLargeError(HTTPException):
    """The body passed the limit while the app read it (answered 413 as problem+json).

    An `HTTPException` so that FastAPI's body parsing passes it on unchanged (it turns
    other errors into 400) and the problem handlers answer it.
    """

    def __init__(self, limit: int) -> None:
        """Raised by `LimitedReceive` for a body over `limit` bytes."""
        super().__init__(413, too_large_detail(limit), headers=CLOSE)


class LimitedReceive:
    """Wraps an ASGI `receive`, counting body bytes; past `limit` it raises instead."""

    __slots__ = ("_limit", "_receive", "_received")

    def __init__(self, receive: Receive, limit: int) -> None:
        """Let through at most `limit` body bytes from `receive`."""
        self._receive = receive
        self._limit = limit
        self._received = 0

    async def __call__(self) -> Message:
        """The next message, unless its body passes the limit."""
        message = await self._receive()
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._limit:
                raise BodyTooLargeError(self._limit)
        return message


def limit_body(receive: Receive, headers: Mapping[bytes, bytes], limit: int) -> Receive | None:
    """The `receive` to hand the app, or None when the declared length passes `limit`.

    `headers` maps the request's header names to their values. A declared length is
    exact (the server ends the body there), so only a body of unknown length needs
    counting; a request with neither `Content-Length` nor `Transfer-Encoding` has no
    body at all in HTTP/1.1 (RFC 9112, 6.3), so most GETs need nothing.
    """
    declared = headers.get(_CONTENT_LENGTH)
    if declared is None:
        return LimitedReceive(receive, limit) if _TRANSFER_ENCODING in headers else receive
    # The HTTP server refuses malformed values; anything else is counted as it streams.
    if not declared.isdigit():
        return LimitedReceive(receive, limit)
    return receive if int(declared) <= limit else None


async def send_too_large(send: Send, limit: int, path: str) -> None:
    """Answer 413 before the app runs."""
    await send_problem(send, 413, too_large_detail(limit), instance=path, headers=CLOSE)
