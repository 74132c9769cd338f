"""Baking: every option value, awkward answers, no template syntax left behind."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import CHOICES, bake_ok

JINJA = re.compile(r"\{\{-?\s*cookiecutter|\{%-?\s*(?:if|elif|else|endif|for|endfor|raw|endraw|set)\b")
TEXT_SUFFIXES = {".py", ".toml", ".md", ".yaml", ".yml", ".json", ".sql", ".cfg", ".txt", ""}


def text_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.name.startswith("."))]


def assert_well_formed(root: Path) -> None:
    """No template syntax left; Python, TOML, YAML and JSON all parse."""
    for path in text_files(root):
        text = path.read_text(encoding="utf-8")
        leftover = JINJA.search(text)
        assert leftover is None, f"{path}: leftover template syntax {leftover.group()!r}"
        if path.suffix == ".py":
            ast.parse(text, filename=str(path))
        elif path.suffix == ".toml":
            tomllib.loads(text)
        elif path.suffix in {".yaml", ".yml"}:
            list(yaml.safe_load_all(text))
        elif path.suffix == ".json":
            json.loads(text)
    assert not (root / "conditional_files.toml").exists()


def test_defaults(cookies: Any) -> None:
    project = bake_ok(cookies)
    assert project.name == "my-service"
    assert_well_formed(project)
    package = project / "src" / "my_service"
    for module in ("app.py", "database/pool.py", "resilience/breaker.py", "health/probes.py",
                   "observability/logs/context.py", "observability/tracing/spans.py",
                   "observability/metrics/families.py", "items/routes.py"):
        assert (package / module).is_file(), module
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "my-service"
    answers = json.loads((project / ".cookiecutter.json").read_text())["cookiecutter"]
    assert answers["project_name"] == "My Service"
    # Derived values are recorded (a replay cannot derive them); the template's own and
    # this machine's keys are not.
    assert answers["__env_prefix"] == "MY_SERVICE_"
    assert not [key for key in answers if key.startswith("_") and not key.startswith("__")]
    assert "__prompts__" not in answers


@pytest.mark.parametrize(
    ("option", "value"), [(o, v) for o, values in CHOICES.items() for v in values]
)
def test_every_choice(cookies: Any, option: str, value: str) -> None:
    project = bake_ok(cookies, **{option: value})
    assert_well_formed(project)
    answers = json.loads((project / ".cookiecutter.json").read_text())["cookiecutter"]
    assert answers[option] == value


# (option, value, paths that must be absent; with the other value they must exist)
MANIFEST_CASES = [
    ("include_example_api", "no", ["src/my_service/items", "src/my_service/database/migrations/0001_items.sql", "tests/test_items.py"]),
    ("tracing", "none", ["src/my_service/observability/tracing", "tests/test_tracing.py"]),
    ("metrics", "none", ["src/my_service/observability/metrics", "tests/test_metrics.py"]),
    ("redis", "no", ["src/my_service/redis", "tests/redis"]),
    ("broker", "none", ["src/my_service/messaging", "tests/test_outbox.py"]),
    ("kubernetes", "no", ["deploy"]),
    ("auth", "none", ["src/my_service/auth", "tests/test_auth.py", "tests/auth_support.py", "tests/identity_provider.py"]),
]  # fmt: skip


@pytest.mark.parametrize(("option", "value", "paths"), MANIFEST_CASES)
def test_manifest_removes_whole_files(cookies: Any, option: str, value: str, paths: list[str]) -> None:
    without = bake_ok(cookies, **{option: value})
    other = next(v for v in CHOICES[option] if v != value)
    with_ = bake_ok(cookies, **{option: other})
    for path in paths:
        assert not (without / path).exists(), path
        assert (with_ / path).exists(), path
    # The code of a removed option is not referenced anywhere else either.
    module = Path(paths[0]).stem
    for source in (without / "src").rglob("*.py"):
        assert f".{module} import" not in source.read_text(), source


def test_everything_on_keeps_a_folder_per_concern(cookies: Any) -> None:
    """Entry points alone at the package's top; no folder crowded; an option is a folder."""
    project = bake_ok(cookies, redis="yes", broker="nats", auth="jwt")
    package = project / "src" / "my_service"
    assert sorted(p.name for p in package.glob("*.py")) == [
        "__init__.py", "__main__.py", "app.py", "settings.py"
    ]
    for folder in [package, *(p for p in package.rglob("*") if p.is_dir())]:
        modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        assert len(modules) <= 12, f"{folder}: {len(modules)} modules"  # noqa: PLR2004
    for option in ("auth", "redis", "messaging", "items"):
        assert (package / option / "part.py").is_file(), option


@pytest.mark.parametrize(
    ("ci", "present", "absent"),
    [
        ("github", [".github/workflows/ci.yml"], [".gitlab-ci.yml"]),
        ("gitlab", [".gitlab-ci.yml"], [".github"]),
        ("none", [], [".github", ".gitlab-ci.yml"]),
    ],
)
def test_ci_choice_keeps_only_its_workflow(cookies: Any, ci: str, present: list[str], absent: list[str]) -> None:
    project = bake_ok(cookies, ci=ci)
    for path in present:
        assert (project / path).is_file()
    for path in absent:
        assert not (project / path).exists()


AWKWARD = [
    {"project_name": 'Zoë\'s "Quoted" Service', "description": 'It says "hi", \\ and it\'s fine: {braces} ✓ 🚀'},
    {"project_name": "Ünïcödé Ñame", "author_name": "Jürgen O'Brien-Šťastný"},
    {"project_name": "A " + "very long name " * 3, "description": "x" * 300},
    {"project_name": "tabs and  spaces", "description": "<html> & 'quotes' `backticks` $HOME"},
]


@pytest.mark.parametrize("answers", AWKWARD)
def test_awkward_answers_bake_clean(cookies: Any, answers: dict[str, str]) -> None:
    project = bake_ok(cookies, **answers)
    assert_well_formed(project)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    if "description" in answers:
        assert pyproject["project"]["description"] == answers["description"]
    app_py = next((project / "src").glob("*/app.py")).read_text(encoding="utf-8")
    titles = [
        node.value.value
        for node in ast.walk(ast.parse(app_py))
        if isinstance(node, ast.keyword) and node.arg == "title" and isinstance(node.value, ast.Constant)
    ]
    assert titles == [answers["project_name"]]


def test_app_template_wires_each_option_in_two_blocks_at_most(template: Path) -> None:
    """app.py stays readable: an option is an import and a wiring line, never a mix of two."""
    package = template / "{{cookiecutter.project_slug}}" / "src" / "{{cookiecutter.package_name}}"
    source = (package / "app.py").read_text(encoding="utf-8")
    blocks: dict[str, int] = {}
    for condition in re.findall(r"\{%-?\s*(?:el)?if (.+?)\s*-?%\}", source):
        options = set(re.findall(r"cookiecutter\.(\w+)", condition))
        assert len(options) == 1, f"a condition names {sorted(options)}: {condition}"
        option = options.pop()
        blocks[option] = blocks.get(option, 0) + 1
    assert blocks, "no option is wired in app.py"
    assert all(count <= 2 for count in blocks.values()), blocks  # noqa: PLR2004


@pytest.mark.parametrize(
    ("answers", "needed", "absent"),
    [
        ({}, ["DATABASE_URL", "REDIS__URL"], ["AUTH__", "BROKER__"]),
        ({"redis": "no"}, ["DATABASE_URL"], ["REDIS__", "AUTH__", "BROKER__"]),
        ({"auth": "jwt"}, ["DATABASE_URL", "AUTH__ISSUER", "AUTH__AUDIENCE"], ["BROKER__"]),
        ({"broker": "rabbitmq"}, ["DATABASE_URL", "BROKER__URL=amqp://"], ["AUTH__"]),
        ({"broker": "nats", "redis": "no"}, ["DATABASE_URL", "BROKER__URL=nats://"], ["REDIS__"]),
    ],
    ids=["defaults", "redis-no", "auth-jwt", "rabbitmq", "nats"],
)
def test_env_example_lists_what_the_options_need(
    cookies: Any, answers: dict[str, str], needed: list[str], absent: list[str]  # noqa: ANN401
) -> None:
    """Each required or feature-enabling setting of the bake, set, with a comment above it.

    The generated suite checks the same against the settings model itself
    (`test_env_example_sets_each_required_or_feature_setting_with_a_comment`).
    """
    project = bake_ok(cookies, project_name="Env Check", **answers)
    lines = (project / ".env.example").read_text().splitlines()
    for setting in needed:
        index = next((i for i, line in enumerate(lines) if line.startswith(f"ENV_CHECK_{setting}")), None)
        assert index is not None, f"ENV_CHECK_{setting} is missing"
        assert lines[index - 1].startswith("#"), f"ENV_CHECK_{setting} has no comment"
    for prefix in absent:
        assert not any(f"_{prefix}" in line for line in lines), prefix


@pytest.mark.parametrize(
    "answers",
    [{"broker": "none", "metrics": "none"}, {"broker": "nats", "metrics": "prometheus"}],
    ids=["options-off", "options-on"],
)
def test_every_make_target_runs_its_own_recipe(cookies: Any, answers: dict[str, str]) -> None:  # noqa: ANN401
    """A removed option's target leaves no glued line behind (`mypymigrate:` once did)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    project = bake_ok(cookies, **answers)
    makefile = (project / "Makefile").read_text(encoding="utf-8")
    phony = re.search(r"^\.PHONY: (.+)$", makefile, re.MULTILINE)
    assert phony is not None
    targets = phony.group(1).split()
    assert ("worker" in targets) == (answers["broker"] != "none")
    assert ("ops" in targets) == (answers["metrics"] != "none")
    for target in targets:
        assert re.search(rf"^{re.escape(target)}:  ## \S", makefile, re.MULTILINE), target
        shown = subprocess.run(
            ["make", "-n", target], cwd=project, capture_output=True, text=True, check=False
        )
        assert shown.returncode == 0, (target, shown.stderr)
        assert shown.stdout.strip(), target
    typecheck = subprocess.run(
        ["make", "-n", "typecheck"], cwd=project, capture_output=True, text=True, check=True
    )
    assert typecheck.stdout.strip().endswith("mypy"), typecheck.stdout
