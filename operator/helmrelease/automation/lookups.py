"""Which tags' build times a scan looks up this cycle, and which it takes from the tag cache. Pure.

Looking every eligible tag up each cycle costs a request per tag (25 000 for 50 repositories of 500 tags);
tags rarely move, so per image and cycle the plan is:

| tag                                   | looked up         | why                                          |
|---------------------------------------|-------------------|----------------------------------------------|
| not in the cache (new)                | yes, once         | nothing known about it                       |
| the current tag                       | yes (a HEAD)      | a re-pushed current tag changes the decision |
| the best candidate by cached times    | yes (a HEAD)      | the tag we would move to must be confirmed   |
| the ``rolling`` least recently checked | yes (a HEAD)      | mutable tags re-pushed elsewhere are noticed |
| every other cached tag                | no                | its cached build time stands                 |

After the lookups, if the best candidate turned out to be a tag that was not looked up (the previous best
was re-pushed with an older build), that one is confirmed too, until the best is confirmed (``unconfirmed_best``).

``RecheckBudget`` sizes the rolling slice so that every cached tag is re-checked within ``period``:
``ceil(tags * interval / period)`` per image and cycle (2 for 500 tags, a 5-minute interval and 24 hours),
so a steady cycle costs at most 2 + that many manifest requests per image; images of one repository with
the same policy share them, since they pick from the same cycle-start view.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from helmrelease.images.policy import TagOrder
from helmrelease.images.select import TagCandidate, rank_tags

DEFAULT_RECHECK_PERIOD = 24 * 3600.0


class KnownBuild(Protocol):
    """What the cache knows of a tag (``adapters.registry.tagcache.TagRecord`` is one)."""

    @property
    def created(self) -> datetime | None: ...

    @property
    def checked(self) -> float: ...


@dataclass(frozen=True)
class RecheckBudget:
    """Every cached tag is re-checked within ``period`` seconds when cycles start ``interval`` apart (longer
    by the cycles' own duration, since the interval counts from the end of one)."""

    interval: float
    period: float = DEFAULT_RECHECK_PERIOD

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.period <= 0:
            raise ValueError("a re-check budget needs a positive interval and period")

    def rolling(self, cached_tags: int) -> int:
        """How many of ``cached_tags`` to re-check this cycle (at least one while there are any)."""
        if cached_tags <= 0:
            return 0
        return min(cached_tags, math.ceil(cached_tags * min(1.0, self.interval / self.period)))


@dataclass(frozen=True)
class LookupPlan:
    """The tags to look up this cycle, by reason (a tag appears under the first reason that applies)."""

    new: tuple[str, ...]
    current: tuple[str, ...]
    best: tuple[str, ...]
    rolling: tuple[str, ...]

    @property
    def tags(self) -> tuple[str, ...]:
        return (*self.new, *self.current, *self.best, *self.rolling)


def best_by_created(eligible: Sequence[str], times: Mapping[str, datetime | None]) -> str | None:
    """The tag ``created`` ordering would pick among ``eligible`` given ``times`` (None: none has a time)."""
    ranked = rank_tags((TagCandidate(tag, times.get(tag)) for tag in eligible), TagOrder.CREATED)
    return ranked[0].tag if ranked else None


def plan_lookups(
    *,
    eligible: Sequence[str],
    current: str | None,
    known: Mapping[str, KnownBuild],
    rolling: int,
) -> LookupPlan:
    """What to look up for one image: ``eligible`` tags of the policy, ``current`` (when listed), the
    cache's ``known`` records as of the cycle's start, and the rolling slice size (``RecheckBudget``)."""
    needed = list(dict.fromkeys([*eligible, *([current] if current is not None else [])]))
    new = tuple(tag for tag in needed if tag not in known)
    taken = set(new)
    current_part = () if current is None or current in taken else (current,)
    taken.update(current_part)
    best = best_by_created([tag for tag in eligible if tag in known], {t: known[t].created for t in known})
    best_part = () if best is None or best in taken else (best,)
    taken.update(best_part)
    stale = sorted((tag for tag in needed if tag not in taken), key=lambda tag: (known[tag].checked, tag))
    return LookupPlan(new, current_part, best_part, tuple(stale[: max(0, rolling)]))


def unconfirmed_best(
    eligible: Sequence[str], times: Mapping[str, datetime | None], confirmed: Collection[str]
) -> str | None:
    """The best candidate under ``times`` when it was not looked up this cycle (it must be), else None."""
    best = best_by_created(eligible, times)
    return best if best is not None and best not in confirmed else None
