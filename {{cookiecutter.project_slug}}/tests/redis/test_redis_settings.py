"""Redis settings from the environment: nested policies, JSON overrides, no URL echoed."""

from __future__ import annotations

import pytest

from {{ cookiecutter.package_name }}.redis.rate_limit import RateLimiter
from {{ cookiecutter.package_name }}.settings import ENV_PREFIX, Settings, SettingsError, load_settings


def test_policies_and_overrides_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{ENV_PREFIX}ENVIRONMENT", "development")
    monkeypatch.setenv(f"{ENV_PREFIX}REDIS__URL", "redis://:secret@cache:6379/2")
    monkeypatch.setenv(f"{ENV_PREFIX}REDIS__RATE_LIMIT__DEFAULT__LIMIT", "7")
    monkeypatch.setenv(
        f"{ENV_PREFIX}REDIS__RATE_LIMIT__ROUTES",
        '{"POST /items": {"limit": 2, "window_seconds": 10, "burst": 1}, '
        '"/reports/{id}": {"limit": 5, "window_seconds": 60}}',
    )
    settings = Settings()
    limits = settings.redis.rate_limit
    assert limits.default.limit == 7
    assert limits.default.window_seconds == 60
    limiter = RateLimiter(limits)
    assert limiter.policy_for("POST", "/items").policy_header == b'"route0";q=2;w=10'
    assert limiter.policy_for("GET", "/items").name == "default"
    assert limiter.policy_for("DELETE", "/reports/12").name == "route1"
    assert limiter.policy_for("GET", "/reports/12/x").name == "default"
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REDIS__URL", "http://user:hunter2@cache:6379"),
        ("REDIS__RATE_LIMIT__DEFAULT__LIMIT", "0"),
        ("REDIS__RATE_LIMIT__DEFAULT__WINDOW_SECONDS", "-1"),
        ("REDIS__COMMAND_TIMEOUT", "0"),
        ("REDIS__RATE_LIMIT__ROUTES", '{"POST /items": {"limit": 0}}'),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(f"{ENV_PREFIX}ENVIRONMENT", "development")
    monkeypatch.setenv(f"{ENV_PREFIX}{variable}", value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert f"{ENV_PREFIX}{variable}" in str(caught.value)
    assert "hunter2" not in str(caught.value)
