"""Jinja filters: check the answers, and quote them safely for the file type they land in.

Answers such as the description may hold quotes, backslashes or any unicode; pasting
them between quotes would break the generated Python or TOML.
"""

import importlib.util
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from cookiecutter.exceptions import FailedHookException
from cookiecutter.utils import simple_filter

_RULES = Path(__file__).resolve().parent / "hooks" / "pre_gen_project.py"


def _problems() -> Callable[[dict[str, object]], list[str]]:
    """The pre-generation hook's `problems`: one set of rules for both checks."""
    spec = importlib.util.spec_from_file_location("pre_gen_project_rules", _RULES)
    if spec is None or spec.loader is None:
        raise ImportError(_RULES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    problems: Callable[[dict[str, object]], list[str]] = module.problems
    return problems


@simple_filter
def checked_answers(answers: Mapping[str, object]) -> str:
    """Refuse bad answers while cookiecutter renders them: before it creates anything.

    cookiecutter creates the project directory, named by project_slug, before the
    pre-generation hook runs: an empty slug, one holding a path separator or one too
    long for a file name fails there (or leaves directories behind) first. Rendered as
    the last answer (cookiecutter.json's ``__answers_checked``), this prints the hook's
    one-line ``ERROR:`` messages and stops. A replay renders only the keys its file
    lacks, without the answers: then the hook checks them, as before.
    """
    if "project_slug" not in answers:
        return ""
    errors = _problems()(dict(answers))
    for message in errors:
        print(f"ERROR: {message}", file=sys.stderr)  # noqa: T201 - cookiecutter's user reads it
    if errors:
        msg = "Answers rejected (see above); nothing was written"
        raise FailedHookException(msg)
    return ""


@simple_filter
def pystr(value: object) -> str:
    """A Python string literal, quoted the way ruff's formatter would quote it."""
    text = str(value)
    if '"' in text and "'" not in text:
        return repr(text)  # single quotes: no escaping needed
    return json.dumps(text, ensure_ascii=False)


@simple_filter
def tomlstr(value: object) -> str:
    """A TOML basic string (JSON escaping without \\u-escaping non-ASCII is valid TOML)."""
    return json.dumps(str(value), ensure_ascii=False)
