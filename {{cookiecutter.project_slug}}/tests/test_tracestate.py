"""The ``tracestate`` parser against the current W3C grammar and its limits.

The cases follow the W3C Trace Context test suite at its default strictness (level 2):
a list that breaks the grammar or the limits anywhere is discarded whole.
"""

from __future__ import annotations

import logging

import pytest

from {{ cookiecutter.package_name }}.observability.tracing.tracestate import MAX_MEMBERS, parse_tracestate

LONGEST_KEY = "a" + "@" * 255
LONGEST_VALUE = " " * 255 + "~"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"], "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        # Keys: (lcalpha / DIGIT) 0*255 keychar; keychar includes "@" anywhere.
        ([b"foo@=1,bar=2"], "foo@=1,bar=2"),
        ([b"foo@@bar=1,bar=2"], "foo@@bar=1,bar=2"),
        ([b"0=1,9x@y@z=2,a_-*/@=3"], "0=1,9x@y@z=2,a_-*/@=3"),
        ([b"foo=1", f"{LONGEST_KEY}=1".encode()], f"foo=1,{LONGEST_KEY}=1"),
        # Values: 0*255(chr) nblk-chr, printable ASCII without "," and "=".
        ([f"k={LONGEST_VALUE}".encode()], f"k={LONGEST_VALUE}"),
        ([b"k= leading spaces"], "k= leading spaces"),
        # Lists: OWS around members, empty members, several header lines.
        ([b" \ta=1 \t, ,,\t b=2\t"], "a=1,b=2"),
        ([b"a=1", b"", b"b=2"], "a=1,b=2"),
        # A repeated key: the leftmost (most recent) one is kept, the rest goes on.
        ([b"a=1,b=2,a=3,c=4"], "a=1,b=2,c=4"),
        ([b"a=1", b"a=2,b=2"], "a=1,b=2"),
        ([b""], ""),
    ],
)
def test_a_valid_list_is_kept(lines: list[bytes], expected: str) -> None:
    assert parse_tracestate(lines).to_header() == expected


@pytest.mark.parametrize(
    "lines",
    [
        # Keys: too long (257 characters), upper case, a first character that is not
        # lcalpha or a digit, characters outside keychar.
        [b"foo=1", f"{LONGEST_KEY}a=1".encode()],
        [b"FOO=1,ok=1"],
        [b"ok=1,_a=1"],
        [b"ok=1,-a=1"],
        [b"@foo=1,bar=2"],
        [b"foo.bar=1,ok=1"],
        [b"foo =1,ok=1"],
        # Values: too long (257), empty, containing "=", outside printable ASCII.
        [f"k=x{LONGEST_VALUE},ok=1".encode()],
        [b"foo=,bar=3"],
        [b"foo=bar=baz"],
        [b"ok=1,k=\x7f"],
        [b"ok=1,k=\x19"],
        [b"ok=1,k=\xe9"],
        [b"ok=1,garbage"],
        # The malformed member in a later header line spoils the earlier lines too.
        [b"ok=1,fine=2", b"Bad=3"],
    ],
)
def test_a_list_with_a_malformed_member_is_discarded_whole(lines: list[bytes]) -> None:
    assert parse_tracestate(lines).to_header() == ""


def test_32_members_are_kept_and_33_discard_the_list() -> None:
    members = [f"bar{index:02}={index:02}" for index in range(1, MAX_MEMBERS + 2)]
    assert MAX_MEMBERS == 32
    lines = [",".join(members[start : start + 10]).encode() for start in range(0, 30, 10)]
    kept = parse_tracestate([*lines, b"bar31=31,bar32=32", b" , "])  # empty members: no count
    assert list(kept) == [f"bar{index:02}" for index in range(1, 33)]
    assert parse_tracestate([*lines, b"bar31=31,bar32=32,bar33=33"]).to_header() == ""
    # A repeated key is a list-member too.
    assert parse_tracestate([*lines, b"bar31=31,bar32=32,bar01=x"]).to_header() == ""


def test_the_parsed_state_is_a_trace_state_that_round_trips() -> None:
    state = parse_tracestate([b"foo@=1,b=2"])
    assert dict(state) == {"foo@": "1", "b": "2"}
    assert parse_tracestate([state.to_header().encode()]).to_header() == "foo@=1,b=2"


def test_nothing_is_logged_for_a_hostile_header(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    parse_tracestate([b"foo@@bar=1,EVIL\x1b[31m=1,a=1,a=2," * 100])
    parse_tracestate([b"foo@@bar=1,a=1,a=2," * 100])
    assert caplog.records == []
