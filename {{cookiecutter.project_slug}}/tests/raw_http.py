"""HTTP/1.1 over a raw socket: for bodies and framing no well-behaved client would send."""

from __future__ import annotations

import socket
from contextlib import closing, suppress
from urllib.parse import urlsplit


def connect(url: str, timeout: float = 5.0) -> socket.socket:
    """A connection to the service at `url` with `timeout` on every operation."""
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout)


def head(method: str, path: str, *headers: str) -> bytes:
    """A request line and headers, ending in the blank line; the server closes after it."""
    lines = [f"{method} {path} HTTP/1.1", "Host: service.test", "Connection: close", *headers]
    lines += ["", ""]
    return "\r\n".join(lines).encode("ascii")


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes or resets the connection.

    A server that leaves the connection open past the socket's timeout fails the test
    (`TimeoutError`): hanging is never an answer.
    """
    received = b""
    with suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def status_of(response: bytes) -> int | None:
    """The status code of a raw response, or None when nothing came back."""
    if not response.startswith(b"HTTP/1.1 "):
        return None
    return int(response[9:12])


def exchange(url: str, request: bytes, timeout: float = 5.0) -> bytes:
    """Send `request` as is on a new connection and return what comes back.

    A server that answers before the whole request is sent may reset the connection
    while it is still being written: what it answered is still read.
    """
    with closing(connect(url, timeout)) as sock:
        with suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        return read_response(sock)
