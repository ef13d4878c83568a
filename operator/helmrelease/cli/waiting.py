"""``helmrelease reconcile``'s request and its wait, as a state machine over snapshots of the HelmRelease.

A request is a fresh token in ``reconcile.fluxcd.io/requestedAt`` (and ``forceAt`` or ``resetAt`` with the same
token); the operator echoes it in ``status.lastHandledReconcileAt`` when it has handled it. What one snapshot
means, decided by ``progress_of`` (pure, table-tested):

========================================  ===========  ==========================================
snapshot                                  state        exit
========================================  ===========  ==========================================
gone                                      ``Gone``     2
token not echoed yet                      ``Pending``  keep waiting (1 when the time is up)
echoed, Ready Unknown or missing, or a    ``Working``  keep waiting (1 when the time is up)
Helm action under way (phase Upgrading
...), or Ready=True of an older
generation than the spec's
echoed, Ready=False                       ``Failed``   1
echoed, Ready=True                        ``Ready``    0
========================================  ===========  ==========================================

``wait_for_result`` drives it: it reads snapshots through a function it is given (the cluster in the CLI, a
list in the unit tests), reports each change of state, and stops at a final one or at the deadline.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from helmrelease.api.constants import (
    FORCE_REQUEST_ANNOTATION,
    RECONCILE_REQUEST_ANNOTATION,
    RESET_REQUEST_ANNOTATION,
    ConditionStatus,
    ConditionType,
    Phase,
)

#: Phases in which a Helm action is running: a Ready condition read then may still be the previous pass's.
ACTING_PHASES: Final = frozenset({Phase.INSTALLING, Phase.UPGRADING, Phase.TESTING, Phase.ROLLING_BACK})


class Mode(StrEnum):
    """What the request asks beyond a reconcile."""

    RECONCILE = "reconcile"
    FORCE = "force"
    RESET = "reset"


def fresh_token(now: dt.datetime, previous: str | None = None) -> str:
    """An RFC 3339 time in UTC with microseconds, as Flux writes its tokens; never the one already set (two
    requests within a microsecond get distinct tokens)."""
    moment = now.astimezone(dt.UTC)
    while True:
        token = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if token != previous:
            return token
        moment += dt.timedelta(microseconds=1)


def request_patch(token: str, mode: Mode) -> dict[str, Any]:
    """The merge patch that asks for the reconcile: ``requestedAt`` always, ``forceAt``/``resetAt`` as asked."""
    annotations = {RECONCILE_REQUEST_ANNOTATION: token}
    if mode is Mode.FORCE:
        annotations[FORCE_REQUEST_ANNOTATION] = token
    elif mode is Mode.RESET:
        annotations[RESET_REQUEST_ANNOTATION] = token
    return {"metadata": {"annotations": annotations}}


class State(StrEnum):
    GONE = "Gone"
    PENDING = "Pending"
    WORKING = "Working"
    READY = "Ready"
    FAILED = "Failed"

    @property
    def final(self) -> bool:
        return self in {State.GONE, State.READY, State.FAILED}


@dataclass(frozen=True)
class Progress:
    """Where the request stands in one snapshot, and the sentence a person reads about it."""

    state: State
    message: str
    reason: str = ""
    #: Whether the operator echoed the force or reset token as well (None: not asked for).
    acknowledged: bool | None = None

    def line(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.state}{why}: {self.message}"


def _ready(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == ConditionType.READY:
            return condition
    return None


def _acknowledged(status: Mapping[str, Any], token: str, mode: Mode) -> bool | None:
    field = {Mode.FORCE: "lastHandledForceAt", Mode.RESET: "lastHandledResetAt"}.get(mode)
    return None if field is None else status.get(field) == token


def progress_of(obj: Mapping[str, Any] | None, token: str, mode: Mode = Mode.RECONCILE) -> Progress:
    """What a snapshot of the HelmRelease (None: it is gone) says about the request ``token`` (see the table)."""
    if obj is None:
        return Progress(State.GONE, "the HelmRelease was deleted")
    status = obj.get("status") or {}
    handled = status.get("lastHandledReconcileAt")
    if handled != token:
        seen = f"status.lastHandledReconcileAt is {handled!r}" if handled else "no request handled yet"
        return Progress(State.PENDING, f"waiting for the operator to pick up the request ({seen})")
    acknowledged = _acknowledged(status, token, mode)
    ready = _ready(obj)
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    phase = status.get("phase")
    if ready is None or ready.get("status") not in (ConditionStatus.TRUE, ConditionStatus.FALSE):
        message = str(ready.get("message") or "") if ready is not None else ""
        return Progress(State.WORKING, message or "the operator is reconciling", "", acknowledged)
    reason, message = str(ready.get("reason") or ""), str(ready.get("message") or "")
    if phase in ACTING_PHASES:
        return Progress(State.WORKING, f"phase {phase}", reason, acknowledged)
    if ready.get("status") == ConditionStatus.FALSE:
        return Progress(State.FAILED, message or "not Ready", reason, acknowledged)
    if isinstance(generation, int) and isinstance(observed, int) and observed < generation:
        # Ready=True from before the spec changed: the new generation's outcome is still to come.
        what = f"generation {generation} not observed yet (observedGeneration {observed})"
        return Progress(State.WORKING, what, reason, acknowledged)
    return Progress(State.READY, message or "Ready", reason, acknowledged)


@dataclass(frozen=True)
class Outcome:
    """How the wait ended: the last progress seen, and whether the deadline ended it."""

    progress: Progress
    timed_out: bool = False


async def wait_for_result(
    read: Callable[[], Awaitable[Mapping[str, Any] | None]],
    token: str,
    *,
    mode: Mode,
    wait_seconds: float,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    report: Callable[[Progress], None],
    interval: float = 1.0,
) -> Outcome:
    """Read snapshots until one is final or ``wait_seconds`` have passed on ``clock`` (injected, like ``sleep``, so
    tests drive it without waiting); ``report`` hears every change of state or message. The last read happens at
    the deadline, so a result that just came counts."""
    deadline = clock() + wait_seconds
    last: Progress | None = None
    while True:
        progress = progress_of(await read(), token, mode)
        if progress != last:
            report(progress)
            last = progress
        if progress.state.final:
            return Outcome(progress)
        remaining = deadline - clock()
        if remaining <= 0:
            return Outcome(progress, timed_out=True)
        await sleep(min(interval, remaining))


def verdict(outcome: Outcome, timeout_text: str) -> tuple[int, str]:
    """The exit code and the last line: 0 Ready; 1 handled but not Ready, or the time ran out (saying which
    stage it was in); 2 the HelmRelease went away."""
    progress = outcome.progress
    if outcome.timed_out:
        stage = (
            "the operator did not pick up the request"
            if progress.state is State.PENDING
            else "the request was handled but the release did not settle"
        )
        return 1, f"timed out after {timeout_text}: {stage}; last seen: {progress.line()}"
    if progress.state is State.READY:
        return 0, progress.line()
    if progress.state is State.GONE:
        return 2, progress.message
    return 1, f"handled, but not Ready: {progress.line()}"
