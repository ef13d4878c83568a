"""Values composition: maps merge deeply, everything else replaces, layers apply in order."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.reconcile.values import ValuesError, ValuesLayer, compose_values, deep_merge


@pytest.mark.parametrize(
    ("base", "overlay", "merged"),
    [
        pytest.param({}, {}, {}, id="empty"),
        pytest.param({"a": 1}, {}, {"a": 1}, id="empty-overlay-keeps-base"),
        pytest.param({}, {"a": 1}, {"a": 1}, id="overlay-adds"),
        pytest.param({"a": 1, "b": 2}, {"a": 3}, {"a": 3, "b": 2}, id="scalar-replaced"),
        pytest.param(
            {"image": {"repository": "app", "tag": "1.0"}},
            {"image": {"tag": "2.0"}},
            {"image": {"repository": "app", "tag": "2.0"}},
            id="nested-maps-merge",
        ),
        pytest.param(
            {"a": {"b": {"c": 1, "d": 2}}},
            {"a": {"b": {"d": 3, "e": 4}}},
            {"a": {"b": {"c": 1, "d": 3, "e": 4}}},
            id="merge-at-depth",
        ),
        pytest.param(
            {"ports": [80, 443]}, {"ports": [8080]}, {"ports": [8080]}, id="lists-replace-not-append"
        ),
        pytest.param({"a": {"b": 1}}, {"a": "flat"}, {"a": "flat"}, id="scalar-replaces-map"),
        pytest.param({"a": "flat"}, {"a": {"b": 1}}, {"a": {"b": 1}}, id="map-replaces-scalar"),
        pytest.param({"a": {"b": 1}}, {"a": None}, {"a": None}, id="null-replaces-for-helm-to-delete"),
        pytest.param(
            {"a": [{"b": 1}]}, {"a": [{"c": 2}]}, {"a": [{"c": 2}]}, id="maps-in-lists-do-not-merge"
        ),
    ],
)
def test_deep_merge(base: dict[str, Any], overlay: dict[str, Any], merged: dict[str, Any]) -> None:
    before = copy.deepcopy((base, overlay))
    assert deep_merge(base, overlay) == merged
    assert (base, overlay) == before, "inputs must not be modified"


def test_layers_apply_in_order_with_inline_values_last() -> None:
    legacy_secret = ValuesLayer("Secret legacy key values.yaml", {"replicas": 1, "image": {"tag": "1.0"}})
    config_map = ValuesLayer(
        "ConfigMap shared key values.yaml", {"replicas": 2, "ingress": {"enabled": True}}
    )
    secret = ValuesLayer(
        "Secret overrides key values.yaml", {"image": {"tag": "2.0"}, "ingress": {"host": "a"}}
    )
    inline = {"ingress": {"host": "b"}}
    assert compose_values([legacy_secret, config_map, secret], inline) == {
        "replicas": 2,
        "image": {"tag": "2.0"},
        "ingress": {"enabled": True, "host": "b"},
    }


def test_empty_document_contributes_nothing() -> None:
    assert compose_values([ValuesLayer("ConfigMap empty key values.yaml", None)], {"a": 1}) == {"a": 1}


@pytest.mark.parametrize(
    ("document", "kind"),
    [
        pytest.param(["a", "b"], "list", id="list"),
        pytest.param("replicas: 2", "str", id="string"),
        pytest.param(3, "int", id="number"),
    ],
)
def test_a_source_that_is_not_a_map_is_named(document: object, kind: str) -> None:
    layers = [
        ValuesLayer("ConfigMap good key values.yaml", {}),
        ValuesLayer("Secret bad key values.yaml", document),
    ]
    with pytest.raises(ValuesError) as raised:
        compose_values(layers, {})
    assert raised.value.source == "Secret bad key values.yaml"
    assert str(raised.value).startswith("Secret bad key values.yaml: ")
    assert kind in str(raised.value)


# Values as YAML documents produce them: nested maps with string keys and JSON scalars or lists.
scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=12,
)
maps = st.dictionaries(st.text(max_size=3), values, max_size=4)


def _leaves(document: Mapping[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every non-map value with its key path (an empty map merges into what is there, so it has no leaf)."""
    for key, value in document.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, (*path, key))
        else:
            yield (*path, key), value


def _at(document: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


@given(maps, maps)
def test_every_overlay_leaf_wins(base: dict[str, Any], overlay: dict[str, Any]) -> None:
    merged = deep_merge(base, overlay)
    for path, value in _leaves(overlay):
        assert _at(merged, path) == value


@given(maps, maps)
def test_base_keys_survive_unless_replaced(base: dict[str, Any], overlay: dict[str, Any]) -> None:
    merged = deep_merge(base, overlay)
    assert set(base) | set(overlay) == set(merged)


@given(maps, maps)
def test_applying_an_overlay_twice_changes_nothing(base: dict[str, Any], overlay: dict[str, Any]) -> None:
    once = deep_merge(base, overlay)
    assert deep_merge(once, overlay) == once
