"""The lean connection of the request path against a real Redis: cancellation, deadline,
reconnection, AUTH, NOSCRIPT, unanswered writes; the rate limiter's checks cancelled mid-flight."""

from __future__ import annotations

import asyncio
import random
import secrets
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from {{ cookiecutter.package_name }}.redis.rate_limit import RateLimiter
from {{ cookiecutter.package_name }}.redis.scripts import Script, ScriptClient
from {{ cookiecutter.package_name }}.redis.settings import RateLimitSettings, RatePolicy
from {{ cookiecutter.package_name }}.redis.store import RedisStore, is_redis_failure
from {{ cookiecutter.package_name }}.resilience.breaker import BreakerConfig, CircuitBreaker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import redis.asyncio as aioredis

# Echoes its argument after a little work: replies that tell their callers apart.
ECHO = Script("return {ARGV[1], redis.call('TIME')[1] and KEYS[1]}")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[ScriptClient]:
    scripts = ScriptClient(redis_url, connect_timeout=1.0, command_timeout=0.5, client_name="t")
    yield scripts
    await scripts.aclose()


async def echo(client: ScriptClient, value: str) -> Any:
    return await client.evalsha(ECHO, ("k:" + value,), (value,))


async def test_cancelled_calls_never_desynchronise_replies(client: ScriptClient) -> None:
    rng = random.Random(19)  # noqa: S311 - test data, not a secret
    for _ in range(20):
        calls = {str(n): asyncio.ensure_future(echo(client, str(n))) for n in range(50)}
        await asyncio.sleep(0)  # every command written
        for value in rng.sample(sorted(calls), 25):
            calls[value].cancel()
        await asyncio.sleep(0)
        for value, call in calls.items():
            if not call.cancelled():
                assert await call == [value.encode(), b"k:" + value.encode()]
    # Afterwards, every call gets its own answer, sequential and concurrent.
    assert [await echo(client, f"s{n}") for n in range(10)] == [
        [f"s{n}".encode(), f"k:s{n}".encode()] for n in range(10)
    ]
    concurrent = await asyncio.gather(*(echo(client, f"c{n}") for n in range(100)))
    assert concurrent == [[f"c{n}".encode(), f"k:c{n}".encode()] for n in range(100)]


async def test_error_replies_are_raised_to_their_caller_only(client: ScriptClient) -> None:
    bad = asyncio.ensure_future(client.execute("NOSUCHCOMMAND"))
    good = asyncio.ensure_future(client.execute("ECHO", "fine"))
    with pytest.raises(ResponseError):
        await bad
    assert await good == b"fine"


async def test_noscript_sends_the_script_and_goes_on(
    client: ScriptClient, redis_client: aioredis.Redis
) -> None:
    script = Script(f"return '{secrets.token_hex(8)}'")  # never loaded before
    first = await client.evalsha(script, (), ())
    assert await redis_client.script_exists(script.sha.decode()) == [True]
    assert await client.evalsha(script, (), ()) == first


# Sets KEYS[1] to ARGV[1], or fails (a script error) when ARGV[1] is "fail".
SET_OR_FAIL = Script("""
if ARGV[1] == 'fail' then return redis.error_reply('failing on purpose') end
return redis.call('SET', KEYS[1], ARGV[1])
""")


async def test_unanswered_writes_keep_replies_in_step(client: ScriptClient, prefix: str) -> None:
    await client.execute("PING")  # connected: the unanswered writes need an open connection

    async def write(value: str) -> None:
        assert client.evalsha_unanswered(SET_OR_FAIL, (prefix + "w",), (value,))

    rng = random.Random(3)  # noqa: S311 - test data, not a secret
    for round_ in range(10):
        # Tasks run in the order made: the writes go out between the calls.
        calls: dict[str, asyncio.Future[Any]] = {}
        writes = []
        for n in range(40):
            if n % 3 == 0:  # a write nobody waits for, some failing on Redis
                value = "fail" if n % 5 == 0 else f"{round_}-{n}"
                writes.append(asyncio.ensure_future(write(value)))
            else:
                calls[str(n)] = asyncio.ensure_future(echo(client, str(n)))
        await asyncio.gather(*writes)
        for value in rng.sample(sorted(calls), 10):
            calls[value].cancel()
        await asyncio.sleep(0)
        for value, call in calls.items():
            if not call.cancelled():
                assert await call == [value.encode(), b"k:" + value.encode()]
        # The writes ran in order, before what was written after them.
        assert await client.execute("GET", prefix + "w") == f"{round_}-39".encode()


async def test_a_script_with_percent_signs_is_sent_in_full_intact(
    client: ScriptClient, prefix: str
) -> None:
    # The script's source is part of a `%` format when sent in full (unanswered writes).
    script = Script("return redis.call('SET', KEYS[1], string.format('%d%%', ARGV[1]))")
    await client.execute("PING")
    assert client.evalsha_unanswered(script, (prefix + "p",), (7,))
    assert await client.execute("GET", prefix + "p") == b"7%"
    assert await client.evalsha(script, (prefix + "p",), (8,)) == b"OK"
    assert await client.execute("GET", prefix + "p") == b"8%"


async def test_client_reply_refused_means_no_unanswered_writes(
    redis_client: aioredis.Redis, no_client_reply_url: str, prefix: str
) -> None:
    # An ACL (or a proxy) that refuses CLIENT REPLY: such writes are then not sent at all
    # (the caller awaits them instead), and the connection works as before.
    refused = ScriptClient(no_client_reply_url, connect_timeout=1, command_timeout=0.5)
    try:
        assert await refused.evalsha(SET_OR_FAIL, (prefix + "r",), ("1",)) == b"OK"
        assert not refused.evalsha_unanswered(SET_OR_FAIL, (prefix + "r",), ("2",))
        assert await refused.evalsha(SET_OR_FAIL, (prefix + "r",), ("3",)) == b"OK"
        assert await redis_client.get(prefix + "r") == b"3"
    finally:
        await refused.aclose()


async def test_reconnects_after_the_server_drops_the_connection(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    name = "t-" + secrets.token_hex(4)
    named = ScriptClient(redis_url, connect_timeout=1.0, command_timeout=0.5, client_name=name)
    try:
        own_id = await named.execute("CLIENT", "ID")
        await redis_client.client_kill_filter(_id=own_id)
        await asyncio.sleep(0.05)  # the loss is seen: the next call opens a new connection
        assert await named.execute("ECHO", "back") == b"back"
        assert await named.execute("CLIENT", "GETNAME") == name.encode()
        assert await named.execute("CLIENT", "ID") != own_id
    finally:
        await named.aclose()


async def test_calls_pending_when_the_connection_drops_fail_and_the_next_reconnects() -> None:
    connections = 0

    async def drop_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await reader.read(1 << 16)
            writer.close()  # with the command unanswered
            return
        while data := await reader.read(1 << 16):  # CLIENT REPLY ON (the handshake), PINGs
            writer.write(b"+OK\r\n" * data.count(b"REPLY") + b"+PONG\r\n" * data.count(b"PING"))
        writer.close()

    server = await asyncio.start_server(drop_first, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    flaky = ScriptClient(f"redis://127.0.0.1:{port}", connect_timeout=1, command_timeout=1)
    try:
        with pytest.raises(RedisConnectionError):
            await flaky.execute("PING")
        assert await flaky.execute("PING") == b"PONG"
        assert connections == 2  # the first, then one reconnection
    finally:
        await flaky.aclose()
        server.close()


async def test_a_silent_server_gets_a_timeout_within_the_deadline() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = ScriptClient(f"redis://127.0.0.1:{port}", connect_timeout=1, command_timeout=0.2)
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        with pytest.raises(RedisTimeoutError):
            await silent.execute("PING")
        assert 0.2 <= loop.time() - started <= 0.5  # 1-1.5 x the command timeout, + slack
    finally:
        await silent.aclose()
        server.close()


async def test_auth_and_select_from_the_url(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    user, password = "t-" + secrets.token_hex(4), secrets.token_hex(16)
    await redis_client.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=[f"{prefix}*"], commands=["+@all"]
    )
    base = redis_url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    right = ScriptClient(
        f"redis://{user}:{password}@{base}/0", connect_timeout=1, command_timeout=0.5
    )
    wrong = ScriptClient(f"redis://{user}:nope@{base}/0", connect_timeout=1, command_timeout=0.5)
    try:
        assert await right.execute("ACL", "WHOAMI") == user.encode()
        assert await right.execute("SET", prefix + "auth", "1") == b"OK"
        with pytest.raises(ResponseError):  # the ACL is applied: other keys refused
            await right.execute("SET", "elsewhere", "1")
        with pytest.raises(RedisConnectionError, match="refused"):
            await wrong.execute("PING")
    finally:
        await right.aclose()
        await wrong.aclose()
        await redis_client.acl_deluser(user)


async def test_rate_limit_checks_cancelled_mid_flight_leave_later_checks_right(
    redis_url: str, prefix: str
) -> None:
    scripts = ScriptClient(redis_url, connect_timeout=1.0, command_timeout=0.5)
    breaker = CircuitBreaker("redis", BreakerConfig(), is_failure=is_redis_failure)
    store = RedisStore(None, breaker, scripts=scripts, key_prefix=prefix)  # type: ignore[arg-type]
    limiter = RateLimiter(
        RateLimitSettings(default=RatePolicy(limit=3, window_seconds=60, burst=3))
    )
    app = SimpleNamespace(state=SimpleNamespace(redis=store))

    def scope(caller: str) -> dict[str, Any]:
        return {"path": "/x", "method": "GET", "app": app, "headers": [], "client": (caller, 1)}

    async def check(caller: str) -> tuple[int, bytes]:
        headers: list[tuple[bytes, bytes]] = []
        rejection = await limiter.admit(scope(caller), headers)
        return (rejection.status if rejection else 200), dict(headers).get(b"ratelimit", b"")

    try:
        rng = random.Random(7)  # noqa: S311 - test data, not a secret
        for round_ in range(30):
            # Many callers' first checks in flight at once (each a round trip), some
            # cancelled while Redis is answering them.
            checks = [asyncio.ensure_future(check(f"10.0.{round_}.{n}")) for n in range(20)]
            await asyncio.sleep(0)
            for task in rng.sample(checks, 10):
                task.cancel()
            await asyncio.gather(*checks, return_exceptions=True)
        # A new caller's checks are answered from its own bucket, in order.
        answers = [await check("192.0.2.1") for _ in range(4)]
        assert [status for status, _ in answers] == [200, 200, 200, 429]
        assert [field.split(b";")[1] for _, field in answers] == [b"r=2", b"r=1", b"r=0", b"r=0"]
        assert limiter.failed_open == 0
    finally:
        await scripts.aclose()
