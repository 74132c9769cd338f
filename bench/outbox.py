"""The outbox end to end: events/s, commit-to-handled latency and CPU per event.

    python3 bench/run.py --outbox --answer broker=nats [--events 20000] [--rate 0]
    python3 bench/run.py --outbox --answer broker=rabbitmq --rate 800

The wrapper `bench/run.py` bakes (with the `--answer`s; a broker is required) and runs
this file with the baked project's interpreter, `--project <dir>` and the project on
`PYTHONPATH` (template only: it uses the generated project's test helpers). In a
scratch database it runs:

* the API side in this process: the real app (`create_app`, its lifespan with the
  relay), writing `item.created` events the way a request handler does
  (`Outbox.add` in a transaction, then `Outbox.committed()`) from `--writers`
  concurrent tasks (16), `--per-commit` events per transaction (1), as fast as they
  can or paced to `--rate` events/s together;
* the worker as its own process (`python -m <package> worker`, default settings,
  JSON logs at INFO), whose example handler writes one `item_audit` row per event.

It reports events/s from the first event's creation (just before its commit) to the
last worker transaction (and, for the relay alone, to the last row marked sent), the p50/p99 of each event's creation to the worker
transaction that handled it (`item_audit.handled_at`, the transaction's start: its
commit follows within the batch's few ms), and the CPU time per event of the worker
process and of this process (writer and relay together). `DATABASE_URL` names the
PostgreSQL server (default: local, database `test`); `NATS_URL` / `RABBITMQ_URL` the
broker (the generated tests' rules: NATS without a URL starts a throwaway server).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import time
from pathlib import Path
from typing import Any

import asyncpg

# The baked project's modules and test helpers: `bench/run.py` puts it on PYTHONPATH.
from tests.broker_server import broker_server, delete_topology
from tests.messaging import running_worker
from tests.postgres import create_database, drop_database

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def own_cpu() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def write_events(app: Any, args: argparse.Namespace) -> None:
    """Commit `args.events` item.created events from `args.writers` concurrent "requests".

    Each commits `args.per_commit` events per transaction; together they offer
    `args.rate` events/s (0: as fast as they can).
    """
    outbox = app.state.outbox
    chunks = iter(range(0, args.events, args.per_commit))
    started = time.perf_counter()

    async def writer() -> None:
        for first in chunks:
            if args.rate:
                delay = started + first / args.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            async with (
                app.state.db.connection() as connection,
                connection.transaction(),
            ):
                for number in range(first, min(first + args.per_commit, args.events)):
                    payload = {"id": number, "name": f"e{number}"}
                    await outbox.add(connection, "item.created", payload)
            outbox.committed()

    await asyncio.gather(*(writer() for _ in range(args.writers)))


async def wait_handled(database_url: str, total: int, timeout: float) -> None:
    """Poll until the worker has handled `total` events."""
    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while await connection.fetchval("SELECT count(*) FROM item_audit") < total:
            if time.monotonic() > deadline:
                msg = f"the worker did not handle {total} events in {timeout}s"
                raise TimeoutError(msg)
            await asyncio.sleep(0.02)
    finally:
        await connection.close()


_FIGURES = """
SELECT count(*) AS events,
       extract(epoch FROM max(handled_at) - min(created_at)) AS seconds,
       1000 * percentile_cont(0.5) WITHIN GROUP
           (ORDER BY extract(epoch FROM handled_at - created_at)) AS p50_ms,
       1000 * percentile_cont(0.99) WITHIN GROUP
           (ORDER BY extract(epoch FROM handled_at - created_at)) AS p99_ms,
       (SELECT extract(epoch FROM max(published_at) - min(created_at)) FROM outbox)
           AS relay_seconds
FROM item_audit
"""


async def api_side(
    database_url: str, broker: Any, args: argparse.Namespace, worker_pid: list[int]
) -> dict[str, float]:
    """Run the app with its relay, write the events, wait for the worker; return figures."""
    from_app = __import__(f"{args.package}.app", fromlist=["create_app"])
    from_settings = __import__(f"{args.package}.settings", fromlist=["Settings"])
    settings = from_settings.Settings(
        database_url=database_url,
        environment="test",
        broker=broker,
        log={"level": "WARNING"},
    )
    app = from_app.create_app(settings)
    async with app.router.lifespan_context(app):
        worker_cpu = process_cpu(worker_pid[0])
        cpu = own_cpu()
        await write_events(app, args)
        await wait_handled(database_url, args.events, timeout=600)
        cpu = own_cpu() - cpu
        worker_cpu = process_cpu(worker_pid[0]) - worker_cpu
    connection = await asyncpg.connect(database_url)
    try:
        row = await connection.fetchrow(_FIGURES)
    finally:
        await connection.close()
    return {
        "events": float(row["events"]),
        "events_per_s": row["events"] / float(row["seconds"]),
        "relay_events_per_s": row["events"] / float(row["relay_seconds"]),
        "p50_ms": float(row["p50_ms"]),
        "p99_ms": float(row["p99_ms"]),
        "worker_cpu_ms_per_event": 1000 * worker_cpu / args.events,
        "api_cpu_ms_per_event": 1000 * cpu / args.events,
    }


def main() -> None:
    """Parse arguments, run, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="the baked project")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--writers", type=int, default=16, help="concurrent API transactions"
    )
    parser.add_argument(
        "--per-commit", type=int, default=1, help="events per API transaction"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="events/s offered (0: flat out)"
    )
    args = parser.parse_args()
    args.package = next(args.project.glob("src/*/messaging")).parent.name
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    settings_module = __import__(
        f"{args.package}.messaging.settings", fromlist=["BrokerSettings"]
    )
    database = asyncio.run(create_database(server, prefix="outbox"))
    try:
        with broker_server() as url:
            broker = settings_module.BrokerSettings(
                url=url, prefix=f"bench-{secrets.token_hex(4)}"
            )
            try:
                with running_worker(database, broker) as worker:
                    figures = asyncio.run(
                        api_side(database, broker, args, [worker.process.pid])
                    )
                    worker.stop()
            finally:
                asyncio.run(delete_topology(broker))
    finally:
        asyncio.run(drop_database(server, database))
    print(
        f"{'events':>26}: {figures.pop('events'):.0f} ({args.writers} writers, "
        f"{args.per_commit} per commit, "
        f"offered {'flat out' if not args.rate else f'{args.rate:g}/s'})"
    )
    for name, value in figures.items():
        print(f"{name:>26}: {value:.3f}")


if __name__ == "__main__":
    main()
