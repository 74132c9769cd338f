"""The update path: recorded answers replay to the same project, and cruft updates it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEMPLATE

ANSWERS = {
    "project_name": "Ledger Sync",
    "description": 'Moves "ledgers" \\ between systems; naïve → fine',
    "tracing": "none",
    "http_port": "9100",
}


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def isolated_env(tmp_path: Path) -> dict[str, str]:
    """cookiecutter and cruft keep replays and clones under tmp_path, git commits anonymously."""
    config = tmp_path / "cookiecutter-config.yaml"
    config.write_text(
        f"cookiecutters_dir: {json.dumps(str(tmp_path / 'cookiecutters'))}\n"
        f"replay_dir: {json.dumps(str(tmp_path / 'replay'))}\n",
        encoding="utf-8",
    )
    return os.environ | {
        "COOKIECUTTER_CONFIG": str(config),
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_recorded_answers_replay_to_an_identical_project(
    tmp_path: Path, isolated_env: dict[str, str]
) -> None:
    first, again = tmp_path / "first", tmp_path / "regen"
    args = [f"{key}={value}" for key, value in ANSWERS.items()]
    run(sys.executable, "-m", "cookiecutter", "--no-input", TEMPLATE, "-o", first, *args,
        env=isolated_env)  # fmt: skip
    project = first / "ledger-sync"

    # The README's update flow, verbatim.
    run(sys.executable, "-m", "cookiecutter", "--replay-file", project / ".cookiecutter.json",
        TEMPLATE, "-o", again, env=isolated_env)  # fmt: skip

    regenerated = tree(again / "ledger-sync")
    assert regenerated == tree(project)
    answers = json.loads(regenerated[".cookiecutter.json"])["cookiecutter"]
    assert answers["description"] == ANSWERS["description"]
    assert answers["__env_prefix"] == "LEDGER_SYNC_"


def git(*args: str, cwd: Path, env: dict[str, str]) -> str:
    return run("git", *args, cwd=cwd, env=env)


def test_cruft_update_applies_a_template_commit_and_keeps_local_changes(
    tmp_path: Path, isolated_env: dict[str, str]
) -> None:
    env = isolated_env
    # A git repository holding a copy of the template: cruft follows commits.
    repo = tmp_path / "template"
    shutil.copytree(
        TEMPLATE, repo, ignore=shutil.ignore_patterns(".git", "__pycache__", ".*_cache")
    )
    git("init", "-q", "-b", "main", cwd=repo, env=env)
    git("add", "-A", cwd=repo, env=env)
    git("commit", "-q", "-m", "first", cwd=repo, env=env)

    out = tmp_path / "out"
    cruft = Path(sys.executable).parent / "cruft"
    run(cruft, "create", repo, "--no-input", "--output-dir", out,
        "--extra-context", json.dumps(ANSWERS), env=env)  # fmt: skip
    project = out / "ledger-sync"
    git("init", "-q", "-b", "main", cwd=project, env=env)
    git("add", "-A", cwd=project, env=env)
    git("commit", "-q", "-m", "baked", cwd=project, env=env)
    app = project / "src" / "ledger_sync" / "app.py"
    app.write_text(app.read_text(encoding="utf-8") + "# owned by the team now\n", encoding="utf-8")
    git("commit", "-q", "-am", "local change", cwd=project, env=env)

    # A second template commit: a changed file and a new one, both using answers.
    template_project = repo / "{{cookiecutter.project_slug}}"
    readme = template_project / "README.md"
    readme.write_text(
        readme.read_text(encoding="utf-8") + "\nUpdated for {{ cookiecutter.project_name }}.\n",
        encoding="utf-8",
    )
    (template_project / "UPGRADING.md").write_text(
        "Package: {{ cookiecutter.package_name }}\n", encoding="utf-8"
    )
    git("add", "-A", cwd=repo, env=env)
    git("commit", "-q", "-m", "second", cwd=repo, env=env)
    head = git("rev-parse", "HEAD", cwd=repo, env=env).strip()

    run(cruft, "update", "--skip-apply-ask", cwd=project, env=env)

    assert (project / "README.md").read_text(encoding="utf-8").endswith(
        "\nUpdated for Ledger Sync.\n"
    )
    assert (project / "UPGRADING.md").read_text(encoding="utf-8") == "Package: ledger_sync\n"
    assert app.read_text(encoding="utf-8").endswith("# owned by the team now\n")
    assert json.loads((project / ".cruft.json").read_text(encoding="utf-8"))["commit"] == head
    run(cruft, "check", cwd=project, env=env)
