"""The lookup plan: which tags a scan asks the registry about this cycle, and the rolling re-check budget."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.automation.fakes import at

from helmrelease.automation.lookups import (
    LookupPlan,
    RecheckBudget,
    best_by_created,
    plan_lookups,
    unconfirmed_best,
)


@dataclass(frozen=True)
class Known:
    created: datetime | None
    checked: float


def known(**tags: tuple[int | None, float]) -> dict[str, Known]:
    return {
        tag.replace("_", "."): Known(at(minutes) if minutes is not None else None, checked)
        for tag, (minutes, checked) in tags.items()
    }


@pytest.mark.parametrize(
    ("eligible", "current", "cache", "rolling", "expected"),
    [
        pytest.param(["a", "b"], "a", {}, 5, LookupPlan(("a", "b"), (), (), ()), id="cold-everything-is-new"),
        pytest.param(
            ["a", "b", "c", "d"],
            "a",
            known(a=(1, 10), b=(3, 20), c=(2, 5), d=(0, 1)),
            0,
            LookupPlan((), ("a",), ("b",), ()),
            id="warm-current-and-best-only",
        ),
        pytest.param(
            ["a", "b", "c", "d"],
            "a",
            known(a=(1, 10), b=(3, 20), c=(2, 5), d=(0, 1)),
            2,
            LookupPlan((), ("a",), ("b",), ("d", "c")),
            id="warm-plus-the-least-recently-checked",
        ),
        pytest.param(
            ["a", "b", "new"],
            "a",
            known(a=(1, 10), b=(3, 20)),
            1,
            LookupPlan(("new",), ("a",), ("b",), ()),
            id="a-new-tag-is-looked-up",
        ),
        pytest.param(
            ["b", "c"],
            "x",
            known(b=(3, 20), c=(2, 5), x=(9, 30)),
            0,
            LookupPlan((), ("x",), ("b",), ()),
            id="current-outside-the-policy-still-rechecked",
        ),
        pytest.param(
            ["b", "c"], None, known(b=(3, 20), c=(2, 5)), 0, LookupPlan((), (), ("b",), ()), id="no-current"
        ),
        pytest.param(
            ["a", "b"],
            "b",
            known(a=(1, 1), b=(3, 2)),
            0,
            LookupPlan((), ("b",), (), ()),
            id="current-is-the-best",
        ),
        pytest.param(
            ["a", "b"],
            "a",
            known(a=(None, 1), b=(None, 2)),
            0,
            LookupPlan((), ("a",), (), ()),
            id="no-build-times-no-best",
        ),
        pytest.param(
            ["a", "b", "c"],
            "a",
            known(a=(1, 7), b=(1, 7), c=(1, 7)),
            1,
            LookupPlan((), ("a",), (), ("b",)),
            id="ties-by-tag",
        ),
    ],
)
def test_plan_lookups(
    eligible: list[str], current: str | None, cache: dict[str, Known], rolling: int, expected: LookupPlan
) -> None:
    assert plan_lookups(eligible=eligible, current=current, known=cache, rolling=rolling) == expected


@pytest.mark.parametrize(
    ("interval", "period", "tags", "rolling"),
    [
        pytest.param(300, 86400, 500, 2, id="default-500-tags"),
        pytest.param(300, 86400, 1, 1, id="at-least-one"),
        pytest.param(300, 86400, 0, 0, id="none-cached"),
        pytest.param(300, 3600, 500, 42, id="hourly"),
        pytest.param(600, 300, 50, 50, id="period-shorter-than-interval"),
    ],
)
def test_recheck_budget(interval: float, period: float, tags: int, rolling: int) -> None:
    assert RecheckBudget(interval, period).rolling(tags) == rolling


@pytest.mark.parametrize(("interval", "period"), [(0, 1), (1, 0), (-1, 1)])
def test_recheck_budget_refuses_nonsense(interval: float, period: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        RecheckBudget(interval, period)


def test_unconfirmed_best_names_a_best_tag_not_looked_up() -> None:
    times = {"a": at(1), "b": at(5), "c": at(3)}
    assert best_by_created(["a", "b", "c"], times) == "b"
    assert unconfirmed_best(["a", "b", "c"], times, {"a", "b"}) is None
    assert unconfirmed_best(["a", "b", "c"], times, {"a"}) == "b"
    assert unconfirmed_best(["a"], {"a": None}, set()) is None


@settings(deadline=None, max_examples=50)
@given(
    tags=st.integers(min_value=1, max_value=300),
    interval=st.integers(min_value=10, max_value=3600),
    cycles_per_period=st.integers(min_value=1, max_value=60),
)
def test_every_tag_is_rechecked_within_the_period(tags: int, interval: int, cycles_per_period: int) -> None:
    """Cycles every ``interval``: no cached tag goes longer than ``period`` (rounded up to a cycle)
    without a re-check, and no cycle re-checks more than the budget plus current and best."""
    period = interval * cycles_per_period
    budget = RecheckBudget(interval, period)
    names = [f"t{n:03d}" for n in range(tags)]
    cache = {name: Known(at(n), 0.0) for n, name in enumerate(names)}
    cycles = -(-period // interval) + 1
    for cycle in range(1, cycles * 2):
        now = float(cycle * interval)
        plan = plan_lookups(eligible=names, current=names[0], known=cache, rolling=budget.rolling(tags))
        assert not plan.new
        assert len(plan.tags) <= 2 + budget.rolling(tags)
        for name in plan.tags:
            cache[name] = Known(cache[name].created, now)
        oldest = min(known_build.checked for known_build in cache.values())
        assert now - oldest <= max(period, interval) + interval
