"""Template tests for the ops pack (ops/, docs/runbook.md, the PrometheusRule).

Bakes the defaults, everything on and two bakes without parts, then checks: promtool
accepts the rules and passes their unit tests (and fails them when a burn rate is
changed, so the tests can fail), the dashboard loads into the Grafana dashboard model of
`grafana-foundation-sdk` with nothing lost, each option's alerts, panels and runbook
sections appear exactly when it is baked, and the Kubernetes and compose wiring.
The generated project's own tests/test_ops.py checks the metric names against a live
service; the generated suites run it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cookiecutter.main import cookiecutter
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from tests.test_deploy import kustomize

TEMPLATE = Path(__file__).resolve().parents[1]
BAKES: dict[str, dict[str, str]] = {
    "defaults": {},
    "everything": {
        "project_name": "Every Thing",
        "redis": "yes",
        "broker": "rabbitmq",
        "auth": "jwt",
        "kubernetes": "yes",
        "ci": "gitlab",
    },
    "bare": {"project_name": "Bare", "redis": "no", "broker": "none", "kubernetes": "no"},
    "nats": {"project_name": "Natty", "broker": "nats", "redis": "no", "ci": "github"},
    "no-metrics": {"project_name": "Quiet", "metrics": "none", "broker": "nats"},
}
REDIS_ALERTS = {"RateLimiterFailingOpen"}
BROKER_ALERTS = {
    "MessageBacklogGrowing",
    "MessagesDeadLettered",
    "OutboxEventsRefused",
    "OutboxNotPublishing",
    "WorkerMetricsMissing",
}
CORE_ALERTS = {
    "APIAvailabilityBudgetBurnFast",
    "APIAvailabilityBudgetBurnSlow",
    "APILatencyBudgetBurnFast",
    "APILatencyBudgetBurnSlow",
    "CircuitBreakerOpen",
    "ReadinessFailing",
    "EventLoopLagHigh",
}


@pytest.fixture(scope="module")
def baked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ops")
    return {
        name: Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(out / name), extra_context=ctx))
        for name, ctx in BAKES.items()
    }


def promtool() -> str:
    """promtool, which CI always has; elsewhere its tests are skipped with how to get it."""
    path = shutil.which("promtool")
    if path is None:
        message = "promtool missing: apt-get install prometheus (bash .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, check=False)


def alerts(project: Path) -> set[str]:
    rules = yaml.safe_load((project / "ops/prometheus/rules.yml").read_text(encoding="utf-8"))
    return {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


@pytest.mark.parametrize("bake", ["defaults", "everything"])
def test_rules_pass_promtool_check_and_unit_tests(baked: dict[str, Path], bake: str) -> None:
    rules = baked[bake] / "ops/prometheus"
    check = run_promtool("check", "rules", str(rules / "rules.yml"))
    assert check.returncode == 0, check.stdout + check.stderr
    files = [rules / "slo_test.yml", rules / "rules_test.yml"]
    test = run_promtool("test", "rules", *map(str, files))
    assert test.returncode == 0, test.stdout + test.stderr
    tests = [t for f in files for t in yaml.safe_load(f.read_text(encoding="utf-8"))["tests"]]
    fires = {t["alert_rule_test"][0]["alertname"] for t in tests if t["alert_rule_test"][0]["exp_alerts"]}
    quiet = {t["alert_rule_test"][0]["alertname"] for t in tests if not t["alert_rule_test"][0]["exp_alerts"]}
    assert fires == quiet == alerts(baked[bake]), "each alert: a case that fires, one that must not"


def test_unit_tests_fail_when_a_burn_rate_changes(baked: dict[str, Path], tmp_path: Path) -> None:
    """The promtool tests can fail: a page threshold of 20x instead of 14.4x misses the burn."""
    source = baked["defaults"] / "ops/prometheus"
    rules = (source / "rules.yml").read_text(encoding="utf-8")
    assert "14.4 * 0.001" in rules
    (tmp_path / "rules.yml").write_text(rules.replace("14.4 * 0.001", "20 * 0.001"), encoding="utf-8")
    shutil.copy(source / "slo_test.yml", tmp_path / "slo_test.yml")
    result = run_promtool("test", "rules", str(tmp_path / "slo_test.yml"))
    assert result.returncode != 0
    assert "APIAvailabilityBudgetBurnFast fires on a sharp burn" in result.stdout + result.stderr


def test_burn_rate_alerts_follow_the_sre_workbook(baked: dict[str, Path]) -> None:
    rules = yaml.safe_load((baked["defaults"] / "ops/prometheus/rules.yml").read_text(encoding="utf-8"))
    by_name = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    fast = by_name["APIAvailabilityBudgetBurnFast"]
    assert fast["labels"]["severity"] == "page"
    for long, short, rate in (("1h", "5m", "14.4"), ("6h", "30m", "6")):
        assert f"ratio_rate{long}{{" in fast["expr"] and f"ratio_rate{short}{{" in fast["expr"]
        assert f"> ({rate} * 0.001)" in fast["expr"]
    slow = by_name["APILatencyBudgetBurnSlow"]
    assert slow["labels"]["severity"] == "ticket"
    for long, short, rate in (("1d", "2h", "3"), ("3d", "6h", "1")):
        assert f"ratio_rate{long}{{" in slow["expr"] and f"ratio_rate{short}{{" in slow["expr"]
        assert f"> ({rate} * 0.01)" in slow["expr"]
    for rule in by_name.values():
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["runbook_url"] == f"docs/runbook.md#{rule['alert'].lower()}"


@pytest.mark.parametrize("bake", ["defaults", "everything", "bare", "nats"])
def test_dashboard_loads_into_the_grafana_model(baked: dict[str, Path], bake: str) -> None:
    """Every field survives a round trip through the SDK's types: none unknown or mistyped."""
    register_default_plugins()
    board = json.loads((baked[bake] / "ops/grafana/dashboards/service.json").read_text(encoding="utf-8"))
    model = Dashboard.from_json(board)
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    assert _lost(board, again) == []
    assert model.panels
    ids = [panel.id_val for panel in model.panels]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert all(t["datasource"]["type"] == "prometheus" for t in panel["targets"])


def _lost(ours: Any, theirs: Any, path: str = "") -> list[str]:
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            return [path]
        return [
            lost
            for key, value in ours.items()
            for lost in ([f"{path}/{key}"] if key not in theirs else _lost(value, theirs[key], f"{path}/{key}"))
        ]
    if isinstance(ours, list):
        if not isinstance(theirs, list) or len(ours) != len(theirs):
            return [path]
        return [lost for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) for lost in _lost(a, b, f"{path}[{i}]")]
    return [] if ours == theirs else [f"{path}: {ours!r} != {theirs!r}"]


def test_each_option_brings_its_own_alerts_panels_and_runbook(baked: dict[str, Path]) -> None:
    expected = {
        "defaults": CORE_ALERTS | REDIS_ALERTS,
        "everything": CORE_ALERTS | REDIS_ALERTS | BROKER_ALERTS,
        "bare": CORE_ALERTS,
        "nats": CORE_ALERTS | BROKER_ALERTS,
    }
    for bake, names in expected.items():
        project = baked[bake]
        assert alerts(project) == names, bake
        runbook = (project / "docs/runbook.md").read_text(encoding="utf-8")
        assert {line[3:] for line in runbook.splitlines() if line.startswith("## ")} == names | {
            "Service level objectives"
        }
        board = (project / "ops/grafana/dashboards/service.json").read_text(encoding="utf-8")
        assert ("redis_commands_total" in board) == (bake in {"defaults", "everything"})
        assert ("messages_consumed_total" in board) == (bake in {"everything", "nats"})
        fragments = {p.stem for p in (project / "ops/fragments").glob("*.toml")}
        redis = {"redis"} if REDIS_ALERTS <= names else set()
        broker = {"broker"} if BROKER_ALERTS <= names else set()
        assert fragments == {"service"} | redis | broker
        # The project's generator reproduces exactly what the bake holds.
        check = subprocess.run(
            ["python3", "ops/generate.py", "--check"], cwd=project, capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stderr


def test_metrics_none_bakes_no_ops_pack(baked: dict[str, Path]) -> None:
    project = baked["no-metrics"]
    for gone in ("ops", "docs", "tests/test_ops.py", "tests/ops_pack.py", "tests/test_ops_worker.py"):
        assert not (project / gone).exists(), gone
    assert "prometheusrule" not in (project / "deploy/k8s/base/kustomization.yaml").read_text(encoding="utf-8")
    assert "prometheus" not in yaml.safe_load((project / "compose.yaml").read_text(encoding="utf-8"))["services"]
    assert "ops:" not in (project / "Makefile").read_text(encoding="utf-8")
    assert "promtool" not in (project / ".github/workflows/ci.yml").read_text(encoding="utf-8")


def test_prometheus_rule_in_kustomize_matches_the_rules_file(baked: dict[str, Path]) -> None:
    """The PrometheusRule CRD's schema is not bundled offline: checked by structure and promtool."""
    project = baked["everything"]
    docs = kustomize(project / "deploy/k8s/overlays/example")
    found = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert len(found) == 1
    resource = found[0]
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["metadata"]["name"] == "every-thing"
    assert resource["metadata"]["namespace"]  # the overlay's namespace reached it
    assert set(resource) == {"apiVersion", "kind", "metadata", "spec"}
    rules = yaml.safe_load((project / "ops/prometheus/rules.yml").read_text(encoding="utf-8"))
    assert resource["spec"] == rules
    assert not (baked["bare"] / "deploy").exists()


def test_compose_runs_prometheus_and_grafana_in_the_ops_profile(baked: dict[str, Path]) -> None:
    project = baked["everything"]
    services = yaml.safe_load((project / "compose.yaml").read_text(encoding="utf-8"))["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["ops"]
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            assert (project / source).exists(), f"{name} mounts a missing {source}"
    assert all("profiles" not in s for n, s in services.items() if n not in {"prometheus", "grafana"})
    scrape = yaml.safe_load((project / "ops/prometheus/prometheus.yml").read_text(encoding="utf-8"))
    jobs = {c["job_name"]: c["static_configs"][0]["targets"] for c in scrape["scrape_configs"]}
    assert jobs == {"every-thing": ["app:8000"], "every-thing-worker": ["worker:8081"]}
    check = run_promtool("check", "config", "--syntax-only", str(project / "ops/prometheus/prometheus.yml"))
    assert check.returncode == 0, check.stdout + check.stderr
    provisioning = project / "ops/grafana/provisioning"
    source = yaml.safe_load((provisioning / "datasources/prometheus.yaml").read_text(encoding="utf-8"))
    assert source["datasources"][0]["url"] == "http://prometheus:9090"


def test_generated_ci_installs_promtool(baked: dict[str, Path]) -> None:
    gitlab = yaml.safe_load((baked["everything"] / ".gitlab-ci.yml").read_text(encoding="utf-8"))
    assert any("install -y" in line and "prometheus" in line for line in gitlab["test"]["script"])
    github = yaml.safe_load((baked["nats"] / ".github/workflows/ci.yml").read_text(encoding="utf-8"))
    steps = github["jobs"]["test"]["steps"]
    names = [step.get("name", "") for step in steps]
    assert names.index(next(n for n in names if "promtool" in n)) < names.index("pytest")


def test_template_ci_installs_promtool() -> None:
    script = (TEMPLATE / ".ci/run").read_text(encoding="utf-8")
    assert "command -v promtool" in script
    assert "apt-get install -y" in script and "prometheus" in script
