"""Idempotency keys for unsafe requests (draft-ietf-httpapi-idempotency-key-header).

A route opts in with `idempotent_routes.make_idempotent` (see `redis.part`): its ASGI app is
wrapped, so routes that do not opt in pay nothing. For a request that carries an
``Idempotency-Key``, scoped to the caller:

- the first claims the key in Redis (one script: read, or claim if absent), runs, and
  its status, the headers that matter and the body are stored for `ttl_seconds`; a
  5xx answer (or an exception) releases the key instead, so that a retry can succeed;
- a retry with the same body gets the stored answer, marked ``Idempotent-Replayed``;
- a retry while the first is still running gets 409, with a different body 422.

Without Redis, a request that carries a key gets 503 (its retry is safe), rather
than running unprotected; requests without a key are not affected.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import re
from typing import TYPE_CHECKING, Any, Final

import orjson
import structlog

from {{ cookiecutter.package_name }}.redis.rate_limit import caller_key
from {{ cookiecutter.package_name }}.redis.scripts import Script
from {{ cookiecutter.package_name }}.service.problems import retry_after, send_problem

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from {{ cookiecutter.package_name }}.redis.settings import IdempotencySettings
    from {{ cookiecutter.package_name }}.redis.store import RedisStore

log = structlog.get_logger(__name__)

HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
_HEADER: Final = HEADER.lower().encode("ascii")
MAX_KEY_LENGTH: Final = 255
# Printable ASCII without the quote and the backslash (a structured-field string's body),
# quoted or bare: one match, whichever it is.
_KEY_BODY: Final = rb"[\x20\x21\x23-\x5b\x5d-\x7e]{1,%d}" % MAX_KEY_LENGTH
_KEY: Final = re.compile(rb'"(%s)"|(%s)' % (_KEY_BODY, _KEY_BODY))
# Stored with the answer; the rest (request id, rate limits) belongs to each request.
_KEPT_HEADERS: Final = frozenset(
    {
        b"content-type",
        b"content-language",
        b"location",
        b"content-location",
        b"etag",
        b"last-modified",
        b"link",
    }
)

# KEYS[1]: the record; ARGV: the claim, its lifetime (ms). Returns the record found, or
# nil after claiming the key: one round trip, no window between the read and the claim.
CLAIM_SCRIPT: Final = Script("""
local found = redis.call('GET', KEYS[1])
if found then return found end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
""")
# KEYS[1]: the record; ARGV: the claim, final record (or '' to release), lifetime (ms).
# Only the claim's owner may finish it (its claim, with its random token, is still
# there): after an expiry, someone else may hold it.
FINISH_SCRIPT: Final = Script("""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
""")


def parse_key(value: bytes) -> bytes | None:
    """The key from the header: a structured-field string (``"..."``), 1-255 characters.

    A bare token (``Idempotency-Key: 4f8a...``) is accepted too: many clients send one.
    """
    found = _KEY.fullmatch(value)
    return None if found is None else found[1] or found[2]


def store_key(prefix: str, caller: str, key: bytes) -> bytes:
    """Where a caller's key is stored: the key as sent, after the caller and its length.

    The length keeps callers apart (one may contain ``:``); the key is not hashed (~6k
    instructions a request): it is printable ASCII of 255 characters at most.
    """
    return f"{prefix}idem:{len(caller)}:{caller}:".encode() + key


class Idempotent:
    """Wraps one route's ASGI app; the store is read from ``app.state.redis``."""

    def __init__(
        self, app: ASGIApp, settings: IdempotencySettings, *, api_key_header: str | None
    ) -> None:
        """Wrap `app` (a route's app: path parameters are already resolved)."""
        self.app = app
        # Milliseconds, as sent to Redis.
        self._ttl_ms = b"%d" % (settings.ttl_seconds * 1000)
        self._in_flight_ms = b"%d" % (settings.in_flight_seconds * 1000)
        self._max_body = settings.max_body_bytes
        self._api_key_header = api_key_header.lower().encode() if api_key_header else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the route once per key; answer retries from the stored record."""
        raw = next((value for name, value in scope["headers"] if name == _HEADER), None)
        if raw is None:
            await self.app(scope, receive, send)
            return
        key = parse_key(raw)
        if key is None:
            await _problem(send, scope, 400, f"{HEADER} must be a string of 1-255 characters")
            return
        body = await _read_body(receive, self._max_body)
        if body is None:
            await _problem(send, scope, 413, f"the body exceeds {self._max_body} bytes")
            return
        store: RedisStore | None = scope["app"].state.redis
        # BLAKE2b (built in): ~4k instructions less than SHA-256 through OpenSSL.
        request = b"%s %s?%s\n%s" % (
            scope["method"].encode(),
            scope["path"].encode(),
            scope["query_string"],
            body,
        )
        fingerprint = hashlib.blake2b(request, digest_size=16).hexdigest().encode()
        caller = caller_key(scope, self._api_key_header)
        token = binascii.hexlify(os.urandom(16))  # `secrets.token_hex`, as bytes
        # JSON written out, here and for the record (~4k instructions less than orjson with
        # a dict, both): the hex needs no escaping.
        claim = b'{"token":"%s","fingerprint":"%s","state":"running"}' % (token, fingerprint)
        if store is None:  # the app wraps routes only when Redis is configured
            await self.app(scope, receive, send)
            return
        try:
            record_key = store_key(store.key_prefix, caller, key)
            found = await store.run(CLAIM_SCRIPT, (record_key,), (claim, self._in_flight_ms))
        except Exception as exc:  # noqa: BLE001 - an open circuit or any redis-py error
            log.warning("idempotency_unavailable", error=f"{type(exc).__name__}: {exc}")
            await _problem(send, scope, 503, "idempotency keys are unavailable", retry=1)
            return
        if found is not None:
            await self._answer_retry(found, fingerprint, scope, send)
            return
        await self._run_first(scope, send, body, receive, store, record_key, claim, fingerprint)

    async def _answer_retry(
        self, found: bytes, fingerprint: bytes, scope: Scope, send: Send
    ) -> None:
        # A claim is JSON; a record, JSON, a newline and the body as it was sent.
        meta, _, body = found.partition(b"\n")
        record: dict[str, Any] = orjson.loads(meta)
        if record["fingerprint"] != fingerprint.decode():
            await _problem(send, scope, 422, f"this {HEADER} was used with a different request")
        elif record["state"] == "running":
            await _problem(send, scope, 409, f"a request with this {HEADER} is in progress", 1)
        else:
            headers = [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in record["headers"]
            ]
            headers += [
                (b"content-length", str(len(body)).encode()),
                (REPLAYED_HEADER.lower().encode(), b"?1"),
            ]
            await send(
                {"type": "http.response.start", "status": record["status"], "headers": headers}
            )
            await send({"type": "http.response.body", "body": body})

    async def _run_first(  # noqa: PLR0913, PLR0917 - one request's state, passed once
        self,
        scope: Scope,
        send: Send,
        body: bytes,
        receive: Receive,
        store: RedisStore,
        record_key: bytes,
        claim: bytes,
        fingerprint: bytes,
    ) -> None:
        status = 0
        kept: list[tuple[str, str]] = []
        chunks: list[bytes] = []
        size = 0
        body_sent = False

        async def replay_body() -> Message:
            nonlocal body_sent
            if body_sent:
                return await receive()  # the disconnect, when it comes
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        def capture(message: Message) -> Awaitable[None]:  # not a coroutine: ~1k less
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
                kept.extend(
                    (n.decode("latin-1"), v.decode("latin-1"))
                    for n, v in message.get("headers", ())
                    if n.lower() in _KEPT_HEADERS
                )
            elif message["type"] == "http.response.body" and size <= self._max_body:
                chunk = message.get("body", b"")
                size += len(chunk)
                chunks.append(chunk)
            return send(message)

        record = b""
        try:
            await self.app(scope, replay_body, capture)
        finally:
            # A 5xx, a failure or a body too large to keep: release the key for a retry.
            if 0 < status < 500 and size <= self._max_body:  # noqa: PLR2004
                # The body as it was sent, after the JSON (no hex: ~2k instructions less).
                record = b'{"fingerprint":"%s","state":"done","status":%d,"headers":%s}\n%s' % (
                    fingerprint,
                    status,
                    orjson.dumps(kept),
                    b"".join(chunks),
                )
            # One write, unanswered: the answer has been sent already, and a retry through
            # this replica follows it on the same connection. Should it fail, the claim
            # expires after `in_flight_seconds` (retries get 409 until then).
            finish = (record_key,), (claim, record, self._ttl_ms)
            try:
                if not store.run_unanswered(FINISH_SCRIPT, *finish):
                    await store.run(FINISH_SCRIPT, *finish)
            except Exception as exc:  # noqa: BLE001 - the claim expires on its own
                log.warning("idempotency_record_not_stored", error=f"{type(exc).__name__}: {exc}")


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _problem(send: Send, scope: Scope, status: int, detail: str, retry: int = 0) -> None:
    headers = retry_after(retry) if retry else None
    await send_problem(send, status, detail, instance=scope["path"], headers=headers)
