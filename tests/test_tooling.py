"""The generated project's tooling, read by the tools its users run.

CI files against GitLab's and GitHub's published schemas (bundled with check-jsonschema,
offline), the GitHub workflow through zizmor (offline) and actionlint, the update bots'
configs against their schemas; and, in a baked project, the uv life cycle, the git
hooks and the image build stage replayed from the lock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import TEMPLATE, bake_ok
from tests.test_generated import uv

FULL_SHA = re.compile(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}")


def tool(name: str) -> str:
    """A command-line tool installed by tests/requirements.txt."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -r tests/requirements.txt"
    return found


def check(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


@pytest.mark.parametrize(
    ("ci", "files"),
    [
        ("github", {".github/workflows/ci.yml": "vendor.github-workflows", ".github/dependabot.yml": "vendor.dependabot"}),
        ("gitlab", {".gitlab-ci.yml": "vendor.gitlab-ci", "renovate.json": "vendor.renovate"}),
    ],
)  # fmt: skip
def test_ci_files_match_published_schemas(cookies: Any, ci: str, files: dict[str, str]) -> None:  # noqa: ANN401
    project = bake_ok(cookies, ci=ci)
    for rel, schema in files.items():
        check(tool("check-jsonschema"), "--builtin-schema", schema, str(project / rel))


def test_gitlab_has_no_job_named_after_a_keyword(cookies: Any) -> None:  # noqa: ANN401
    """`image`, `services`, `cache`... at the top level are pipeline settings, not jobs."""
    config = yaml.safe_load((bake_ok(cookies, ci="gitlab") / ".gitlab-ci.yml").read_text())
    reserved = {"image", "services", "cache", "before_script", "after_script", "variables",
                "stages", "include", "workflow", "default", "pages"}  # fmt: skip
    for key, value in config.items():
        if key in reserved:
            assert not (isinstance(value, dict) and "script" in value), f"job named {key!r}"


def test_github_workflow_zizmor_and_actionlint_clean(cookies: Any) -> None:  # noqa: ANN401
    project = bake_ok(cookies, ci="github", broker="rabbitmq")
    workflow = project / ".github" / "workflows" / "ci.yml"
    dependabot = project / ".github" / "dependabot.yml"
    # The regular persona at every severity: not one finding, on the workflow or Dependabot.
    output = check(tool("zizmor"), "--offline", "--no-progress", "--persona", "regular",
                   str(workflow), str(dependabot))  # fmt: skip
    assert "No findings to report" in output, output
    check(tool("actionlint"), "-no-color", str(workflow.relative_to(project)), cwd=project)
    steps = [s for job in yaml.safe_load(workflow.read_text())["jobs"].values() for s in job["steps"]]
    lines = workflow.read_text().splitlines()
    for step in steps:
        if "uses" in step:
            assert FULL_SHA.fullmatch(step["uses"]), f"not pinned to a commit: {step['uses']}"
            line = next(x for x in lines if step["uses"] in x)
            assert re.search(r"# v\d+\.\d+\.\d+$", line), f"no version comment: {line}"
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False


def test_precommit_config_is_plain_yaml() -> None:
    """No Jinja: `pre-commit autoupdate` can rewrite the file in a generated project."""
    text = (TEMPLATE / "{{cookiecutter.project_slug}}" / ".pre-commit-config.yaml").read_text()
    assert "{{" not in text
    assert "{%" not in text
    hooks = [h for repo in yaml.safe_load(text)["repos"] for h in repo["hooks"]]
    ids = {h["id"] for h in hooks}
    assert {"ruff-check", "ruff-format", "mypy", "hadolint", "uv-lock-check"} <= ids
    assert {"trailing-whitespace", "end-of-file-fixer", "check-yaml"} <= ids


def git(project: Path, *args: str) -> None:
    check("git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args, cwd=project)


def test_uv_life_cycle_hooks_and_locked_image_build(cookies: Any, tmp_path: Path) -> None:  # noqa: ANN401
    """`make install` writes uv.lock and is idempotent; the lock is in sync; the git hooks
    pass on the fresh project with no git host reachable; hadolint is clean; and the
    Dockerfile's build stage, replayed, installs from the lock and refuses a stale or
    missing one."""
    # A package name that sorts after `tests`: the import order must not depend on it.
    project = bake_ok(cookies, project_name="Weather Service")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = f"{Path(uv()).parent}{os.pathsep}{env['PATH']}"
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env["PRE_COMMIT_HOME"] = str(tmp_path / "pre-commit")
    git(project, "init", "--quiet")
    check("make", "install", cwd=project, env=env)
    lock = (project / "uv.lock").read_bytes()
    venv_files = sorted(p.name for p in (project / ".venv" / "lib").rglob("*.dist-info"))
    out = check("make", "install", cwd=project, env=env)
    assert (project / "uv.lock").read_bytes() == lock, "a second `make install` changed uv.lock"
    assert sorted(p.name for p in (project / ".venv" / "lib").rglob("*.dist-info")) == venv_files
    assert "Installed" not in out and "Uninstalled" not in out, out
    check(uv(), "sync", "--locked", cwd=project, env=env)
    git(project, "add", "--all")
    check(uv(), "run", "--frozen", "pre-commit", "run", "--all-files", cwd=project, env=env)
    check(str(project / ".venv" / "bin" / "hadolint"), "Dockerfile", cwd=project)

    # The build stage: what it runs, on a copy of the context, into a fresh environment.
    dockerfile = (project / "Dockerfile").read_text()
    build = dockerfile.split("AS runtime")[0]
    assert "uv sync --locked --no-dev --no-editable" in build
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md", "uv.lock"):
        shutil.copy2(project / name, context / name)
    shutil.copytree(project / "src", context / "src")
    image_env = {**env, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "opt-venv"), "UV_PYTHON": sys.executable}
    check(uv(), "sync", "--locked", "--no-dev", "--no-editable", cwd=context, env=image_env)
    site = next((tmp_path / "opt-venv" / "lib").glob("python3.*/site-packages"))
    package = site / "weather_service"
    assert (package / "__main__.py").is_file()
    assert list((package / "database" / "migrations").glob("*.sql"))
    assert not (site / "pytest").exists(), "dev tools in the image"
    assert not [p for p in site.glob("*.pth") if "weather_service" in p.name], "editable install"
    # A stale lock stops the build with uv's message; a missing one with ours.
    pyproject = context / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"httpx>=0.28",', '"httpx>=0.28",\n    "idna>=3",'))
    stale = subprocess.run(
        [uv(), "sync", "--locked", "--no-dev"], cwd=context, env=image_env, capture_output=True, text=True, check=False
    )
    assert stale.returncode != 0
    assert "lockfile" in stale.stderr.lower() or "uv.lock" in stale.stderr, stale.stderr
    (context / "uv.lock").unlink()
    guard = next(line for line in build.split("\nRUN ") if line.startswith("test -f uv.lock"))
    missing = subprocess.run(
        ["sh", "-c", guard.replace("\\\n", " ")], cwd=context, capture_output=True, text=True, check=False
    )
    assert missing.returncode != 0
    assert "uv.lock is missing" in missing.stderr


def test_dependabot_covers_uv_docker_and_actions(cookies: Any) -> None:  # noqa: ANN401
    config = yaml.safe_load((bake_ok(cookies, ci="github") / ".github" / "dependabot.yml").read_text())
    updates = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(updates) == {"uv", "docker", "github-actions"}
    # A new release waits a week (security updates are exempt from a cooldown).
    for ecosystem, update in updates.items():
        assert update["cooldown"]["default-days"] >= 7, ecosystem
    # The workflow's service images are updated by the docker updater, which reads `image:`.
    assert "/.github/workflows" in updates["docker"]["directories"]
    renovate = json.loads((bake_ok(cookies, ci="gitlab") / "renovate.json").read_text())
    assert renovate["lockFileMaintenance"]["enabled"] is True
    days, unit = renovate["minimumReleaseAge"].split()
    assert unit == "days"
    assert int(days) >= 7
    assert renovate["vulnerabilityAlerts"]["minimumReleaseAge"] is None
    assert not (bake_ok(cookies, ci="none") / "renovate.json").exists()


PINNED_IMAGE = re.compile(r"[a-z0-9./-]+:[\w.-]+@sha256:[0-9a-f]{64}")


@pytest.mark.parametrize("broker", ["none", "rabbitmq", "nats"])
def test_ci_service_images_are_pinned_to_digests(cookies: Any, broker: str) -> None:  # noqa: ANN401
    """Tag (what a bot bumps, what a reader sees) and digest (what runs) in each reference."""
    github = yaml.safe_load(
        (bake_ok(cookies, ci="github", broker=broker) / ".github" / "workflows" / "ci.yml").read_text()
    )
    images = [
        service["image"]
        for job in github["jobs"].values()
        for service in job.get("services", {}).values()
    ]
    gitlab = yaml.safe_load((bake_ok(cookies, ci="gitlab", broker=broker) / ".gitlab-ci.yml").read_text())
    for job in gitlab.values():
        if isinstance(job, dict) and "script" in job:
            services = job.get("services", [])
            images += [s["name"] if isinstance(s, dict) else s for s in services]
            if job.get("stage") == "build":
                images.append(job["image"])
    assert any(image.startswith("postgres:") for image in images)
    if broker != "none":
        assert any(image.startswith(f"{broker}:") for image in images)
    for image in images:
        assert PINNED_IMAGE.fullmatch(image), f"not pinned to a digest: {image}"


def test_network_policy_selects_the_service_pods_and_allows_what_they_need(cookies: Any) -> None:  # noqa: ANN401
    from tests.test_deploy import kustomize  # noqa: PLC0415 - the deploy tests' renderer

    project = bake_ok(cookies, http_port="9090")
    docs = kustomize(project / "deploy" / "k8s" / "overlays" / "example")
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    # Ingress: the container's named HTTP port only, from the ingress namespace only.
    (rule,) = policy["spec"]["ingress"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert [named[p["port"]] for p in rule["ports"]] == [9090]
    assert all("namespaceSelector" in peer for peer in rule["from"])
    egress = {(p["protocol"], p["port"]) for r in policy["spec"]["egress"] for p in r["ports"]}
    assert {("UDP", 53), ("TCP", 53), ("TCP", 5432)} <= egress
