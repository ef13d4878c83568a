"""Choosing the tag to move to: the newest eligible tag, and never a step backwards.

Orders, each a total ranking of the tags it can read (tags it cannot read are not candidates):

- ``semver``: by version; equal versions (``1.10`` and ``1.10.0``, ``v1.2.3`` and ``1.2.3``) rank the more
  explicit tag first, the one that sorts last as a string, as Flux v1 did.
- ``created``: by the image's build time, newest first; equal times rank by ascending tag, as Flux v1 did.
- ``alphabetical``: the greatest tag in code-point order (for tags such as ``RELEASE.2024-01-31``).
- ``numerical``: the greatest tag read as a decimal number (for build numbers such as ``1042``).

"Newer" is always judged under the same order that ranked the candidates; a release whose current tag is
already ahead of every candidate stays where it is (Flux v1 could move it backwards).

Soak time (``min_age``): a tag is a candidate only once the later of its image's build time and the time
the sidecar first saw it is at least ``min_age`` ago; a tag with neither is never old enough. When only
a tag still soaking is newer, the decision says until when (``Soaking``), and the next cycle after that
moves without anyone pushing again.

A step back (``is_step_back``): the tag in values ranks below the one the sidecar itself last wrote there,
so someone else set it back; the caller pauses the image instead of undoing that.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from helmrelease.images.policy import TagOrder, TagPolicy, parse_tag_version

_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class TagCandidate:
    """A tag found in the registry, with the image's build time when the caller looked it up."""

    tag: str
    created: datetime | None = None
    #: When the sidecar first listed the tag (for soak time; None when nobody recorded it).
    first_seen: datetime | None = None

    def ready_at(self, min_age: timedelta) -> datetime | None:
        """When the tag has soaked ``min_age``: the later of build time and first sight, plus ``min_age``."""
        known = [moment for moment in (self.created, self.first_seen) if moment is not None]
        if not known:
            return None
        latest = max(known)
        return datetime.max.replace(tzinfo=latest.tzinfo) if min_age == timedelta.max else latest + min_age

    def soaked(self, min_age: timedelta | None, now: datetime) -> bool:
        if min_age is None or min_age <= timedelta(0):
            return True
        ready = self.ready_at(min_age)
        return ready is not None and ready <= now


class NoChangeReason(StrEnum):
    """Why no update was chosen; each value is stable for events and metrics."""

    ALREADY_NEWEST = "AlreadyNewest"
    NO_ELIGIBLE_TAG = "NoEligibleTag"
    CURRENT_HAS_NO_TAG = "CurrentHasNoTag"
    CURRENT_NOT_ORDERABLE = "CurrentNotOrderable"
    CURRENT_TIMESTAMP_MISSING = "CurrentTimestampMissing"
    CANDIDATE_TIMESTAMP_MISSING = "CandidateTimestampMissing"
    WOULD_DOWNGRADE = "WouldDowngrade"
    SOAKING = "Soaking"


@dataclass(frozen=True)
class UpdateDecision:
    """Either a new tag, or the reason there is none (``detail`` is the human sentence)."""

    new_tag: str | None
    reason: NoChangeReason | None
    detail: str

    @property
    def changes(self) -> bool:
        return self.new_tag is not None


class _Rank(Protocol):
    """A sort key: ranks of one order compare with each other (versions, datetimes, decimals or strings)."""

    def __lt__(self, other: Any, /) -> bool: ...


def _rank(order: TagOrder, candidate: TagCandidate) -> _Rank | None:
    """Sort key under ``order`` (greater is newer), or ``None`` when the order cannot place the tag."""
    match order:
        case TagOrder.SEMVER:
            return parse_tag_version(candidate.tag)
        case TagOrder.CREATED:
            return candidate.created
        case TagOrder.ALPHABETICAL:
            return candidate.tag
        case TagOrder.NUMERICAL:
            return Decimal(candidate.tag) if _DECIMAL.fullmatch(candidate.tag) else None


def _ranked(candidates: Iterable[TagCandidate], order: TagOrder) -> list[tuple[_Rank, TagCandidate]]:
    unique = {candidate.tag: candidate for candidate in candidates}
    placed = [
        (rank, candidate) for candidate in unique.values() if (rank := _rank(order, candidate)) is not None
    ]
    # Ties: the more explicit spelling of one version (sorts last) first; equal build times by ascending tag.
    placed.sort(key=lambda pair: pair[1].tag, reverse=order is TagOrder.SEMVER)
    placed.sort(key=lambda pair: pair[0], reverse=True)
    return placed


def rank_tags(candidates: Iterable[TagCandidate], order: TagOrder) -> list[TagCandidate]:
    """Distinct tags that ``order`` can place, best first; ties as the module docstring says."""
    return [candidate for _, candidate in _ranked(candidates, order)]


def select_update(
    *,
    current_tag: str | None,
    candidates: Sequence[TagCandidate],
    policy: TagPolicy,
    order: TagOrder | None = None,
    current_created: datetime | None = None,
    min_age: timedelta | None = None,
    now: datetime | None = None,
) -> UpdateDecision:
    """Pick the newest tag ``policy`` allows if it is newer than ``current_tag`` under ``order``.

    ``order`` defaults to the policy's own (semver for ``semver:``, build time otherwise). The current
    image's build time may be given, or found among the candidates when the registry listed it. With
    ``min_age`` (and ``now``), candidates that have not soaked that long are left out.
    """
    if min_age is None or now is None:
        return _select(current_tag, candidates, policy, order, current_created)
    soaked = [candidate for candidate in candidates if candidate.soaked(min_age, now)]
    decision = _select(current_tag, soaked, policy, order, current_created, every=candidates)
    if decision.changes:
        return decision
    unsoaked = _select(current_tag, candidates, policy, order, current_created)
    if not unsoaked.changes:
        return decision
    waiting = next(c for c in candidates if c.tag == unsoaked.new_tag)
    ready = waiting.ready_at(min_age)
    until = "its build time is unknown" if ready is None else f"it soaks until {_moment(ready)}"
    return _no_change(
        NoChangeReason.SOAKING, f"{waiting.tag} is newer than {current_tag}, but {until} (min-age)"
    )


def _moment(moment: datetime) -> str:
    if moment.year == datetime.max.year:
        return "the min-age annotation reads"
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def is_step_back(order: TagOrder, current: TagCandidate, written: TagCandidate) -> bool:
    """Whether ``current`` ranks below ``written`` under ``order`` (unknown ranks are not a step back:
    the selection refuses to move from a tag it cannot place anyway)."""
    current_rank, written_rank = _rank(order, current), _rank(order, written)
    if current_rank is None or written_rank is None or current.tag == written.tag:
        return False
    return bool(current_rank < written_rank)


def _select(
    current_tag: str | None,
    candidates: Sequence[TagCandidate],
    policy: TagPolicy,
    order: TagOrder | None,
    current_created: datetime | None,
    every: Sequence[TagCandidate] | None = None,
) -> UpdateDecision:
    order = order or policy.default_order
    if current_tag is None:
        return _no_change(NoChangeReason.CURRENT_HAS_NO_TAG, "the image has no tag to compare against")
    eligible = [candidate for candidate in candidates if policy.matches(candidate.tag)]
    if not eligible:
        return _no_change(NoChangeReason.NO_ELIGIBLE_TAG, f"no tag matches {policy}")
    ranked = _ranked(eligible, order)
    if not ranked:
        if order is TagOrder.CREATED:
            return _no_change(
                NoChangeReason.CANDIDATE_TIMESTAMP_MISSING,
                f"no tag matching {policy} has a known build time",
            )
        return _no_change(NoChangeReason.NO_ELIGIBLE_TAG, f"no tag matching {policy} reads as {order} order")
    best_rank, best = ranked[0]
    if best.tag == current_tag:
        return _no_change(NoChangeReason.ALREADY_NEWEST, f"{current_tag} is the newest tag matching {policy}")
    if current_created is None:
        current_created = next((c.created for c in every or candidates if c.tag == current_tag), None)
    current_rank = _rank(order, TagCandidate(current_tag, current_created))
    if current_rank is None:
        if order is TagOrder.CREATED:
            return _no_change(
                NoChangeReason.CURRENT_TIMESTAMP_MISSING,
                f"the build time of the current tag {current_tag} is unknown, so {best.tag} may not be newer",
            )
        return _no_change(
            NoChangeReason.CURRENT_NOT_ORDERABLE,
            f"the current tag {current_tag} does not read in {order} order, so {best.tag} may not be newer",
        )
    if best_rank == current_rank:
        return _no_change(
            NoChangeReason.ALREADY_NEWEST, f"{current_tag} is as new as {best.tag} in {order} order"
        )
    if best_rank < current_rank:
        return _no_change(
            NoChangeReason.WOULD_DOWNGRADE,
            f"the newest tag matching {policy} is {best.tag}, older than the current {current_tag}",
        )
    return UpdateDecision(best.tag, None, f"{current_tag} -> {best.tag} ({order} order, policy {policy})")


def _no_change(reason: NoChangeReason, detail: str) -> UpdateDecision:
    return UpdateDecision(None, reason, detail)
