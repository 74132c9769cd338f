"""Bad answers: one clear line naming the option and value, exit non-zero, no directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEMPLATE

BAD_ANSWERS = [
    ("project_slug", "1bad", "must start with a lowercase letter"),
    ("project_slug", "Bad_Slug", "lowercase letters, digits and single hyphens"),
    ("project_slug", "a--b", "single hyphens"),
    ("project_slug", "x" * 64, "at most 63"),
    # cookiecutter names the project directory after the slug before the hook runs.
    ("project_slug", "", "must start with a lowercase letter"),
    ("project_slug", "a/b", "single hyphens"),
    ("project_slug", "../escape", "must start with a lowercase letter"),
    ("project_slug", "x" * 300, "at most 63"),
    ("package_name", "x" * 300, "at most 63"),
    ("package_name", "class", "keyword"),
    ("package_name", "json", "shadow"),
    ("package_name", "fastapi", "shadow"),
    ("package_name", "my-pkg", "valid Python identifier"),
    ("package_name", "9lives", "valid Python identifier"),
    ("http_port", "0", "1 to 65535"),
    ("http_port", "65536", "1 to 65535"),
    ("http_port", "http", "1 to 65535"),
    ("author_email", "not-an-email", "name@example.com"),
    ("author_email", "a@b", "name@example.com"),
    ("version", "one.two", "PEP 440"),
    ("version", "1.0-beta-final", "PEP 440"),
    ("description", "two\nlines", "single line"),
    ("project_name", "   ", "must not be empty"),
    ("python_version", "2.7", "one of 3.12, 3.13, 3.11"),
    ("license", "GPL", "one of MIT"),
]


def bake_cli(output: Path, **answers: str) -> subprocess.CompletedProcess[str]:
    args = [f"{key}={value}" for key, value in answers.items()]
    return subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", str(TEMPLATE), "-o", str(output), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(("option", "value", "why"), BAD_ANSWERS)
def test_bad_answer_is_refused_cleanly(tmp_path: Path, option: str, value: str, why: str) -> None:
    result = bake_cli(tmp_path, **{option: value})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if " is invalid: " in line]
    if option == "python_version" or option == "license":
        # cookiecutter itself refuses a value outside a choice list before any hook runs.
        assert errors or value in result.stderr + result.stdout
    else:
        assert len(errors) == 1, result.stderr
        assert f"{option}={value!r}" in errors[0]
        assert why in errors[0]
    assert list(tmp_path.iterdir()) == [], "a rejected answer must leave nothing behind"


def test_good_answers_with_cli(tmp_path: Path) -> None:
    result = bake_cli(tmp_path, project_name="Billing API", http_port="9000", version="2.0.0rc1")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "billing-api" / "src" / "billing_api" / "app.py").is_file()
    assert "make install" in result.stdout
