"""Settings: defaults, environment variables, and errors that name the variable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel, SecretStr

from {{ cookiecutter.package_name }}.settings import (
    ENV_PREFIX,
    NESTED_DELIMITER,
    Settings,
    SettingsError,
    load_settings,
)
from tests.service_process import free_port, service_env


def test_nested_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{ENV_PREFIX}DATABASE_URL", "postgresql://u:p@db/app")
    monkeypatch.setenv(f"{ENV_PREFIX}DB__POOL_MAX_SIZE", "33")
    monkeypatch.setenv(f"{ENV_PREFIX}DB__PGBOUNCER", "true")
    monkeypatch.setenv(f"{ENV_PREFIX}LOG__LEVEL", "debug")
    settings = load_settings()
    assert settings.db.pool_max_size == 33
    assert settings.db.pgbouncer is True
    assert settings.log.level == "DEBUG"
    assert "p@db" not in repr(settings)  # the DSN is a secret


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("PORT", "not-a-port", "PORT"),
        ("PORT", "70000", "PORT"),
        ("DB__POOL_MAX_SIZE", "0", "DB__POOL_MAX_SIZE"),
        ("LOG__FORMAT", "xml", "LOG__FORMAT"),
        ("DATABASE_URL", "mysql://u:hunter2@h/db", "DATABASE_URL"),
        ("ENVIRONMENT", "prod", "ENVIRONMENT"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(f"{ENV_PREFIX}DATABASE_URL", "postgresql://u:hunter2@db/app")
    monkeypatch.setenv(f"{ENV_PREFIX}{variable}", value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert f"{ENV_PREFIX}{named}" in str(error.value)
    assert "hunter2" not in str(error.value)


def test_database_url_required_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(f"{ENV_PREFIX}DATABASE_URL", raising=False)
    monkeypatch.setenv(f"{ENV_PREFIX}ENVIRONMENT", "production")
    with pytest.raises(SettingsError, match=f"{ENV_PREFIX}DATABASE_URL"):
        load_settings()


def test_pool_min_above_max_is_refused() -> None:
    with pytest.raises(ValueError, match="pool_min_size"):
        Settings(database_url="postgresql://h/db", db={"pool_min_size": 5, "pool_max_size": 2})


def test_bad_setting_exits_before_binding_the_port() -> None:
    port = free_port()
    env = service_env("postgresql://u:hunter2@127.0.0.1:1/db", port, workers="zero")
    result = subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.package_name }}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"{ENV_PREFIX}WORKERS" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def env_names(model: type[BaseModel], prefix: str) -> list[str]:
    """Every environment variable a settings model reads."""
    names = []
    for field_name, field in model.model_fields.items():
        name = f"{prefix}{field_name.upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += env_names(annotation, f"{name}{NESTED_DELIMITER}")
        else:
            names.append(name)
    return names


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(rf"`({ENV_PREFIX}[A-Z_]+)", readme))
    wildcards = re.findall(rf"`({ENV_PREFIX}[A-Z_]+)\*`", readme)
    missing = [
        name
        for name in env_names(Settings, ENV_PREFIX)
        if name not in documented and not any(name.startswith(w) for w in wildcards)
    ]
    assert missing == []


def settings_a_user_must_set(model: type[BaseModel], prefix: str) -> list[str]:
    """The variables without a default, and the secrets: the connections a user points."""
    names = []
    for field_name, field in model.model_fields.items():
        name = f"{prefix}{field_name.upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += settings_a_user_must_set(annotation, f"{name}{NESTED_DELIMITER}")
        elif field.is_required() or SecretStr in (annotation, *get_args(annotation)):
            names.append(name)
    return names


def test_env_example_sets_each_required_or_feature_setting_with_a_comment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = (Path(__file__).parent.parent / ".env.example").read_text().splitlines()
    assigned = {}
    for index, line in enumerate(lines):
        name, equals, value = line.partition("=")
        if equals and not line.startswith("#"):
            assert lines[index - 1].startswith("#"), f"{name} has no comment above it"
            assigned[name] = value
    needed = settings_a_user_must_set(Settings, ENV_PREFIX)
    assert f"{ENV_PREFIX}DATABASE_URL" in needed
    assert [name for name in needed if name not in assigned] == []
    # And the example's values are valid settings, by themselves.
    for name in os.environ:
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in assigned.items():
        monkeypatch.setenv(name, value)
    Settings(_env_file=None)
