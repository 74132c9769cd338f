"""Secrets out of log lines: sensitive keys redacted, passwords cut out of URLs.

Both logging paths (structlog and the standard library) run `redact_secrets` on
every line, before the fields that the envelope adds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from structlog.typing import EventDict, WrappedLogger

__all__ = ["REDACTED", "redact_secrets", "redact_url_passwords"]

REDACTED: Final = "[REDACTED]"

# Substrings that mark a key as holding a secret. Matching errs on the side of
# redacting (``max_tokens`` is redacted too): a lost value is cheaper than a
# leaked credential.
_SENSITIVE_KEY: Final = re.compile(
    r"authorization|cookie|passw(?:or)?d|secret|token|dsn|database_url"
    r"|api[-_]?key|private[-_]?key|credential",
    re.IGNORECASE,
)
# scheme://user:password@ -> scheme://user:***@ (RFC 3986 userinfo cannot
# contain "/", "?", "#" or "@", which keeps the match from running on).
_DSN_PASSWORD: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:@/?#\s]*:)[^@/?#\s]*@")
_DSN_REPLACEMENT: Final = r"\1***@"

_SCALAR_TYPES: Final = frozenset({int, float, bool, type(None)})
_PAIR: Final = 2

# Key verdicts are cached: the set of keys a service logs is small, and a dict
# lookup is cheaper than a regex search. Bounded in case keys come from input.
_sensitive_cache: dict[str, bool] = {}
_SENSITIVE_CACHE_MAX: Final = 4096


def _is_sensitive(key: str) -> bool:
    verdict = _sensitive_cache.get(key)
    if verdict is None:
        verdict = _SENSITIVE_KEY.search(key) is not None
        if len(_sensitive_cache) < _SENSITIVE_CACHE_MAX:
            _sensitive_cache[key] = verdict
    return verdict


def redact_url_passwords(value: str) -> str:
    """Return `value` with the password of any ``scheme://user:password@`` in it as ``***``."""
    return _DSN_PASSWORD.sub(_DSN_REPLACEMENT, value) if "://" in value else value


def _redact_pair(item: Sequence[object]) -> object:
    # (name, value) pairs, such as ASGI or httpx header lists.
    name = item[0]
    if isinstance(name, bytes):
        name = name.decode("latin-1")
    if isinstance(name, str) and _is_sensitive(name):
        return (name, REDACTED)
    return [_redact(element) for element in item]


def _redact(value: object) -> object:
    if isinstance(value, str):
        return redact_url_passwords(value)
    if type(value) in _SCALAR_TYPES:
        return value
    if isinstance(value, bytes):
        return redact_url_passwords(value.decode("utf-8", "replace"))
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and _is_sensitive(key) else _redact(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [
            _redact_pair(item)
            if isinstance(item, (list, tuple)) and len(item) == _PAIR
            else _redact(item)
            for item in value
        ]
    return value


def redact_secrets(_logger: WrappedLogger, _method_name: str, event_dict: EventDict) -> EventDict:
    """Redact secrets from a log event (structlog processor).

    Values under keys that look sensitive (``authorization``, ``cookie``,
    ``password``, ``secret``, ``token``, ``dsn``, ``database_url``, ...; any
    case, nested mappings and ``(name, value)`` pairs included) become
    ``"[REDACTED]"``. Passwords inside URLs in any string become ``***``.
    Nested containers are copied, never modified in place.
    """
    cache = _sensitive_cache
    for key, value in event_dict.items():
        # The cache lookup inlined: this loop runs for every field of every line.
        sensitive = cache.get(key)
        if sensitive is None:
            sensitive = _is_sensitive(key)
        if sensitive:
            event_dict[key] = REDACTED
            continue
        kind = type(value)
        if kind is str:
            if "://" in value:
                event_dict[key] = _DSN_PASSWORD.sub(_DSN_REPLACEMENT, value)
        elif kind not in _SCALAR_TYPES:
            event_dict[key] = _redact(value)
    return event_dict
