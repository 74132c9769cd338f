"""Instructions per request of several baked projects, alternated in one run (template only).

    python bench/compare.py --project /tmp/before/my-service --project /tmp/after/my-service

For a change to the template: bake it before and after (`cookiecutter --no-input`),
`make install` in each, then count both here, A B A B ... (`--rounds`, 2 by default), so
that a difference of a per cent or two shows next to the spread of the same code. Each
project is served by its own virtualenv's interpreter (`<project>/.venv/bin/python`),
with the first project's harness (`bench/servers.py`, `bench/instructions.py`) and
database; bare FastAPI once for the ratio. Run with the first project's interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any


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
    sys.path.insert(0, str(args.project[0] / "bench"))
    import instructions  # noqa: PLC0415 - the baked project's harness
    import servers  # noqa: PLC0415

    workdir = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    route = instructions.Route("GET", "/items/{n}", headers=())
    counts: dict[str, list[float]] = {}

    def count(name: str, launch: Any) -> float:  # noqa: ANN401 - the harness's Launch
        counted = instructions.count(
            launch,
            {"items_get": route},
            requests=args.requests,
            warmup=args.warmup_requests,
            workdir=workdir,
        )
        value: float = counted["items_get"].per_request
        _say(f"{name}: {value:,.0f}")
        return value

    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(servers.redis())
            if servers.HAS_AUTH:  # before the migration: the settings require the provider's
                servers.authenticate(stack)
                route = dataclasses.replace(route, headers=tuple(servers.HEADERS.items()))
            items = args.warmup_requests + args.requests
            dsn, pool = stack.enter_context(servers.database(items, workdir))
            fastapi = count("fastapi", servers.launch("fastapi", dsn, pool, workdir))
            for number in range(1, args.rounds + 1):
                for index, project in enumerate(args.project):
                    launch = servers.launch("generated", dsn, pool, workdir)
                    python = str(project / ".venv" / "bin" / "python")
                    launch = dataclasses.replace(launch, argv=[python, *launch.argv[1:]])
                    name = f"{index}:{project}"
                    counts.setdefault(name, []).append(count(f"{name} round {number}", launch))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.write(f"GET /items/{{id}}, instructions per request; bare FastAPI {fastapi:,.0f}\n")
    for name, values in counts.items():
        cells = "  ".join(f"{value:,.0f} ({value / fastapi:.3f})" for value in values)
        sys.stdout.write(f"{name}: {cells}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
