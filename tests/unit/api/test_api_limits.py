"""The values depth limit in the first parse and in the values composition: one bound, one reason, one message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from helmrelease.api import bounded_json
from helmrelease.api.constants import Reason
from helmrelease.api.errors import SpecError
from helmrelease.api.limits import VALUES_DEPTH_MAX
from helmrelease.api.resource import parse_helmrelease
from helmrelease.reconcile.values import ValuesError, ValuesLayer, compose_values

CHART = {"repository": "https://charts.example.com/", "name": "app", "version": "1.0.0"}


def nested(levels: int) -> dict[str, Any]:
    """A values map ``levels`` deep (the outer map counts), alternating maps and lists."""
    value: Any = "leaf"
    for index in range(levels - 1):
        value = [value] if index % 2 else {"k": value}
    return {"top": value}


def body(values: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "deep", "namespace": "apps", "generation": 2},
        "spec": {"chart": CHART, "values": values},
    }


@pytest.mark.parametrize(
    ("levels", "accepted"),
    [(1, True), (20, True), (VALUES_DEPTH_MAX, True), (VALUES_DEPTH_MAX + 1, False), (600, False)],
)
def test_values_depth_is_bounded_in_the_first_parse(levels: int, accepted: bool) -> None:
    values = nested(levels)
    assert bounded_json.depth_of(values) == levels
    if accepted:
        assert parse_helmrelease(body(values)).spec.values == values
        return
    with pytest.raises(SpecError) as raised:
        parse_helmrelease(body(values))
    assert raised.value.reason is Reason.VALUES_TOO_DEEP
    assert str(raised.value) == (
        f"spec.values: nested more than {VALUES_DEPTH_MAX} levels deep, more than this operator accepts; "
        "flatten the values (charts rarely need more than 20 levels)"
    )


def test_an_object_cut_by_the_decoder_is_refused_with_the_same_reason() -> None:
    text = json.dumps(body({"x": "HERE"})).replace('"HERE"', "[" * 3000 + "1" + "]" * 3000)
    decoded = bounded_json.loads(text)
    with pytest.raises(SpecError) as raised:
        parse_helmrelease(decoded)
    assert raised.value.reason is Reason.VALUES_TOO_DEEP
    assert [problem.field for problem in raised.value.problems] == ["spec.values"]


def test_other_problems_are_reported_beside_the_depth() -> None:
    with pytest.raises(SpecError) as raised:
        parse_helmrelease(
            {**body(nested(VALUES_DEPTH_MAX + 1)), "spec": {"values": nested(VALUES_DEPTH_MAX + 1)}}
        )
    assert {problem.field for problem in raised.value.problems} == {"spec.chart", "spec.values"}
    assert raised.value.reason is Reason.VALUES_TOO_DEEP


@pytest.mark.parametrize("levels", [VALUES_DEPTH_MAX + 1, 300])
def test_a_values_source_too_deep_is_a_values_error_naming_it(levels: int) -> None:
    layers = [ValuesLayer("ConfigMap deep key values.yaml", nested(levels))]
    with pytest.raises(ValuesError) as raised:
        compose_values(layers, {})
    assert str(raised.value).startswith(
        f"ConfigMap deep key values.yaml: nested more than {VALUES_DEPTH_MAX}"
    )


def test_a_values_source_at_the_limit_merges() -> None:
    layer = ValuesLayer("ConfigMap ok key values.yaml", nested(VALUES_DEPTH_MAX))
    assert compose_values([layer], {"extra": 1}) == {**nested(VALUES_DEPTH_MAX), "extra": 1}
