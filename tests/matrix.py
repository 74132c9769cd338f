"""The option matrix: which code-shaping combinations each tier of tests covers.

Everything here is derived from two lists and cookiecutter.json, so adding an option to
the template (and its name to CODE_OPTION_NAMES) widens every tier with no other edit:

- FULL: every combination of the code-shaping options (bake, no template syntax left,
  byte-compile, ruff check);
- PAIRWISE: a covering set in which every pair of values of two options appears in at
  least one combination (ruff format --check, mypy --strict);
- SUITES: the generated test suite runs on the defaults, everything on (with the values
  whose servers the tests start themselves), everything off, and each value listed in
  OPTION_VALUE_SUITES, spread over the interpreters;
- VENV_COMBOS: the few combinations that together use every option value; the shared
  virtualenv holds the union of their dependencies.
"""

from __future__ import annotations

import itertools

from tests.conftest import CHOICES

# Options that change the generated code, in the order combinations are named. Names not
# (yet) in cookiecutter.json are ignored, so options can land in any order.
CODE_OPTION_NAMES = ["include_example_api", "tracing", "metrics", "redis", "broker", "auth"]
# Values that mean "this feature is absent".
OFF_VALUES = {"no", "none"}
# Whole generated suites for single option values, beyond defaults / all on / all off;
# one line per value a new option's issue asks to be run (options absent are skipped).
OPTION_VALUE_SUITES: list[tuple[str, str]] = [
    ("redis", "yes"),
    ("broker", "rabbitmq"),
    ("broker", "nats"),
    ("auth", "jwt"),
]
# Options a suite turns on besides its own value: with broker=nats and auth=jwt the
# generated `make dev` test runs every embedded part together (PostgreSQL, Valkey,
# nats-server and the development identity provider).
SUITE_EXTRAS: dict[str, dict[str, str]] = {"broker-nats": {"auth": "jwt"}}
INTERPRETERS = ["3.12", "3.13", "3.11"]
# Suites that run with DATABASE_URL, REDIS_URL and NATS_URL unset (RabbitMQ has no
# throwaway server: its suites always need RABBITMQ_URL).
THROWAWAY_SERVERS = {"all-off", "broker-nats"}
# Option values whose generated suite needs a server that no registry package can start
# (the tests start PostgreSQL, Valkey and nats-server themselves): the variable that names
# one, and an example. Such a suite is skipped, saying so, where the variable is unset;
# `.ci/run` sets it. "Everything on" picks another value, so it runs on any machine.
EXTERNAL_SERVERS: dict[tuple[str, str], tuple[str, str]] = {
    ("broker", "rabbitmq"): ("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"),
}

Answers = dict[str, str]

CODE_OPTIONS: dict[str, list[str]] = {
    name: CHOICES[name] for name in CODE_OPTION_NAMES if name in CHOICES
}
DEFAULTS: Answers = {name: values[0] for name, values in CODE_OPTIONS.items()}


def on(values: list[str]) -> str:
    """The first value that enables the feature."""
    return next((v for v in values if v not in OFF_VALUES), values[0])


def on_anywhere(option: str, values: list[str]) -> str:
    """The first value that enables the feature without a server the tests cannot start."""
    usable = [v for v in values if (option, v) not in EXTERNAL_SERVERS]
    return on(usable) if usable else on(values)


def servers_needed(answers: Answers) -> list[tuple[str, str]]:
    """(variable, example) of each server that `answers`' suite needs from the machine."""
    return [EXTERNAL_SERVERS[item] for item in answers.items() if item in EXTERNAL_SERVERS]


def off(values: list[str]) -> str:
    """The value that disables the feature (the first one if none does)."""
    return next((v for v in values if v in OFF_VALUES), values[0])


def full_product(options: dict[str, list[str]]) -> list[Answers]:
    """Every combination."""
    return [dict(zip(options, combo, strict=True)) for combo in itertools.product(*options.values())]


def pairs_of(answers: Answers) -> set[tuple[tuple[str, str], tuple[str, str]]]:
    items = sorted(answers.items())
    return set(itertools.combinations(items, 2))


def pairwise(options: dict[str, list[str]]) -> list[Answers]:
    """A small set of combinations covering every pair of values of any two options.

    Greedy and deterministic: repeatedly take, from the full product in its fixed order,
    the combination that covers the most pairs not yet covered (the first on ties).
    Not minimal in general, close to it for option counts like ours.
    """
    candidates = full_product(options)
    if len(options) < 2:  # noqa: PLR2004 - pairs need two options
        return candidates
    uncovered = set().union(*(pairs_of(c) for c in candidates))
    chosen: list[Answers] = []
    while uncovered:
        best = max(candidates, key=lambda c: len(pairs_of(c) & uncovered))
        chosen.append(best)
        uncovered -= pairs_of(best)
    return chosen


def covering_values(options: dict[str, list[str]]) -> list[Answers]:
    """As few combinations as it takes for every value of every option to appear once."""
    width = max((len(values) for values in options.values()), default=1)
    combos = []
    for i in range(width):
        combo = {name: values[i] if i < len(values) else on(values) for name, values in options.items()}
        if combo not in combos:
            combos.append(combo)
    return combos


def name(answers: Answers) -> str:
    """A readable, unique test id: `option=value` for each option set."""
    return ",".join(f"{option}={value}" for option, value in answers.items())


def suite_cases() -> list[tuple[str, str, Answers, bool]]:
    """(id, python version, answers, use the server URLs) for every whole-suite run."""
    cases: list[tuple[str, Answers]] = [
        ("defaults", {}),
        ("all-on", {o: on_anywhere(o, v) for o, v in CODE_OPTIONS.items()}),
        ("all-off", {o: off(v) for o, v in CODE_OPTIONS.items()}),
    ]
    cases += [
        (f"{option}-{value}", {option: value} | SUITE_EXTRAS.get(f"{option}-{value}", {}))
        for option, value in OPTION_VALUE_SUITES
        if value in CODE_OPTIONS.get(option, [])
    ]
    result = []
    for i, (label, answers) in enumerate(cases):
        python = INTERPRETERS[i % len(INTERPRETERS)]
        # These run without the server URLs: on the throwaway PostgreSQL, Valkey and
        # nats-server that the generated tests start themselves.
        result.append((f"{label}-py{python}", python, answers, label not in THROWAWAY_SERVERS))
    return result


FULL = full_product(CODE_OPTIONS)
PAIRWISE = pairwise(CODE_OPTIONS)
SUITES = suite_cases()
VENV_COMBOS = covering_values(CODE_OPTIONS)
