"""The dashboard and the alert rules stay right however many instances watch one store: each
`etl serve`, and each machine's textfile of `etl status --format prometheus`, computes the
store's metrics from the whole store, so a sum over instances counts each action once per
instance. Only what a process counts of itself (the webhooks it received) adds up."""

import json
import re
from pathlib import Path

import yaml

from etl import serve

DEPLOY = Path(__file__).parents[2] / "deploy"

# an aggregation by `sum`, its `by (...)` or `without (...)` before its argument, if any
SUM = re.compile(r"\bsum\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\(")


def queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "etl-dashboard.json").read_text())
    found = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "etl-rules.yml").read_text())
    return found + [r["expr"] for group in rules["groups"] for r in group["rules"]]


def summed(query: str) -> list[str]:
    """The metrics named inside each sum() of the query."""
    names = []
    for match in SUM.finditer(query):
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(query[end], 0)
            end += 1
        names += re.findall(r"\betl_[a-z_]+", query[match.end() : end])
    return names


def test_no_query_adds_up_what_each_instance_counts_of_the_whole_store() -> None:
    own = tuple(family.name for family in serve.ServerMetrics().registry.collect())
    added = {(name, query) for query in queries() for name in summed(query)}
    assert {name for name, _ in added if name.startswith(own)}  # the webhooks are summed
    assert not {(name, query) for name, query in added if not name.startswith(own)}
