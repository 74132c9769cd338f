"""Generated projects pass their own ruff, ruff format, mypy --strict and test suite.

One virtualenv per Python interpreter holds every dependency any option can need; each
baked project runs from its source tree (PYTHONPATH), so bakes never reinstall anything
and can share the environment. Projects get distinct names, so nothing collides either.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from tests.conftest import bake_ok

CODE_OPTIONS = {
    "include_example_api": ["yes", "no"],
    "tracing": ["opentelemetry", "none"],
    "metrics": ["prometheus", "none"],
    "auth": ["none", "jwt"],
}
# Test suites run for a representative set: defaults on every Python, everything off,
# mixed options, and one with DATABASE_URL unset (the throwaway PostgreSQL path).
SUITES = [
    pytest.param("3.12", {}, True, id="defaults-py3.12"),
    pytest.param("3.13", {"include_example_api": "no", "tracing": "none", "metrics": "none"}, True, id="all-off-py3.13"),
    pytest.param("3.11", {"tracing": "none"}, False, id="no-tracing-py3.11-embedded-postgres"),
    pytest.param("3.12", {"metrics": "none", "include_example_api": "no"}, True, id="no-metrics-no-example-py3.12"),
    pytest.param("3.12", {"auth": "jwt"}, True, id="auth-jwt-py3.12"),
]  # fmt: skip


def interpreter(version: str) -> str:
    """The interpreter for `version` if this machine has one, else the current one."""
    candidates = [shutil.which(f"python{version}")]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += [str(p / "bin" / "python") for p in sorted(pyenv.glob(f"{version}.*"))]
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return sys.executable


def shared_venv(python: str, tmp_root: Path, cookies: Any) -> Path:  # noqa: ANN401
    """A virtualenv with the dependencies of a fully featured project, built once."""
    project = bake_ok(cookies, auth="jwt")
    key = hashlib.sha256(
        (python + (project / "pyproject.toml").read_text(encoding="utf-8")).encode()
    ).hexdigest()[:12]
    venv = tmp_root / f"venv-{key}"
    with FileLock(str(venv) + ".lock"):
        if not (venv / "ready").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([python, "-m", "venv", str(venv)], check=True)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
            subprocess.run([*pip, "--upgrade", "pip"], check=True)
            # Install the project once to pull its dependencies, then drop the project
            # itself: each bake runs from its own tree.
            subprocess.run([*pip, f"{project}[dev]"], check=True)
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "uninstall", "--quiet", "-y", "my-service"],
                check=True,
            )
            (venv / "ready").touch()
    return venv


@pytest.fixture(scope="session")
def venv_root() -> Path:
    """Virtualenvs survive between runs on one machine (keyed by interpreter and deps)."""
    root = Path(os.environ.get("CHASSIS_VENV_DIR", Path.home() / ".cache" / "fastapi-chassis"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def run(venv: Path, project: Path, *args: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"


def project_env(project: Path, *, database_url: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{project / 'src'}{os.pathsep}{project}"
    env["MYPYPATH"] = str(project / "src")
    if not database_url:
        env.pop("DATABASE_URL", None)
    return env


@pytest.mark.parametrize(
    "answers",
    [dict(zip(CODE_OPTIONS, values, strict=True)) for values in itertools.product(*CODE_OPTIONS.values())],
    ids=lambda a: "-".join(f"{k[:7]}={v}" for k, v in a.items()),
)
def test_lint_and_typecheck(cookies: Any, venv_root: Path, answers: dict[str, str]) -> None:
    venv = shared_venv(sys.executable, venv_root, cookies)
    # Short names: the template is formatted for names of ordinary length.
    name = "Lint " + "".join(value[0] for value in answers.values())
    project = bake_ok(cookies, project_name=name, **answers)
    env = project_env(project, database_url=True)
    run(venv, project, "ruff", "check", "--no-cache", ".", env=env)
    run(venv, project, "ruff", "format", "--check", "--no-cache", ".", env=env)
    run(venv, project, "mypy", "--cache-dir", "/dev/null", env=env)


@pytest.mark.parametrize(("python_version", "answers", "database_url"), SUITES)
def test_generated_suite_passes(
    cookies: Any,  # noqa: ANN401
    venv_root: Path,
    python_version: str,
    answers: dict[str, str],
    *,
    database_url: bool,
) -> None:
    python = interpreter(python_version)
    venv = shared_venv(python, venv_root, cookies)
    name = f"Suite {python_version.replace('.', '')} " + "".join(v[0] for v in answers.values())
    project = bake_ok(cookies, project_name=name, python_version=python_version, **answers)
    env = project_env(project, database_url=database_url)
    run(venv, project, "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", env=env)
