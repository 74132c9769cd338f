"""`make dev` (`python -m <package> dev`) as a real process: all up, then nothing left.

It starts every dependency it needs embedded (nothing is configured here but what no
wheel embeds, RabbitMQ), answers `/health` with every check passing, prints a curl line
that works as pasted, stops everything on Ctrl-C, and a second start in the same
directory finds the first one's data in `.dev/`.
"""

from __future__ import annotations

import asyncio
{%- if cookiecutter.broker == "rabbitmq" %}
from urllib.parse import urlsplit
{%- endif %}

import asyncpg
import httpx
{%- if cookiecutter.redis == "yes" %}
import redis.asyncio as aioredis
{%- endif %}
{% if cookiecutter.broker == "rabbitmq" %}
from {{ cookiecutter.package_name }}.settings import ENV_PREFIX
{%- endif %}
from tests.dev_process import DevProcess, assert_nothing_left, health_checks_pass, summary_ports

KEPT = "kept between runs"


async def keep(summary: dict[str, str]) -> None:
    """Write something to every embedded store, for the second run to find."""
    connection = await asyncpg.connect(summary["postgresql"].split()[0])
    try:
        await connection.execute("CREATE TABLE dev_test_kept (note text)")
        await connection.execute("INSERT INTO dev_test_kept VALUES ($1)", KEPT)
    finally:
        await connection.close()
{%- if cookiecutter.redis == "yes" %}
    client = aioredis.Redis.from_url(summary["redis"].split()[0])
    try:
        await client.set("dev-test-kept", KEPT)
    finally:
        await client.aclose()
{%- endif %}


async def kept(summary: dict[str, str]) -> list[str]:
    """What `keep` wrote, as the second run sees it."""
    connection = await asyncpg.connect(summary["postgresql"].split()[0])
    try:
        found = [await connection.fetchval("SELECT note FROM dev_test_kept")]
    finally:
        await connection.close()
{%- if cookiecutter.redis == "yes" %}
    client = aioredis.Redis.from_url(summary["redis"].split()[0], decode_responses=True)
    try:
        found.append(await client.get("dev-test-kept"))
    finally:
        await client.aclose()
{%- endif %}
    return found


def test_dev_runs_everything_then_leaves_nothing(dev_run: DevProcess) -> None:
    dev_run.start()
    summary = dev_run.wait_until_ready()
    assert summary["api"].split()[0] == dev_run.url
    assert httpx.get(summary["docs"].split()[0], timeout=10).status_code == 200
    health_checks_pass(dev_run.url)
    url, headers = dev_run.try_request()
    assert httpx.get(url, headers=headers, timeout=10).status_code == 200
    asyncio.run(keep(summary))
    assert "api    | " in dev_run.output()  # the API's own lines, tagged
{%- if cookiecutter.broker == "rabbitmq" %}
    given = urlsplit(dev_run.env[f"{ENV_PREFIX}BROKER__URL"])
    assert summary["rabbitmq"].startswith(f"amqp://{given.username}:***@")
    assert f":{given.password}@" not in dev_run.output()
{%- endif %}
    ports = [dev_run.port, *summary_ports(summary)]

    assert dev_run.interrupt() == 0, dev_run.output()
    assert_nothing_left(dev_run, ports)

    dev_run.start()
    summary = dev_run.wait_until_ready()
    health_checks_pass(dev_run.url)
    assert asyncio.run(kept(summary)) == [KEPT{% if cookiecutter.redis == "yes" %}, KEPT{% endif %}]
    assert dev_run.terminate() == 0, dev_run.output()
    assert_nothing_left(dev_run, [dev_run.port, *summary_ports(summary)])
{%- if cookiecutter.broker == "rabbitmq" %}


def test_dev_without_a_rabbitmq_says_how_to_get_one(dev_run: DevProcess) -> None:
    del dev_run.env[f"{ENV_PREFIX}BROKER__URL"]
    dev_run.start()
    assert dev_run.process is not None
    assert dev_run.process.wait(timeout=60) == 2
    assert f"set {ENV_PREFIX}BROKER__URL" in dev_run.output()
    assert "docker compose up -d broker" in dev_run.output()
    assert not (dev_run.workdir / ".dev" / "postgres").exists()  # nothing was started
{%- endif %}
