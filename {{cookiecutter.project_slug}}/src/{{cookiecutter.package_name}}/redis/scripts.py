"""A lean Redis connection for the scripts on the request path (rate limits, idempotency).

Hand-written, where everything else uses redis-py, for one measured reason: redis-py's
asyncio client spends ~320k CPU instructions on the client side of one ``EVALSHA``
(command packing, pool checkout, its parser, a timeout per call), more than a third
of a whole ``GET /items/{id}``; this connection spends ~22k (measured with the
template's `bench/redis_probe.py`). It is one pipelined connection:
commands are written as they come and replies matched to callers in order (Redis
answers in order), parsed by hiredis. What it owns, and its tests cover
(`tests/redis/test_redis_scripts.py`):

- cancellation: a cancelled caller's reply is still read and dropped, so no caller
  ever gets another one's reply (the command itself may already have run on Redis);
- a deadline: a connection with no reply for `command_timeout` (checked every half
  of it, so after 1 to 1.5 x `command_timeout`) is aborted and its callers get
  `TimeoutError` (a timer per connection, not one per call: that costs ~27k a call);
- reconnection on the next call after a failure (the store's breaker decides whether
  there is a next call), with AUTH, SELECT and TLS from the same URL redis-py reads;
- ``NOSCRIPT`` (a restarted or flushed Redis): the script is sent in full and cached;
- writes that nobody waits for (`ScriptClient.evalsha_unanswered`), sent after
  ``CLIENT REPLY SKIP`` so that Redis sends no reply to match or to wake the loop for,
  where the server allows it (checked once per connection).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from collections.abc import Sequence

Arg = bytes | str | int | float

log = structlog.get_logger(__name__)

_BULK: Final = b"$%d\r\n%s\r\n"
# Redis sends no reply to this nor to the command after it (Redis 3.2+).
_SKIP_REPLY: Final = b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$4\r\nSKIP\r\n"
_TICKS_TO_ABORT: Final = 3  # ticks of half the timeout without a reply: 1-1.5 x timeout


class Script:
    """A Lua script known by its SHA1, as ``EVALSHA`` names it."""

    __slots__ = ("_forms", "sha", "source")

    def __init__(self, source: str) -> None:
        """Hash `source` once."""
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest().encode()
        self._forms: dict[tuple[bool, int, int], bytes] = {}

    def command(self, keys: Sequence[Arg], args: Sequence[Arg], *, full: bool = False) -> bytes:
        """``EVALSHA sha numkeys keys... args...`` packed (``EVAL source ...`` when `full`).

        One ``%`` format per shape of call, the words before the keys packed into it,
        and bytes taken as they are: ~10k instructions for an idempotency claim, against
        ~14k with the head joined on and each word's type tested (~13k against ~18k for
        its record, sent in full), ~23k packed word by word.
        """
        shape = (full, len(keys), len(args))
        form = self._forms.get(shape)
        if form is None:
            words = (b"EVAL", self.source) if full else (b"EVALSHA", self.sha)
            size = 3 + len(keys) + len(args)
            head = b"*%d\r\n%s" % (size, _bulks((*words, len(keys))))
            form = head.replace(b"%", b"%%") + _BULK * (len(keys) + len(args))
            self._forms[shape] = form
        fields: list[int | bytes] = []
        for word in (*keys, *args):
            data = word if isinstance(word, bytes) else _encode(word)
            fields.append(len(data))
            fields.append(data)
        return form % tuple(fields)


def _encode(arg: Arg) -> bytes:
    return (arg if isinstance(arg, str) else repr(arg)).encode()


def _bulks(args: Sequence[Arg]) -> bytes:
    """`args` as RESP bulk strings, formatted with one ``%`` for all of them."""
    fields: list[int | bytes] = []
    for arg in args:
        data = arg if isinstance(arg, bytes) else _encode(arg)
        fields += (len(data), data)
    return _BULK * len(args) % tuple(fields)


def pack(args: Sequence[Arg]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    return b"*%d\r\n%s" % (len(args), _bulks(args))


class _Protocol(asyncio.Protocol):
    """One connection: requests written in order, replies handed out in the same order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.closed = False
        self.skips_replies = False  # whether the server accepts CLIENT REPLY SKIP
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._failure: Exception = RedisConnectionError("connection to Redis lost")
        self._period = timeout / 2
        self._answered = 0
        self._seen = 0
        self._stalled = 0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # a stream (uvloop's own class)
        self._timer = self.loop.call_later(self._period, self._tick)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        try:
            while (reply := reader.gets()) is not False:
                self._answered += 1
                future = pending.popleft()
                if future.done():  # its caller was cancelled: the reply is dropped here
                    continue
                if isinstance(reply, ResponseError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply unasked for
            self.abort(RedisConnectionError(f"Redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        failure = self._failure
        if exc is not None and failure.__cause__ is None:
            failure.__cause__ = exc
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(failure)

    def request(self, data: bytes) -> asyncio.Future[Any]:
        """Write one or more packed commands; the future gets the reply to the last."""
        if self.closed or self._transport is None or self._transport.is_closing():
            raise self._failure
        future = self.loop.create_future()
        self._transport.write(data)
        self._pending.append(future)
        return future

    def write_unanswered(self, data: bytes) -> None:
        """Write commands that Redis will not answer: no reply is expected for them."""
        if self.closed or self._transport is None or self._transport.is_closing():
            raise self._failure
        self._transport.write(data)

    def abort(self, failure: Exception) -> None:
        """Fail every pending call with `failure` and drop the connection."""
        self._failure = failure
        self.closed = True
        if self._transport is not None:
            self._transport.abort()  # connection_lost follows, on the next loop turn
        self.connection_lost(None)

    def _tick(self) -> None:
        if self._pending and self._answered == self._seen:
            self._stalled += 1
            if self._stalled >= _TICKS_TO_ABORT:
                self.abort(RedisTimeoutError("no reply from Redis within the command timeout"))
                return
        else:
            self._stalled = 0
        self._seen = self._answered
        self._timer = self.loop.call_later(self._period, self._tick)


class ScriptClient:
    """One pipelined connection, opened on first use and reopened after a failure."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        command_timeout: float,
        client_name: str | None = None,
    ) -> None:
        """Read host, port or socket path, credentials, database and TLS from `url`."""
        parts = urlsplit(url)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        self._path = unquote(parts.path) if parts.scheme == "unix" else None
        self._host = parts.hostname or "localhost"
        self._port = parts.port or 6379
        self._ssl = _tls_context(query) if parts.scheme == "rediss" else None
        db = query.get("db") if self._path else (parts.path.lstrip("/") or query.get("db"))
        handshake: list[bytes] = []
        if parts.password is not None:
            credentials = [unquote(parts.password)]
            if parts.username:
                credentials.insert(0, unquote(parts.username))
            handshake.append(pack(["AUTH", *credentials]))
        if db and int(db) != 0:
            handshake.append(pack(["SELECT", int(db)]))
        if client_name:
            handshake.append(pack(["CLIENT", "SETNAME", client_name.replace(" ", "-")]))
        self._handshake = handshake
        # Asked on every connection: an ACL or a proxy may refuse it.
        self._reply_probe = pack(["CLIENT", "REPLY", "ON"])
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._protocol: _Protocol | None = None
        self._lock = asyncio.Lock()

    async def execute(self, *args: Arg) -> Any:  # noqa: ANN401 - a reply is any RESP value
        """Send one command; return its reply, or raise `ResponseError` for an error reply."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        return await protocol.request(pack(args))

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:  # noqa: ANN401
        """Run `script` by its SHA; on ``NOSCRIPT`` send it in full (Redis then caches it)."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        try:  # written here, not through `execute`: one coroutine less on the request path
            return await protocol.request(script.command(keys, args))
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute(b"EVAL", script.source, len(keys), *keys, *args)

    def evalsha_unanswered(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> bool:
        """Write a call of `script` whose reply Redis does not send: True once written.

        Behind ``CLIENT REPLY SKIP``, in full (``EVAL``: no ``NOSCRIPT`` to resend). Its
        outcome is never known: an error reply (a script error, ``OOM``, ``READONLY``)
        is not sent either, and a connection lost after the write fails no one (the next
        call sees it). A call written later on the connection runs after it. False,
        writing nothing, when the connection is not open or the server refused
        ``CLIENT REPLY`` (an ACL, a proxy): then await `evalsha`.
        """
        protocol = self._protocol
        if protocol is None or protocol.closed or not protocol.skips_replies:
            return False
        protocol.write_unanswered(_SKIP_REPLY + script.command(keys, args, full=True))
        return True

    async def aclose(self) -> None:
        """Close the connection; calls still pending fail with a connection error."""
        if self._protocol is not None:
            self._protocol.abort(RedisConnectionError("client closed"))
            self._protocol = None

    async def _connect(self) -> _Protocol:
        async with self._lock:  # one connection attempt at a time; the others use it
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            loop = asyncio.get_running_loop()
            protocol: _Protocol | None = None

            def factory() -> _Protocol:
                return _Protocol(loop, self._command_timeout)

            try:
                async with asyncio.timeout(self._connect_timeout):
                    if self._path is not None:
                        _, protocol = await loop.create_unix_connection(factory, self._path)
                    else:
                        _, protocol = await loop.create_connection(
                            factory, self._host, self._port, ssl=self._ssl
                        )
                    await self._greet(protocol)
            except ResponseError as exc:  # AUTH or SELECT refused: not a reply to return
                if protocol is not None:
                    protocol.abort(RedisConnectionError(str(exc)))
                msg = f"Redis refused the connection: {exc}"
                raise RedisConnectionError(msg) from exc
            except TimeoutError as exc:
                if protocol is not None:
                    protocol.abort(RedisTimeoutError("connect timed out"))
                msg = "timed out connecting to Redis"
                raise RedisTimeoutError(msg) from exc
            except OSError as exc:
                msg = f"cannot connect to Redis: {exc}"
                raise RedisConnectionError(msg) from exc
            self._protocol = protocol
            return protocol

    async def _greet(self, protocol: _Protocol) -> None:
        """AUTH, SELECT and the client's name; then whether CLIENT REPLY is allowed."""
        # Pipelined, every reply read (none left unretrieved after an error).
        commands = (*self._handshake, self._reply_probe)
        *replies, probe = await asyncio.gather(
            *(protocol.request(command) for command in commands), return_exceptions=True
        )
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        if isinstance(probe, ResponseError):  # the writes nobody waits for are then awaited
            log.info("redis_client_reply_refused", error=str(probe))
        elif isinstance(probe, BaseException):
            raise probe
        else:
            protocol.skips_replies = True


def _tls_context(query: dict[str, str]) -> ssl.SSLContext:
    """TLS from a rediss:// URL's query, as redis-py reads it (ssl_cert_reqs, ssl_ca_certs...)."""
    context = ssl.create_default_context(cafile=query.get("ssl_ca_certs"))
    requirement = query.get("ssl_cert_reqs", "required").lower()
    if requirement in {"none", "optional"}:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE if requirement == "none" else ssl.CERT_OPTIONAL
    elif query.get("ssl_check_hostname", "true").lower() in {"false", "0", "no"}:
        context.check_hostname = False
    if "ssl_certfile" in query:
        context.load_cert_chain(query["ssl_certfile"], query.get("ssl_keyfile"))
    return context
