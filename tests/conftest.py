"""Shared helpers for the template's own tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

TEMPLATE = Path(__file__).resolve().parent.parent
CONTEXT: dict[str, Any] = json.loads((TEMPLATE / "cookiecutter.json").read_text(encoding="utf-8"))

# Every multiple-choice option and its values, straight from cookiecutter.json.
CHOICES: dict[str, list[str]] = {
    name: values
    for name, values in CONTEXT.items()
    if isinstance(values, list) and not name.startswith("_")
}


def bake_ok(cookies: Any, **answers: str) -> Path:  # noqa: ANN401 - pytest-cookies has no types
    """Bake with `answers`, assert success, return the project directory."""
    result = cookies.bake(extra_context=answers)
    assert result.exception is None, result.exception
    assert result.exit_code == 0
    path: Path = result.project_path
    return path


@pytest.fixture(scope="session")
def template() -> Path:
    """The template's root directory."""
    return TEMPLATE


@pytest.hookimpl(tryfirst=True)  # before the terminal reporter reads the report options
def pytest_configure(config: pytest.Config) -> None:
    """Register the markers the template's tests use; report skips with their reasons."""
    config.addinivalue_line("markers", "bench: the benchmark harness smoke test (slow)")
    # A skipped suite names the server it needs and the variable to set (`-r s`).
    if "N" not in config.option.reportchars:
        config.option.reportchars += "s"


# Option-matrix tiers (tests/test_generated.py): combinations that passed, by tier.
MATRIX_TIERS = {
    "test_matrix_full_bakes_compiles_and_lints": ("FULL", "every combination: bake, no template syntax, byte-compile, ruff check, lint-imports"),
    "test_matrix_pairwise_formats_and_typechecks": ("PAIRWISE", "pairwise covering set: ruff format --check, mypy --strict"),
    "test_generated_suite_passes": ("SUITES", "whole generated test suites"),
}  # fmt: skip
_matrix_passed: dict[str, int] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count passed matrix tests (under xdist the controller sees every worker's reports)."""
    function = report.nodeid.split("::")[-1].split("[")[0]
    if function in MATRIX_TIERS:
        _matrix_passed.setdefault(function, 0)
        if report.when == "call" and report.passed:
            _matrix_passed[function] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:  # noqa: ANN401 - pytest's TerminalReporter
    """Say how many combinations each tier of the option matrix covered."""
    from tests import matrix  # noqa: PLC0415 - matrix imports this module

    if os.environ.get("PYTEST_XDIST_WORKER") or not _matrix_passed:
        return
    terminalreporter.section("option matrix")
    for function, (attribute, what) in MATRIX_TIERS.items():
        if function not in _matrix_passed:
            continue  # not selected in this run
        total = len(getattr(matrix, attribute))
        terminalreporter.write_line(f"{_matrix_passed[function]}/{total} combinations passed: {what}")
    terminalreporter.write_line(f"code-shaping options: {', '.join(matrix.CODE_OPTIONS)}")
