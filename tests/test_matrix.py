"""The option matrix's arithmetic: the tiers cover what they claim, for today's options
and for the option set the template is growing into."""

from __future__ import annotations

import itertools

import pytest

from tests import matrix
from tests.conftest import CHOICES

GROWN = {
    "include_example_api": ["yes", "no"],
    "tracing": ["opentelemetry", "none"],
    "metrics": ["prometheus", "none"],
    "redis": ["no", "yes"],
    "broker": ["none", "rabbitmq", "nats"],
    "auth": ["none", "jwt"],
}
CASES = [pytest.param(matrix.CODE_OPTIONS, id="current"), pytest.param(GROWN, id="grown")]


@pytest.mark.parametrize("options", CASES)
def test_pairwise_covers_every_pair(options: dict[str, list[str]]) -> None:
    chosen = matrix.pairwise(options)
    for (a, a_values), (b, b_values) in itertools.combinations(options.items(), 2):
        for x, y in itertools.product(a_values, b_values):
            assert any(c[a] == x and c[b] == y for c in chosen), (a, x, b, y)
    assert chosen == matrix.pairwise(options), "not deterministic"
    full = matrix.full_product(options)
    assert len(full) == len({tuple(c.items()) for c in full})
    assert all(c in full for c in chosen)
    # Far fewer than the full product, and no more than twice the lower bound.
    largest = sorted((len(v) for v in options.values()), reverse=True)
    assert len(chosen) <= 2 * largest[0] * largest[1] < len(full) or len(full) <= 8  # noqa: PLR2004


@pytest.mark.parametrize("options", CASES)
def test_virtualenv_combinations_use_every_value(options: dict[str, list[str]]) -> None:
    combos = matrix.covering_values(options)
    for option, values in options.items():
        assert {c[option] for c in combos} == set(values), option
    assert len(combos) == max(len(v) for v in options.values())


def test_code_options_come_from_cookiecutter_json() -> None:
    assert set(matrix.CODE_OPTIONS) == {n for n in matrix.CODE_OPTION_NAMES if n in CHOICES}
    assert len(matrix.FULL) == len(list(itertools.product(*matrix.CODE_OPTIONS.values())))
    labels = [label for label, *_ in matrix.SUITES]
    assert labels[:3] == [f"{x}-py{p}" for x, p in zip(["defaults", "all-on", "all-off"], matrix.INTERPRETERS, strict=True)]
    all_off = matrix.SUITES[2]
    assert all_off[3] is False, "one suite runs on the throwaway PostgreSQL"
    assert set(all_off[2].values()) <= matrix.OFF_VALUES


def test_everything_on_runs_anywhere_and_rabbitmq_runs_where_its_server_is_named() -> None:
    """A fresh machine has no RabbitMQ and no package starts one: "all on" uses NATS, and
    the RabbitMQ suite asks for RABBITMQ_URL (set by .ci/run) instead of erroring."""
    suites = {label.rsplit("-py", 1)[0]: answers for label, _, answers, _ in matrix.SUITES}
    assert suites["all-on"]["broker"] == "nats"
    assert not set(suites["all-on"].values()) & matrix.OFF_VALUES
    assert matrix.servers_needed(suites["all-on"]) == []
    assert [v for v, _ in matrix.servers_needed(suites["broker-rabbitmq"])] == ["RABBITMQ_URL"]
    needing = [label for label, answers in suites.items() if matrix.servers_needed(answers)]
    assert needing == ["broker-rabbitmq"]
