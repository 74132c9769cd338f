"""Shared helpers for the template's own tests."""

from __future__ import annotations

import json
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


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers the template's tests use."""
    config.addinivalue_line("markers", "bench: the benchmark harness smoke test (slow)")
