"""Choosing the update: newest eligible tag under the policy's order, never backwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from helmrelease.images.policy import TagOrder, parse_policy
from helmrelease.images.select import NoChangeReason, TagCandidate, is_step_back, rank_tags, select_update

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


def tags(*names: str) -> list[TagCandidate]:
    return [TagCandidate(name) for name in names]


@pytest.mark.parametrize(
    ("current", "candidates", "policy", "order", "expected"),
    [
        pytest.param(
            "4.0.3",
            tags("4.0.3", "4.0.10", "4.1.0", "latest"),
            "semver:~4.0",
            None,
            "4.0.10",
            id="spec-mongodb",
        ),
        pytest.param(
            "v2.3.1", tags("v2.3.1", "v2.3.2", "v2.4.0"), "semver:~2.3", None, "v2.3.2", id="spec-prometheus"
        ),
        pytest.param(
            "1.0.0", tags("1.0.0", "1.10.0", "1.9.0"), "semver:*", None, "1.10.0", id="numeric-not-lexical"
        ),
        pytest.param("1.0.0", tags("1.0.0", "2.0.0-rc.1"), "semver:*", None, None, id="prerelease-excluded"),
        pytest.param(
            "1.0.0",
            tags("1.0.0", "2.0.0-rc.1"),
            "semver:>=1.0.0-0",
            None,
            "2.0.0-rc.1",
            id="prerelease-asked-for",
        ),
        pytest.param("1.2", tags("1.2", "1.2.1"), "semver:*", None, "1.2.1", id="partial-current"),
        pytest.param(
            "1.0.0", tags("v1.0.0", "1.0.0"), "semver:*", None, None, id="same-version-other-spelling"
        ),
        pytest.param(
            "1.0.0",
            tags("1.0.0", "v1.1.0", "1.1.0"),
            "semver:*",
            None,
            "v1.1.0",
            id="equal-versions-the-tag-sorting-last-wins",
        ),
        pytest.param(
            "1.9.0",
            tags("1.10", "1.10.0", "1.9.0"),
            "semver:*",
            None,
            "1.10.0",
            id="equal-versions-explicit-wins",
        ),
        pytest.param(
            "1.9.0",
            tags("1.10.0", "1.10"),
            "semver:*",
            None,
            "1.10.0",
            id="equal-versions-listing-order-aside",
        ),
        pytest.param("1.2.2", tags("1.2.3", "v1.2.3"), "semver:~1.2", None, "v1.2.3", id="issue-v-prefix"),
        pytest.param("3.0.0", tags("2.0.1", "2.0.2"), "semver:~2.0", None, None, id="would-downgrade"),
        pytest.param(
            "1.0.0",
            tags("2.0.1", "2.0.2"),
            "semver:~2.0",
            None,
            "2.0.2",
            id="current-outside-policy-moves-up",
        ),
        pytest.param("a", tags("a", "b", "c"), "glob:*", TagOrder.ALPHABETICAL, "c", id="alphabetical"),
        pytest.param(
            "RELEASE.2024-01-31",
            tags("RELEASE.2024-02-01", "RELEASE.2023-12-01"),
            "RELEASE.*",
            TagOrder.ALPHABETICAL,
            "RELEASE.2024-02-01",
            id="alphabetical-dates",
        ),
        pytest.param(
            "99", tags("99", "100", "101.5", "abc"), "glob:*", TagOrder.NUMERICAL, "101.5", id="numerical"
        ),
        pytest.param(
            "1.0.0",
            tags("1.0.0", "1.0.1", "main"),
            "glob:*",
            TagOrder.SEMVER,
            "1.0.1",
            id="semver-order-for-glob",
        ),
    ],
)
def test_select_by_tag(
    current: str, candidates: list[TagCandidate], policy: str, order: TagOrder | None, expected: str | None
) -> None:
    decision = select_update(
        current_tag=current, candidates=candidates, policy=parse_policy(policy), order=order
    )
    assert decision.new_tag == expected
    assert decision.changes is (expected is not None)
    assert (decision.reason is None) is (expected is not None)


@pytest.mark.parametrize(
    ("current", "candidates", "policy", "expected"),
    [
        pytest.param(
            "a",
            [TagCandidate("a", at(0)), TagCandidate("b", at(2)), TagCandidate("c", at(1))],
            "glob:*",
            "b",
            id="newest-build",
        ),
        pytest.param(
            "a",
            [TagCandidate("a", at(0)), TagCandidate("z", at(2)), TagCandidate("m", at(2))],
            "glob:*",
            "m",
            id="tie-ascending-tag",
        ),
        pytest.param(
            "main-1",
            [TagCandidate("main-1", at(0)), TagCandidate("main-2", at(1)), TagCandidate("dev-3", at(5))],
            "main-*",
            "main-2",
            id="glob-filters-first",
        ),
        pytest.param(
            "a",
            [TagCandidate("a", at(0)), TagCandidate("latest", at(9)), TagCandidate("b", at(1))],
            "glob:*",
            "b",
            id="latest-ignored",
        ),
        pytest.param(
            "a",
            [TagCandidate("a", at(0)), TagCandidate("b", None), TagCandidate("c", at(1))],
            "glob:*",
            "c",
            id="untimed-candidate-skipped",
        ),
        pytest.param(
            "v1", [TagCandidate("v1", at(0)), TagCandidate("v2", at(3))], "regex:^v", "v2", id="regex-created"
        ),
    ],
)
def test_select_by_build_time(
    current: str, candidates: list[TagCandidate], policy: str, expected: str
) -> None:
    decision = select_update(current_tag=current, candidates=candidates, policy=parse_policy(policy))
    assert decision.new_tag == expected


@pytest.mark.parametrize(
    ("current", "current_created", "candidates", "policy", "order", "reason"),
    [
        pytest.param(
            None,
            None,
            tags("1.0.0"),
            "semver:*",
            None,
            NoChangeReason.CURRENT_HAS_NO_TAG,
            id="no-current-tag",
        ),
        pytest.param(
            "1.0.0",
            None,
            tags("main", "latest"),
            "semver:*",
            None,
            NoChangeReason.NO_ELIGIBLE_TAG,
            id="nothing-matches",
        ),
        pytest.param("1.0.0", None, [], "glob:*", None, NoChangeReason.NO_ELIGIBLE_TAG, id="no-candidates"),
        pytest.param(
            "1.0.0",
            None,
            tags("1.0.0", "0.9.0"),
            "semver:*",
            None,
            NoChangeReason.ALREADY_NEWEST,
            id="already-newest",
        ),
        pytest.param(
            "v1.0.0", None, tags("1.0.0"), "semver:*", None, NoChangeReason.ALREADY_NEWEST, id="equal-version"
        ),
        pytest.param(
            "3.0.0", None, tags("2.0.0"), "semver:^2", None, NoChangeReason.WOULD_DOWNGRADE, id="downgrade"
        ),
        pytest.param(
            "latest",
            None,
            tags("1.0.0"),
            "semver:*",
            None,
            NoChangeReason.CURRENT_NOT_ORDERABLE,
            id="current-not-a-version",
        ),
        pytest.param(
            "abc",
            None,
            tags("1", "2"),
            "glob:*",
            TagOrder.NUMERICAL,
            NoChangeReason.CURRENT_NOT_ORDERABLE,
            id="current-not-a-number",
        ),
        pytest.param(
            "1.0.0",
            None,
            tags("a", "b"),
            "glob:*",
            TagOrder.NUMERICAL,
            NoChangeReason.NO_ELIGIBLE_TAG,
            id="no-candidate-is-a-number",
        ),
        pytest.param(
            "a",
            None,
            [TagCandidate("a"), TagCandidate("b", at(1))],
            "glob:*",
            None,
            NoChangeReason.CURRENT_TIMESTAMP_MISSING,
            id="current-untimed",
        ),
        pytest.param(
            "a",
            at(0),
            tags("b", "c"),
            "glob:*",
            None,
            NoChangeReason.CANDIDATE_TIMESTAMP_MISSING,
            id="candidates-untimed",
        ),
        pytest.param(
            "a",
            at(5),
            [TagCandidate("b", at(1))],
            "glob:*",
            None,
            NoChangeReason.WOULD_DOWNGRADE,
            id="older-build",
        ),
        pytest.param(
            "a",
            at(1),
            [TagCandidate("b", at(1))],
            "glob:*",
            None,
            NoChangeReason.ALREADY_NEWEST,
            id="same-build-time",
        ),
        pytest.param(
            "z",
            None,
            tags("a", "b"),
            "glob:*",
            TagOrder.ALPHABETICAL,
            NoChangeReason.WOULD_DOWNGRADE,
            id="alphabetical-downgrade",
        ),
        pytest.param(
            "10",
            None,
            tags("9", "2"),
            "glob:*",
            TagOrder.NUMERICAL,
            NoChangeReason.WOULD_DOWNGRADE,
            id="numerical-downgrade",
        ),
    ],
)
def test_no_change(
    current: str | None,
    current_created: datetime | None,
    candidates: list[TagCandidate],
    policy: str,
    order: TagOrder | None,
    reason: NoChangeReason,
) -> None:
    decision = select_update(
        current_tag=current,
        current_created=current_created,
        candidates=candidates,
        policy=parse_policy(policy),
        order=order,
    )
    assert decision.new_tag is None
    assert decision.reason is reason
    assert decision.detail


def test_current_build_time_is_found_among_candidates() -> None:
    candidates = [TagCandidate("a", at(0)), TagCandidate("b", at(1))]
    assert select_update(current_tag="a", candidates=candidates, policy=parse_policy("glob:*")).new_tag == "b"


def test_explicit_current_build_time_wins_over_the_listing() -> None:
    candidates = [TagCandidate("a", at(0)), TagCandidate("b", at(1))]
    decision = select_update(
        current_tag="a", current_created=at(2), candidates=candidates, policy=parse_policy("glob:*")
    )
    assert decision.reason is NoChangeReason.WOULD_DOWNGRADE


@pytest.mark.parametrize(
    ("order", "candidates", "expected"),
    [
        pytest.param(
            TagOrder.SEMVER,
            tags("1.2.0", "v1.10.0", "main", "1.9.0", "1.10.0"),
            ["v1.10.0", "1.10.0", "1.9.0", "1.2.0"],
            id="semver",
        ),
        pytest.param(
            TagOrder.ALPHABETICAL, tags("b", "a", "c", "a"), ["c", "b", "a"], id="alphabetical-dedupes"
        ),
        pytest.param(TagOrder.NUMERICAL, tags("9", "10", "x", "9.5"), ["10", "9.5", "9"], id="numerical"),
        pytest.param(
            TagOrder.CREATED,
            [
                TagCandidate("y", at(1)),
                TagCandidate("x", at(1)),
                TagCandidate("w", None),
                TagCandidate("z", at(2)),
            ],
            ["z", "x", "y"],
            id="created",
        ),
    ],
)
def test_rank_tags(order: TagOrder, candidates: list[TagCandidate], expected: list[str]) -> None:
    assert [candidate.tag for candidate in rank_tags(candidates, order)] == expected


# --- soak time and step backs ----------------------------------------------------------------------

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


@pytest.mark.parametrize(
    ("candidates", "min_age", "expected", "reason"),
    [
        pytest.param(
            [TagCandidate("1.0.0", ago(600)), TagCandidate("1.0.5", ago(30))],
            timedelta(hours=1),
            None,
            NoChangeReason.SOAKING,
            id="built-too-recently",
        ),
        pytest.param(
            [TagCandidate("1.0.0", ago(600)), TagCandidate("1.0.5", ago(61))],
            timedelta(hours=1),
            "1.0.5",
            None,
            id="soaked",
        ),
        pytest.param(
            [TagCandidate("1.0.0", ago(600)), TagCandidate("1.0.5", ago(600), first_seen=ago(5))],
            timedelta(hours=1),
            None,
            NoChangeReason.SOAKING,
            id="old-build-seen-just-now",
        ),
        pytest.param(
            [TagCandidate("1.0.0", ago(600)), TagCandidate("1.0.3", ago(90)), TagCandidate("1.0.5", ago(5))],
            timedelta(hours=1),
            "1.0.3",
            None,
            id="the-newest-soaked-one",
        ),
        pytest.param(
            [TagCandidate("1.0.0", ago(600)), TagCandidate("1.0.5")],
            timedelta(minutes=1),
            None,
            NoChangeReason.SOAKING,
            id="no-time-known-never-soaks",
        ),
        pytest.param(
            [TagCandidate("1.0.0", ago(600)), TagCandidate("1.0.5", ago(1))],
            None,
            "1.0.5",
            None,
            id="no-min-age",
        ),
        pytest.param(
            [TagCandidate("1.0.0", ago(600)), TagCandidate("1.0.5", ago(1))],
            timedelta.max,
            None,
            NoChangeReason.SOAKING,
            id="unreadable-min-age-never",
        ),
    ],
)
def test_soak_time(
    candidates: list[TagCandidate],
    min_age: timedelta | None,
    expected: str | None,
    reason: NoChangeReason | None,
) -> None:
    decision = select_update(
        current_tag="1.0.0",
        candidates=candidates,
        policy=parse_policy("semver:~1.0"),
        min_age=min_age,
        now=NOW,
    )
    assert (decision.new_tag, decision.reason) == (expected, reason)


def test_a_soaking_tag_says_until_when() -> None:
    decision = select_update(
        current_tag="1.0.0",
        candidates=[TagCandidate("1.0.0", ago(600)), TagCandidate("1.0.5", ago(30))],
        policy=parse_policy("semver:~1.0"),
        min_age=timedelta(hours=1),
        now=NOW,
    )
    assert decision.detail == "1.0.5 is newer than 1.0.0, but it soaks until 2026-01-01T12:30:00Z (min-age)"


@pytest.mark.parametrize(
    ("order", "current", "written", "expected"),
    [
        pytest.param(TagOrder.SEMVER, TagCandidate("1.0.0"), TagCandidate("1.0.5"), True, id="semver-back"),
        pytest.param(
            TagOrder.SEMVER, TagCandidate("1.1.0"), TagCandidate("1.0.5"), False, id="semver-forward"
        ),
        pytest.param(TagOrder.SEMVER, TagCandidate("1.10"), TagCandidate("1.10.0"), False, id="same-version"),
        pytest.param(TagOrder.SEMVER, TagCandidate("main"), TagCandidate("1.0.5"), False, id="unreadable"),
        pytest.param(
            TagOrder.CREATED, TagCandidate("b", ago(10)), TagCandidate("a", ago(5)), True, id="created-back"
        ),
        pytest.param(
            TagOrder.CREATED, TagCandidate("b"), TagCandidate("a", ago(5)), False, id="created-unknown"
        ),
        pytest.param(TagOrder.NUMERICAL, TagCandidate("99"), TagCandidate("100"), True, id="numerical-back"),
        pytest.param(TagOrder.ALPHABETICAL, TagCandidate("a"), TagCandidate("a"), False, id="same-tag"),
    ],
)
def test_step_back(order: TagOrder, current: TagCandidate, written: TagCandidate, expected: bool) -> None:
    assert is_step_back(order, current, written) is expected
