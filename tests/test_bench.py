"""Smoke test of the benchmark harness: `python3 bench/run.py` end to end, one second.

It bakes the template, installs the service into a virtualenv and runs every server
and route once for one second, so it only proves the harness works; the numbers are
meaningless. Marked `bench` (deselect with `-m "not bench"`). Set `BENCH_VENV` to a
directory to reuse one virtualenv between runs (the install then takes seconds).
Needs PostgreSQL: `DATABASE_URL`, else postgresql://postgres@127.0.0.1:5432/test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
DSN = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")

pytestmark = pytest.mark.bench


def _postgres_reachable() -> bool:
    parts = urlsplit(DSN)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _postgres_reachable(), reason=f"no PostgreSQL at {DSN}")
def test_bench_harness_runs_for_one_second(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "run.py"),
            "--duration=1",
            "--rounds=1",
            "--warmup=0",
            "--items=200",
            "--connections=8",
            f"--json={out}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "DATABASE_URL": DSN},
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr[-6000:]
    assert "req/s ratio" in completed.stdout
    report = json.loads(out.read_text())
    assert set(report["ratios"]) == {"health_live", "items_get"}
    for route, ratios in report["ratios"].items():
        assert set(ratios) == {"vs_fastapi", "vs_raw"}, route
        assert all(value > 0 for value in ratios.values()), ratios
        for app, result in report["results"][route].items():
            assert result["rps"] > 0, (route, app)
            assert result["non_2xx"] == 0, (route, app, result)
            assert result["errors"] == 0, (route, app, result)
