"""Instructions per request of several baked projects, alternated in one run (template only).

    python bench/compare.py --project /tmp/before/my-service --project /tmp/after/my-service

For a change to the template: bake it before and after (`cookiecutter --no-input`),
`make install` in each, then count both here, A B A B ... (`--rounds`, 2 by default), so
that a difference of a per cent or two shows next to the spread of the same code. Each
project is served by its own virtualenv's interpreter (`<project>/.venv/bin/python`),
with the first project's harness (`bench/run.py`, `bench/instructions.py`) and
database; bare FastAPI once for the ratio. Run with the first project's interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path


def _say(message: str) -> None:
    sys.stderr.write(f"compare: {message}\n")
    sys.stderr.flush()


def main() -> int:
    """Count every project `--rounds` times, alternated; print instructions per request."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, action="append", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup-requests", type=int, default=200)
    args = parser.parse_args()
    first = args.project[0]
    sys.path.insert(0, str(first / "bench"))
    import instructions  # noqa: PLC0415 - the baked project's harness
    import run as harness  # noqa: PLC0415

    admin_dsn = os.environ.get("DATABASE_URL", harness.DEFAULT_DSN)
    database = f"bench_{secrets.token_hex(4)}"
    dsn = harness._with_database(admin_dsn, database)  # noqa: SLF001
    workdir = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    asyncio.run(harness._create_database(admin_dsn, database))  # noqa: SLF001
    counts: dict[str, list[float]] = {}
    try:
        with harness.redis_server():
            pool = harness.prepare_database(dsn, args.warmup_requests + args.requests, workdir)

            def count(name: str, launch: object) -> float:
                counted = instructions.count(
                    launch,
                    {"items_get": harness.INSTRUCTION_ROUTES["items_get"]},
                    requests=args.requests,
                    warmup=args.warmup_requests,
                    workdir=workdir,
                )
                value = counted["items_get"].per_request
                _say(f"{name}: {value:,.0f}")
                return value

            fastapi = count("fastapi", harness._launch("fastapi", dsn, pool, workdir))  # noqa: SLF001
            for number in range(1, args.rounds + 1):
                for index, project in enumerate(args.project):
                    launch = harness._launch("generated", dsn, pool, workdir)  # noqa: SLF001
                    launch.argv[0] = str(project / ".venv" / "bin" / "python")
                    name = f"{index}:{project}"
                    counts.setdefault(name, []).append(count(f"{name} round {number}", launch))
    finally:
        asyncio.run(harness._drop_database(admin_dsn, database))  # noqa: SLF001
        shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.write(f"GET /items/{{id}}, instructions per request; bare FastAPI {fastapi:,.0f}\n")
    for name, values in counts.items():
        cells = "  ".join(f"{value:,.0f} ({value / fastapi:.3f})" for value in values)
        sys.stdout.write(f"{name}: {cells}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
