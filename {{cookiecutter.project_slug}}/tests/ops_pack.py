"""What the ops pack (ops/) reads: its queries, the metric names in them, and a scrape's names.

The generator is loaded from ops/generate.py itself, so the tests see the same
fragments and SLO settings as `make ops`.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
# Every metric the pack reads is selected with braces (at least its job).
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def generator() -> ModuleType:
    """ops/generate.py as a module."""
    spec = importlib.util.spec_from_file_location("ops_generate", ROOT / "ops" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def metric_names(queries: Iterable[str]) -> set[str]:
    """The metric names a set of PromQL queries select (recorded `a:b:c` names left out)."""
    return {name for query in queries for name in SELECTOR.findall(query) if ":" not in name}


def fragment_queries(stem: str) -> list[str]:
    """Every alert and panel query of ops/fragments/<stem>.toml, `$job` filled in."""
    ops = generator()
    config, fragments = ops.load()
    fragment: dict[str, Any] = dict(fragments)[stem]
    queries = [alert["expr"] for alert in fragment.get("alert", [])]
    queries += [t["expr"] for panel in fragment.get("panel", []) for t in panel["targets"]]
    return [ops.substitute(query, config) for query in queries]


def slo_queries() -> list[str]:
    """The recording rules of the SLIs (written by the generator, not by a fragment)."""
    ops = generator()
    config, fragments = ops.load()
    recordings = ops.rule_groups(config, fragments)[0]["rules"]
    return [rule["expr"] for rule in recordings]


def generated_queries() -> list[str]:
    """Every query in the generated files: rule expressions and dashboard targets."""
    ops = generator()
    config, fragments = ops.load()
    queries = [
        rule["expr"] for group in ops.rule_groups(config, fragments) for rule in group["rules"]
    ]
    board = json.loads((ROOT / "ops" / "grafana" / "dashboards" / "service.json").read_text())
    queries += [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    return queries


def exported_names(exposition: str) -> set[str]:
    """Names in a scrape: every sample's, and every declared family's sample names.

    A labelled family declares itself (`# TYPE`) before its first sample exists (no
    circuit transition yet, no message consumed): it is exported all the same.
    """
    names = set()
    for family in text_string_to_metric_families(exposition):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names
