"""Choosing the tag to move to: the newest eligible tag, and never a step backwards.

Orders, each a total ranking of the tags it can read (tags it cannot read are not candidates):

- ``semver``: by version (``v1.2.3`` and ``1.2.3`` are the same version; equal versions rank by tag).
- ``created``: by the image's build time, newest first; equal times rank by ascending tag, as Flux v1 did.
- ``alphabetical``: the greatest tag in code-point order (for tags such as ``RELEASE.2024-01-31``).
- ``numerical``: the greatest tag read as a decimal number (for build numbers such as ``1042``).

"Newer" is always judged under the same order that ranked the candidates; a release whose current tag is
already ahead of every candidate stays where it is (Flux v1 could move it backwards).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
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


class NoChangeReason(StrEnum):
    """Why no update was chosen; each value is stable for events and metrics."""

    ALREADY_NEWEST = "AlreadyNewest"
    NO_ELIGIBLE_TAG = "NoEligibleTag"
    CURRENT_HAS_NO_TAG = "CurrentHasNoTag"
    CURRENT_NOT_ORDERABLE = "CurrentNotOrderable"
    CURRENT_TIMESTAMP_MISSING = "CurrentTimestampMissing"
    CANDIDATE_TIMESTAMP_MISSING = "CandidateTimestampMissing"
    WOULD_DOWNGRADE = "WouldDowngrade"


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
    placed.sort(key=lambda pair: pair[1].tag)
    placed.sort(key=lambda pair: pair[0], reverse=True)
    return placed


def rank_tags(candidates: Iterable[TagCandidate], order: TagOrder) -> list[TagCandidate]:
    """Distinct tags that ``order`` can place, best first; ties break by ascending tag."""
    return [candidate for _, candidate in _ranked(candidates, order)]


def select_update(
    *,
    current_tag: str | None,
    candidates: Sequence[TagCandidate],
    policy: TagPolicy,
    order: TagOrder | None = None,
    current_created: datetime | None = None,
) -> UpdateDecision:
    """Pick the newest tag ``policy`` allows if it is newer than ``current_tag`` under ``order``.

    ``order`` defaults to the policy's own (semver for ``semver:``, build time otherwise). The current
    image's build time may be given, or found among the candidates when the registry listed it.
    """
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
        current_created = next((c.created for c in candidates if c.tag == current_tag), None)
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
