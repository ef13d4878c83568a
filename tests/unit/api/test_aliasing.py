"""YAML aliases are measured before anything walks the data: billion laughs and self-reference are refused."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML

from helmrelease.api.aliasing import ExcessiveAliasing, check_aliasing, expanded_size
from helmrelease.api.limits import ALIAS_EXPANSION_MAX


def laughs(levels: int, width: int = 9) -> str:
    """``levels`` lists, each holding ``width`` aliases of the one before: width**levels leaves from ~40 bytes a level."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def safe(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


def round_trip(text: str) -> Any:
    return YAML(typ="rt").load(text)


@pytest.mark.parametrize(
    ("text", "written", "expanded"),
    [
        pytest.param("7\n", 1, 1, id="scalar"),
        pytest.param("{}\n", 1, 1, id="empty-map"),
        pytest.param("a: 1\nb: [x, y]\n", 7, 7, id="tree"),
        pytest.param("base: &b {x: 1}\ncopy: *b\n", 6, 9, id="one-alias"),
        pytest.param(laughs(3, 2), 9, 29, id="nested-aliases"),
    ],
)
def test_sizes_as_written_and_as_walked(text: str, written: int, expanded: int) -> None:
    assert expanded_size(safe(text)) == (written, expanded)


@pytest.mark.parametrize("load", [safe, round_trip], ids=["safe", "round-trip"])
@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        pytest.param("image: {repository: app, tag: '1.0'}\n", True, id="plain"),
        pytest.param(
            "defaults: &d {cpu: 1}\nweb: {resources: *d}\nworker: {resources: *d}\n", True, id="anchors"
        ),
        pytest.param(laughs(5), True, id="59k-leaves"),
        pytest.param(laughs(7), False, id="4.8M-leaves"),
        pytest.param(laughs(9), False, id="billion-laughs"),
        pytest.param(laughs(40, 2), False, id="a-trillion-from-2-wide"),
    ],
)
def test_expansion_is_bounded(load: Any, text: str, accepted: bool) -> None:
    document = load(text)
    if accepted:
        check_aliasing(document)
        return
    with pytest.raises(ExcessiveAliasing, match=f"at most {ALIAS_EXPANSION_MAX:,} nodes"):
        check_aliasing(document)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a: &a [1, *a]\n", id="list-in-itself"),
        pytest.param("a: &a {self: *a}\n", id="map-in-itself"),
        pytest.param("a: &a [[[*a]]]\n", id="three-down"),
    ],
)
def test_self_reference_is_refused(text: str) -> None:
    document = safe(text)
    with pytest.raises(ExcessiveAliasing, match="refers to itself"):
        check_aliasing(document)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=40,
)


@given(json_like)
def test_a_tree_without_aliases_is_its_own_size(document: Any) -> None:
    written, expanded = expanded_size(document)
    assert written == expanded
    check_aliasing(document)
