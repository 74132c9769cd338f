"""The ops pack: generated files up to date, rules that pass promtool, metrics that exist."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.ops_pack import (
    ROOT,
    exported_names,
    fragment_queries,
    generated_queries,
    generator,
    metric_names,
    slo_queries,
)
from tests.service_process import running_service
from tests.session_context import CLIENT_HEADERS

if TYPE_CHECKING:
    from pathlib import Path

PROMETHEUS = ROOT / "ops" / "prometheus"


def promtool() -> str:
    """promtool's path; CI installs it, elsewhere the test says how to get it."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (CI must install it: see the CI file)")
        pytest.skip("promtool not installed: apt-get install prometheus, brew install prometheus")
    return path


def test_generated_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "ops" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_rules_pass_promtool_check() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(PROMETHEUS / "rules.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_quiet_in_promtool_unit_tests() -> None:
    tests = [str(PROMETHEUS / name) for name in ("slo_test.yml", "rules_test.yml")]
    result = subprocess.run(
        [promtool(), "test", "rules", *tests],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_case_that_fires_it_and_one_that_must_not() -> None:
    ops = generator()
    config, fragments = ops.load()
    groups = ops.rule_groups(config, fragments)
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    cases = ops.slo_tests(config, groups[1]["rules"]) + ops.fragment_tests(
        config, fragments, groups[2]["rules"]
    )
    firing = {
        test["alert_rule_test"][0]["alertname"]
        for test in cases
        if test["alert_rule_test"][0]["exp_alerts"]
    }
    quiet = {
        test["alert_rule_test"][0]["alertname"]
        for test in cases
        if not test["alert_rule_test"][0]["exp_alerts"]
    }
    assert alerts == firing == quiet
    for group in groups[1:]:
        for rule in group["rules"]:
            assert rule["annotations"]["summary"]
            assert rule["annotations"]["runbook_url"].endswith("#" + rule["alert"].lower())
    runbook = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    for alert in alerts:
        assert f"\n## {alert}\n" in runbook


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses every panel query (as a recording rule; Grafana's interval filled)."""
    board = generated_queries()
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for number, query in enumerate(board):
        expr = query.replace("$__rate_interval", "5m").replace("\n", " ")
        lines += [f"      - record: dashboard_query_{number}", f"        expr: {expr!r}"]
    rules = tmp_path / "dashboard.yml"
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = subprocess.run(
        [promtool(), "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_query_belongs_to_a_fragment_or_the_slos() -> None:
    """The per-option tests below cover every metric the generated files read."""
    stems = [path.stem for path in (ROOT / "ops" / "fragments").glob("*.toml")]
    covered = metric_names(slo_queries())
    for stem in stems:
        covered |= metric_names(fragment_queries(stem))
    assert metric_names(generated_queries()) == covered


def test_every_metric_the_pack_reads_is_exported_by_the_service(database_url: str) -> None:
    needed = metric_names(slo_queries() + fragment_queries("service"))
    with (
        running_service(database_url) as service,
        httpx.Client(base_url=service.url, headers=CLIENT_HEADERS, timeout=10) as http,
    ):
        for _ in range(3):
            assert http.get("/openapi.json").status_code == 200
            assert http.get("/health/ready").status_code == 200
        http.get("/no-such-route")  # 404, or 401 with authentication: either is counted
        exposition = http.get("/metrics").text
    missing = needed - exported_names(exposition)
    assert not missing, f"used by ops/ but not exported: {sorted(missing)}"
