"""Jinja filters that quote template answers safely for the file type they land in.

Answers such as the description may hold quotes, backslashes or any unicode; pasting
them between quotes would break the generated Python or TOML.
"""

import json

from cookiecutter.utils import simple_filter


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
