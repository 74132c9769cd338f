"""The ``tracestate`` parser, member by member, against the current W3C grammar."""

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
        ([b"foo@=1"], "foo@=1"),
        ([b"foo@@bar=1"], "foo@@bar=1"),
        ([b"0=1,9x@y@z=2,a_-*/@=3"], "0=1,9x@y@z=2,a_-*/@=3"),
        ([f"{LONGEST_KEY}=1".encode()], f"{LONGEST_KEY}=1"),
        ([f"{LONGEST_KEY}a=1,ok=1".encode()], "ok=1"),  # 257 characters
        ([b"Upper=1,_a=1,-a=1,@a=1,a.b=1,a b=1,ok=1"], "ok=1"),
        # Values: 0*255(chr) nblk-chr, printable ASCII without "," and "=".
        ([f"k={LONGEST_VALUE}".encode()], f"k={LONGEST_VALUE}"),
        ([f"k=x{LONGEST_VALUE},ok=1".encode()], "ok=1"),  # 257 characters
        ([b"k= leading spaces"], "k= leading spaces"),
        ([b"k=,ok=1"], "ok=1"),
        ([b"k=a=b,ok=1"], "ok=1"),
        ([b"k=\x7f,k=\x19,k=\xe9,ok=1"], "ok=1"),
        # Lists: OWS around members, empty members, several header lines.
        ([b" \ta=1 \t, ,,\t b=2\t"], "a=1,b=2"),
        ([b"a=1", b"", b"b=2"], "a=1,b=2"),
        # A repeated key: the leftmost (most recent) one is kept, the rest goes on.
        ([b"a=1,b=2,a=3,c=4"], "a=1,b=2,c=4"),
        ([b"a=1", b"a=2,b=2"], "a=1,b=2"),
        ([b""], ""),
        ([b"garbage"], ""),
    ],
)
def test_valid_members_are_kept_and_each_bad_one_dropped(lines: list[bytes], expected: str) -> None:
    assert parse_tracestate(lines).to_header() == expected


def test_at_most_32_members_are_kept_dropping_from_the_right() -> None:
    members = [f"k{index}=v" for index in range(MAX_MEMBERS + 8)]
    header = ",".join(["bad key=1", "k0=duplicate", *members]).replace("k1=v", "k0=v")
    kept = parse_tracestate([header.encode()])
    assert MAX_MEMBERS == 32
    assert list(kept) == [f"k{index}" for index in (0, *range(2, MAX_MEMBERS + 1))]
    assert kept["k0"] == "duplicate"


def test_the_parsed_state_is_a_trace_state_that_round_trips() -> None:
    state = parse_tracestate([b"foo@=1,b=2"])
    assert dict(state) == {"foo@": "1", "b": "2"}
    assert parse_tracestate([state.to_header().encode()]).to_header() == "foo@=1,b=2"


def test_nothing_is_logged_for_a_hostile_header(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    parse_tracestate([b"foo@@bar=1,EVIL\x1b[31m=1,a=1,a=2," * 100])
    assert caplog.records == []
