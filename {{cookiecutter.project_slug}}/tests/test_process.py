"""The real process: `python -m {{ cookiecutter.package_name }}` starts, logs JSON, stops cleanly on SIGTERM."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from tests.service_process import running_service

ENVELOPE = {"timestamp", "level", "logger", "event", "service", "version", "environment"}


def with_password(url: str, password: str) -> str:
    """`url` with a password added; the test servers trust local users and ignore it."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}:{password}@{host}"))


def test_json_lines_from_start_to_exit_zero_with_ids_and_no_secrets(database_url: str) -> None:
    dsn = with_password(database_url, "hunter2-db-password")
    headers = {
        "authorization": "Bearer s3cr3t-token",
        "cookie": "session=c00kie-value",
        "x-request-id": "req-123",
    }
    with running_service(dsn, shutdown__drain_seconds="0.2") as service:
        assert httpx.get(f"{service.url}/health/ready", timeout=5).status_code == 200
        answered = httpx.get(f"{service.url}/no-such-page", headers=headers, timeout=5)
        # 404; or 401 where callers must show a valid token (auth=jwt), as this one is fake.
        assert answered.status_code in {401, 404}, answered.text
        assert answered.headers["x-request-id"] == "req-123"
        assert service.stop() == 0
        output = service.output()

    records = [orjson.loads(line) for line in output.splitlines()]  # every line is JSON
    assert records
    for record in records:
        assert set(record) >= ENVELOPE, record
    events = [record["event"] for record in records]
    assert "started" in events
    assert "stopped" in events
    access = [r for r in records if r["event"] == "request" and r["path"] == "/no-such-page"]
    assert len(access) == 1
    assert access[0]["request_id"] == "req-123"
    assert access[0]["status"] == answered.status_code
    for secret in ("hunter2-db-password", "s3cr3t-token", "c00kie-value"):
        assert secret not in output
