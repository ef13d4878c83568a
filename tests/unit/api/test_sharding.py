"""Shards split HelmReleases by one label: every object has exactly one shard, and names stay valid."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.api.sharding import (
    SHARD_LABEL,
    in_shard,
    shard_finalizer,
    shard_name,
    shard_selector,
    sharded_name,
)


@pytest.mark.parametrize(
    ("labels", "shard", "expected"),
    [
        pytest.param(None, None, True, id="no-labels-unsharded"),
        pytest.param({}, None, True, id="empty-labels-unsharded"),
        pytest.param({"app": "x"}, None, True, id="other-labels-unsharded"),
        pytest.param({SHARD_LABEL: "a"}, None, False, id="labelled-not-unsharded"),
        pytest.param({SHARD_LABEL: ""}, None, False, id="empty-value-is-a-label"),
        pytest.param({SHARD_LABEL: "a"}, "a", True, id="own-shard"),
        pytest.param({SHARD_LABEL: "b"}, "a", False, id="other-shard"),
        pytest.param({}, "a", False, id="unlabelled-not-a-shard"),
    ],
)
def test_in_shard(labels: dict[str, str] | None, shard: str | None, expected: bool) -> None:
    assert in_shard(labels, shard) is expected


@given(
    value=st.one_of(st.none(), st.sampled_from(["a", "b", "team-1", ""])),
    shards=st.just([None, "a", "b", "team-1"]),
)
def test_a_release_belongs_to_at_most_one_shard_and_an_unlabelled_one_to_exactly_one(
    value: str | None, shards: list[str | None]
) -> None:
    labels = {} if value is None else {SHARD_LABEL: value}
    owners = [shard for shard in shards if in_shard(labels, shard)]
    assert len(owners) == (1 if value in (None, "a", "b", "team-1") else 0)


@pytest.mark.parametrize(
    ("shard", "selector"),
    [
        pytest.param(None, f"!{SHARD_LABEL}", id="unsharded"),
        pytest.param("a", f"{SHARD_LABEL}=a", id="shard"),
    ],
)
def test_shard_selector(shard: str | None, selector: str) -> None:
    assert shard_selector(shard) == selector


@pytest.mark.parametrize(
    ("name", "shard", "expected"),
    [
        pytest.param("ops", None, "ops", id="unsharded-keeps-the-name"),
        pytest.param("ops", "a", "ops-a", id="a-shard-has-its-own"),
    ],
)
def test_sharded_name(name: str, shard: str | None, expected: str) -> None:
    assert sharded_name(name, shard) == expected


@pytest.mark.parametrize("text", ["a", "team-a", "0", "a1-b2", "x" * 63, " padded "])
def test_shard_names_accepted(text: str) -> None:
    assert shard_name(text) == text.strip()


@pytest.mark.parametrize("text", ["", " ", "A", "team_a", "-a", "a-", "a.b", "x" * 64, "a b", "ä"])
def test_shard_names_refused(text: str) -> None:
    with pytest.raises(ValueError, match="lowercase letters, digits and '-'"):
        shard_name(text)


@given(st.text(max_size=70))
def test_an_accepted_shard_name_is_a_label_value_and_a_name_suffix(text: str) -> None:
    try:
        name = shard_name(text)
    except ValueError:
        return
    assert 1 <= len(name) <= 63
    assert name == name.lower()
    assert name[0].isalnum()
    assert name[-1].isalnum()
    assert all(c.isascii() and (c.isalnum() or c == "-") for c in name)


def test_each_shard_has_its_own_finalizer_and_the_unsharded_one_keeps_the_old() -> None:
    assert shard_finalizer(None) == "helm.fluxcd.io/finalizer"
    assert len({shard_finalizer(shard) for shard in (None, "a", "b")}) == 3
    assert shard_finalizer("x" * 63).split("/") == ["x" * 63 + ".shard.helm.fluxcd.io", "finalizer"]
