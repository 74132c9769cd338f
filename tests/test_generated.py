"""Generated projects pass their own ruff, ruff format, mypy --strict, import contracts and tests.

The option matrix (tests/matrix.py) decides which combinations each tier covers. One
virtualenv per Python interpreter holds every dependency any option value can need;
each baked project runs from its source tree (PYTHONPATH), so bakes never reinstall
anything and can share the environment. Projects get distinct names, so nothing
collides either.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from tests.conftest import bake_ok
from tests.matrix import FULL, PAIRWISE, SUITES, VENV_COMBOS, name, servers_needed

# Template syntax that survived rendering. `${{ ... }}` is GitHub Actions' own syntax.
LEFTOVER = re.compile(r"(?<!\$)\{\{|\{%")
# The ops pack holds Prometheus (`{{ $labels.x }}`) and Grafana (`{{route}}`) templates on
# purpose (its sources are copied without rendering): only Jinja's own syntax is left over.
OPS_PACK = ("ops/fragments/", "ops/generate.py", "ops/grafana/dashboards/", "ops/prometheus/rules")
OPS_PACK_FILES = ("docs/runbook.md", "deploy/k8s/base/prometheusrule.yaml")
JINJA_LEFTOVER = re.compile(r"\{\{-?\s*cookiecutter|\{%")


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


def uv() -> str:
    """uv from the tests' own environment (tests/requirements.txt), else from PATH."""
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.exists() else shutil.which("uv")
    assert found, "uv is not installed: pip install -r tests/requirements.txt"
    return found


def requirements(project: Path) -> list[str]:
    """Runtime dependencies and the dev group of a baked project."""
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    dev = [r for r in pyproject.get("dependency-groups", {}).get("dev", []) if isinstance(r, str)]
    return [*pyproject["project"]["dependencies"], *dev]


_VENVS: dict[str, Path] = {}


def shared_venv(python: str, tmp_root: Path, cookies: Any) -> Path:  # noqa: ANN401
    """A virtualenv with the union of the dependencies of every option value, built once.

    The combinations in VENV_COMBOS use every option value between them (a broker that
    is RabbitMQ in one and NATS in another, for instance); their requirements are merged.
    """
    if python in _VENVS:  # this worker has it already: no bakes to read requirements from
        return _VENVS[python]
    needed: set[str] = set()
    for answers in VENV_COMBOS:
        needed.update(requirements(bake_ok(cookies, **answers)))
    wanted = sorted(needed)
    key = hashlib.sha256("\n".join([python, "compiled", *wanted]).encode()).hexdigest()[:12]
    venv = tmp_root / f"venv-{key}"
    with FileLock(str(venv) + ".lock"):
        if not (venv / "ready").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([uv(), "venv", "--quiet", "--python", python, str(venv)], check=True)
            # Bytecode compiled up front, as pip does: without it the first processes to
            # import the service compile it concurrently, and a uvicorn worker that takes
            # more than its 5 s health-check timeout to start gets killed.
            python_ = str(venv / "bin" / "python")
            subprocess.run(
                [uv(), "pip", "install", "--quiet", "--compile-bytecode", "--python", python_, *wanted],
                check=True,
            )
            (venv / "ready").write_text("\n".join(wanted) + "\n", encoding="utf-8")
    _VENVS[python] = venv
    return venv


@pytest.fixture(scope="session")
def venv_root() -> Path:
    """Virtualenvs survive between runs on one machine (keyed by interpreter and deps)."""
    root = Path(os.environ.get("CHASSIS_VENV_DIR", Path.home() / ".cache" / "fastapi-chassis"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def run(venv: Path, project: Path, *args: str, env: dict[str, str] | None = None) -> None:
    try:
        result = subprocess.run(
            [str(venv / "bin" / args[0]), *args[1:]],
            cwd=project,
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        # What the run printed names the stuck test (pytest -v) and faulthandler's stacks.
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        pytest.fail(f"{' '.join(args)} timed out after {exc.timeout} s:\n{out[-3000:]}\n{err[-12000:]}")
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"


def project_env(project: Path, *, database_url: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{project / 'src'}{os.pathsep}{project}"
    env["MYPYPATH"] = str(project / "src")
    if not database_url:  # the throwaway servers' path
        for variable in ("DATABASE_URL", "REDIS_URL", "NATS_URL"):
            env.pop(variable, None)
    return env


@pytest.mark.parametrize("answers", FULL, ids=[name(a) for a in FULL])
def test_matrix_full_bakes_compiles_and_lints(cookies: Any, venv_root: Path, answers: dict[str, str]) -> None:
    """Tier 1, every code-shaping combination: bake, no template syntax, compile, ruff, contracts."""
    venv = shared_venv(sys.executable, venv_root, cookies)
    # Short names: the template is formatted for names of ordinary length.
    project = bake_ok(cookies, project_name=f"Full {FULL.index(answers)}", **answers)
    for path in project.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            relative = path.relative_to(project).as_posix()
            ops_pack = relative.startswith(OPS_PACK) or relative in OPS_PACK_FILES
            leftover = (JINJA_LEFTOVER if ops_pack else LEFTOVER).search(text)
            assert leftover is None, f"{path}: template syntax left: {text[leftover.start():][:60]!r}"
    assert compileall.compile_dir(project, quiet=1, force=True), "byte-compilation failed"
    env = project_env(project, database_url=True)
    run(venv, project, "ruff", "check", "--no-cache", ".", env=env)
    # The architecture (pyproject.toml's import-linter contracts): layers, independent options.
    run(venv, project, "lint-imports", "--no-cache", env=env)


@pytest.mark.parametrize("answers", PAIRWISE, ids=[name(a) for a in PAIRWISE])
def test_matrix_pairwise_formats_and_typechecks(
    cookies: Any,  # noqa: ANN401
    venv_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
    answers: dict[str, str],
) -> None:
    """Tier 2, every pair of option values in some combination: ruff format, mypy --strict."""
    venv = shared_venv(sys.executable, venv_root, cookies)
    project = bake_ok(cookies, project_name=f"Pair {PAIRWISE.index(answers)}", **answers)
    env = project_env(project, database_url=True)
    run(venv, project, "ruff", "format", "--check", "--no-cache", ".", env=env)
    # One mypy cache per worker: third-party modules are analysed once, not per bake.
    cache = tmp_path_factory.getbasetemp() / "mypy-cache"
    run(venv, project, "mypy", "--cache-dir", str(cache), env=env)


@pytest.mark.parametrize(
    ("python_version", "answers", "database_url"),
    [pytest.param(python, answers, url, id=label) for label, python, answers, url in SUITES],
)
def test_generated_suite_passes(
    cookies: Any,  # noqa: ANN401
    venv_root: Path,
    python_version: str,
    answers: dict[str, str],
    *,
    database_url: bool,
) -> None:
    """Tier 3: the generated project's whole test suite (see matrix.SUITES)."""
    for variable, example in servers_needed(answers):
        if not os.environ.get(variable):
            pytest.skip(f"needs a server the tests cannot start: set {variable} (e.g. {example}); bash .ci/run sets it")
    python = interpreter(python_version)
    venv = shared_venv(python, venv_root, cookies)
    index = next(i for i, case in enumerate(SUITES) if case[1:] == (python_version, answers, database_url))
    project = bake_ok(cookies, project_name=f"Suite {index}", python_version=python_version, **answers)
    env = project_env(project, database_url=database_url)
    # A test stuck for minutes dumps every thread's stack, so a hang names its cause.
    hang = ("-o", "faulthandler_timeout=180")
    run(venv, project, "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *hang, env=env)
