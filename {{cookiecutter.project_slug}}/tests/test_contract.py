"""The service keeps the promises of its own OpenAPI document, under generated input.

Schemathesis reads `/openapi.json` from the real service (real uvicorn, real database),
generates valid and invalid requests for every operation in it, and runs every check:
no 5xx, only documented status codes, media types, headers and bodies, invalid input
rejected, valid input accepted, 405 with `Allow` for undocumented methods, and the
stateful links between operations. A route added to the app is in the document, so it
is fuzzed too, with nothing to write.

`make fuzz` runs a longer campaign with a random seed: `FUZZ_EXAMPLES` (examples per
operation) and `FUZZ_SEED` override the defaults below.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import httpx

from tests.service_process import running_service

if TYPE_CHECKING:
    from pathlib import Path

MIN_CASES = 1000
# A fixed seed keeps CI reproducible; `make fuzz` explores new inputs on every run.
DEFAULT_SEED = "20261202"
OPERATION_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def test_every_operation_keeps_its_contract(database_url: str, tmp_path: Path) -> None:
    with running_service(database_url, log__level="WARNING") as service:
        document = httpx.get(f"{service.url}/openapi.json").json()
        operations = sum(
            method in OPERATION_METHODS
            for path_item in document["paths"].values()
            for method in path_item
        )
        if not operations:
            # A service without routes of its own yet (schemathesis refuses an empty
            # document); the first route added is fuzzed from then on.
            assert document["paths"] == {}
            return
        examples = os.environ.get("FUZZ_EXAMPLES") or str(
            max(50, math.ceil(MIN_CASES / operations))
        )
        seed = os.environ.get("FUZZ_SEED", "" if "FUZZ_EXAMPLES" in os.environ else DEFAULT_SEED)
        report_path = tmp_path / "report.json"
        command = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{service.url}/openapi.json",
            "--checks=all",
            "--mode=all",
            f"--max-examples={examples}",
            "--workers=1",
            "--request-timeout=15",
            "--generation-database=none",
            "--no-color",
            "--report=json",
            f"--report-json-path={report_path}",
            *([f"--seed={seed}"] if seed else []),
        ]
        result = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=1800, check=False
        )
        output = result.stdout[-12000:] + result.stderr[-4000:]
        assert result.returncode == 0, output
        report = json.loads(report_path.read_text(encoding="utf-8"))
        assert report["failures"] == [], output
        assert report["errors"] == [], output
        assert report["operations"]["tested"] == operations, output
        assert report["test_cases"]["generated"] >= MIN_CASES, output
        assert service.process.poll() is None
