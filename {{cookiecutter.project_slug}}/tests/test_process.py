"""The real process: `python -m {{ cookiecutter.package_name }}` starts, answers, stops cleanly on SIGTERM."""

from __future__ import annotations

import httpx
import orjson

from tests.service_process import running_service


def test_starts_answers_and_exits_zero_on_sigterm(database_url: str) -> None:
    with running_service(database_url, shutdown__drain_seconds="0.2") as service:
        assert httpx.get(f"{service.url}/health/ready", timeout=5).status_code == 200
        assert service.stop() == 0
        output = service.output()
    records = [orjson.loads(line) for line in output.splitlines()]  # every line is JSON
    events = [record["event"] for record in records]
    assert "started" in events
    assert events[-1] == "stopped"
