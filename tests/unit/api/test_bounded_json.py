"""The bounded JSON decoder: json.loads within the bound, never a deeper object beyond it, metadata intact."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.api import bounded_json
from helmrelease.api.limits import DOCUMENT_DEPTH_MAX, TOO_DEEP, VALUES_DEPTH_MAX

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
    | st.sampled_from(['"', "\\", '\\"', "{", "]", '"}', "[\\", "\\\\"])
)
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=40,
)


def nest(levels: int, leaf: Any = 1) -> Any:
    """``levels`` maps inside each other around ``leaf`` (built without recursion)."""
    value = leaf
    for index in range(levels):
        value = {f"k{index % 7}": value} if index % 2 else [value]
    return value


def cut(value: Any, max_depth: int) -> Any:
    """The reference: what a decoder bounded at ``max_depth`` must return for ``value`` (shallow inputs only)."""
    if not isinstance(value, (dict, list)):
        return value
    if max_depth == 0:
        return TOO_DEEP
    if isinstance(value, dict):
        return {key: cut(child, max_depth - 1) for key, child in value.items()}
    return [cut(child, max_depth - 1) for child in value]


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON types (1 and 1.0 differ here)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@given(documents, st.integers(min_value=0, max_value=8))
def test_equals_json_loads_within_the_bound_and_the_reference_cut_beyond(value: Any, max_depth: int) -> None:
    text = json.dumps(value, allow_nan=False)
    decoded = bounded_json.loads(text, max_depth=max_depth)
    assert same(decoded, cut(json.loads(text), max_depth))
    if bounded_json.depth_of(value) <= max_depth:
        assert same(decoded, json.loads(text))
    assert bounded_json.depth_of(decoded) <= max_depth


@given(documents, st.integers(min_value=0, max_value=8))
def test_the_depth_check_is_exact_on_valid_json(value: Any, max_depth: int) -> None:
    encoded = json.dumps(value).encode()
    assert bounded_json.within_depth(encoded, max_depth) == (bounded_json.depth_of(value) <= max_depth)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ('"[[[["', 0),
        ("[]", 1),
        ('{"a": "}}}{{{"}', 1),
        ('["\\\\", ["\\"]"]]', 2),
        ('[{"\\\\\\"[": [[]]}]', 4),
        ('[[], [[]], {"a": {"b": [{}]}}]', 5),
    ],
)
def test_depth_of_tricky_strings(text: str, depth: int) -> None:
    assert bounded_json.depth_of(json.loads(text)) == depth
    assert bounded_json.within_depth(text.encode(), depth)
    assert not bounded_json.within_depth(text.encode(), depth - 1) or depth == 0


@pytest.mark.parametrize("levels", [600, 3000, 10_000, 100_000])
def test_any_depth_decodes_to_the_bound_and_keeps_the_metadata(levels: int) -> None:
    metadata = {
        "name": "deep",
        "namespace": "apps",
        "uid": "1234",
        "resourceVersion": "42",
        "finalizers": ["helm.fluxcd.io/finalizer"],
        "annotations": {"a": "b"},
    }
    values = nest(levels)
    text = json.dumps({"metadata": metadata, "spec": {"chart": {"name": "app"}, "values": {"x": 1}}})
    # json.dumps itself recurses; splice the deep values in as text.
    text = text.replace('{"x": 1}', '{"x": ' + "[" * levels + "1" + "]" * levels + "}")
    assert len(text) > 2 * levels
    decoded = bounded_json.loads(text.encode())
    assert decoded["metadata"] == metadata
    assert decoded["spec"]["chart"] == {"name": "app"}
    assert bounded_json.depth_of(decoded) == DOCUMENT_DEPTH_MAX
    assert bounded_json.depth_of(decoded["spec"]["values"]) > VALUES_DEPTH_MAX
    leaf = decoded["spec"]["values"]["x"]
    while isinstance(leaf, list):
        leaf = leaf[0]
    assert leaf == TOO_DEEP
    assert values  # the helper builds without recursion too


def test_what_json_loads_accepts_within_the_bound_is_unchanged() -> None:
    # Not JSON as Kubernetes sends it, but json.loads takes it, and so must the fast path.
    assert bounded_json.loads('{"a": NaN, "b": 1e400, "c": "\\ud800"}')["c"] == "\ud800"


@pytest.mark.parametrize("text", ["", "{", '{"a": }', "[1,]", "[" * 500, "[" * 500 + "]" * 499 + "x"])
def test_not_json_raises_json_decode_error_on_both_paths(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        bounded_json.loads(text)


def test_the_limits_fit_together() -> None:
    # spec.values starts at level 3: a values tree cut at the document bound must still exceed the values bound.
    assert DOCUMENT_DEPTH_MAX - 2 > VALUES_DEPTH_MAX
