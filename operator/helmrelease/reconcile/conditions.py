"""Build the next HelmRelease status from the previous one and what just happened; ``now`` is a parameter.

The handler calls one of these per step of the loop: ``status_before_action`` (phase ``Upgrading`` and
friends), ``status_after_action`` (the outcome of a Helm action), ``status_after_record`` (a deploy found done
that the operator had not recorded), ``status_after_decision`` (the loop settled on nothing, wait-retry or
refuse: only then is ``observedGeneration`` written), and for the steps before a plan exists,
``status_after_chart_fetch`` and ``status_after_problem`` (an invalid spec or unreadable values);
``status_after_drift_check`` stamps a drift check and sets ``Drifted`` (``status_after_drift_corrected`` clears it).
Flux v2's requests and ``spec.suspend``: ``status_after_reset`` zeroes the counters, ``status_with_handled`` echoes
the tokens a pass handled, ``status_when_suspended`` and ``status_after_resume`` set and clear ``Suspended``.

Every change to a status goes through one ``StatusUpdate`` (a TypedDict of the status fields), so mypy refuses a
misspelled field or a value of the wrong type (a phase that is not a ``Phase``) that ``model_copy`` would accept.

A failure caused by the cluster (``Outcome.cluster_side``) plans its own retry: ``retryAt`` after a backoff that
grows with ``clusterFailures`` (``plan.cluster_retry_delay``), and the message says when and which attempt.

Conditions keep the Flux v1 meaning (``ChartFetched``, ``Deployed``, ``Released``, ``RolledBack``,
``Tested``), plus ``Drifted`` and ``Suspended`` (True is the abnormal state of both); ``Ready`` is derived from them
and never set directly: ``Suspended`` first, then a failed fetch, release or test. A condition's ``lastUpdateTime`` moves
when its status, reason or message changes and its ``lastTransitionTime`` only when its status flips, so a
pass that changes nothing produces an identical status, and no write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, TypedDict

from helmrelease.api.constants import Action, ConditionStatus, ConditionType, HelmStatus, Phase, Reason
from helmrelease.api.spec import HelmReleaseSpec
from helmrelease.api.status import Condition, HelmReleaseStatus
from helmrelease.reconcile.actions import terms
from helmrelease.reconcile.plan import (
    Desired,
    ObservedRelease,
    Plan,
    Recorded,
    cluster_retry_delay,
    rolled_back_unrecorded,
)

#: Condition messages are read in ``kubectl get``/``describe``; Helm's errors can run to many kilobytes.
MESSAGE_LIMIT = 1024
_ELLIPSIS = " … "
_CONDITION_ORDER = tuple(ConditionType)

Conditions = tuple[Condition, ...]


class StatusUpdate(TypedDict, total=False):
    """The fields of ``HelmReleaseStatus`` a step changes (the unit tests hold the two field lists together)."""

    observed_generation: int | None
    phase: Phase | None
    release_name: str | None
    release_namespace: str | None
    release_status: str | None
    revision: str | None
    last_attempted_revision: str | None
    rollback_count: int
    conditions: Conditions
    last_applied_digest: str | None
    last_attempted_digest: str | None
    last_attempted_generation: int | None
    helm_revision: int | None
    failures: int
    last_action: Action | None
    last_drift_check: datetime | None
    retry_at: datetime | None
    cluster_failures: int
    last_handled_reconcile_at: str | None
    last_handled_force_at: str | None
    last_handled_reset_at: str | None


@dataclass(frozen=True)
class Outcome:
    """How a Helm action ended, and the release as Helm reports it afterwards."""

    succeeded: bool
    #: Helm's error output when the action failed.
    error: str = ""
    #: The release's revision afterwards; None when there is no release.
    helm_revision: int | None = None
    release_status: HelmStatus | None = None
    #: The failure was the cluster's doing (a quota, a webhook or the API server down), not the configuration's.
    cluster_side: bool = False
    #: After a rollback: the revision it went back to (Helm records the rollback itself as a new revision).
    rolled_back_to: int | None = None
    #: What a deploy applied, as helm printed it: the objects to mark, without asking helm or the API again.
    manifest: str | None = None


def timeout_note(action: Action, spec: HelmReleaseSpec) -> str:
    """Which field bounded a Helm action that ran out of time, and its value, so a person knows what to raise."""
    field = terms(action).timeout_field
    seconds = {"spec.rollback.timeout": spec.rollback.timeout, "spec.test.timeout": spec.test.timeout}.get(
        field, spec.timeout
    )
    return f"{field} is {seconds}s; raise it if the release needs longer"


def trim_message(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """Fit ``text`` in ``limit`` characters, keeping its start and its last line (Helm's actual error)."""
    text = text.strip()
    if len(text) <= limit:
        return text
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1]
    tail_room = limit // 2
    tail = last if len(last) <= tail_room else "…" + last[-(tail_room - 1) :]
    head = text[: limit - len(tail) - len(_ELLIPSIS)].rstrip()
    return f"{head}{_ELLIPSIS}{tail}"


def status_before_action(
    previous: HelmReleaseStatus, desired: Desired, action: Action, now: datetime
) -> HelmReleaseStatus:
    """Show that a long Helm action has started (Flux v1's in-progress phases); short ones change nothing."""
    name, chart = desired.release, desired.chart_revision
    progress: dict[Action, tuple[Phase, ConditionType, str]] = {
        Action.INSTALL: (
            Phase.INSTALLING,
            ConditionType.RELEASED,
            f"Installing chart {chart} as release {name}",
        ),
        Action.UPGRADE: (
            Phase.UPGRADING,
            ConditionType.RELEASED,
            f"Upgrading release {name} to chart {chart}",
        ),
        Action.TEST: (Phase.TESTING, ConditionType.TESTED, f"Testing release {name}"),
        Action.ROLLBACK: (Phase.ROLLING_BACK, ConditionType.ROLLED_BACK, f"Rolling back release {name}"),
    }
    if action not in progress:
        return previous
    phase, condition_type, message = progress[action]
    stamp = _stamp(now)
    conditions = _set(
        previous.conditions, condition_type, ConditionStatus.UNKNOWN, Reason.PROGRESSING, message, stamp
    )
    update: StatusUpdate = {"phase": phase, **_release_of(desired)}
    if action in {Action.INSTALL, Action.UPGRADE}:
        update["last_attempted_revision"] = desired.chart_revision
    return _finish(previous, update, conditions, stamp)


def status_after_action(
    previous: HelmReleaseStatus, desired: Desired, action: Action, outcome: Outcome, now: datetime
) -> HelmReleaseStatus:
    """Record a Helm action's outcome: the plan's memory (digests, revision, last action) and conditions.

    An adoption is recorded as the upgrade it is: the plan goes on from a release that is now ours.
    """
    if not action.runs_helm:
        raise ValueError(f"{action} is a decision, not a Helm action; use status_after_decision")
    if action is Action.ADOPT:
        action = Action.UPGRADE
    stamp = _stamp(now)
    update: StatusUpdate = {
        "last_action": action,
        "failures": 0 if outcome.succeeded else previous.failures + 1,
        "helm_revision": outcome.helm_revision,
        "release_status": _helm_status(outcome.release_status),
        **_planned_retry(previous, desired, action, outcome, stamp),
    }
    if action is not Action.UNINSTALL_PREVIOUS or outcome.succeeded:
        # Until the previous release is gone, the status keeps its name: the next pass must still find it.
        update.update(_release_of(desired))
    match action:
        case Action.INSTALL | Action.UPGRADE:
            conditions = _after_deploy(previous, desired, action, outcome, update, stamp)
        case Action.TEST:
            conditions = _after_test(previous, desired, outcome, update, stamp)
        case Action.ROLLBACK:
            conditions = _after_rollback(previous, desired, outcome, update, stamp)
        case _:
            conditions = _after_housekeeping(previous, desired, action, outcome, update, stamp)
    return _finish(previous, update, conditions, stamp)


def status_after_decision(
    previous: HelmReleaseStatus, desired: Desired, plan: Plan, release: ObservedRelease | None, now: datetime
) -> HelmReleaseStatus:
    """Record where the loop settled; only a settled plan writes ``observedGeneration``."""
    if plan.action.runs_helm:
        raise ValueError(f"{plan.action} is a Helm action; use status_after_action")
    if not plan.settled:
        return previous
    stamp = _stamp(now)
    update: StatusUpdate = {
        "observed_generation": desired.generation,
        **_release_of(desired),
        "release_status": _helm_status(release.status if release is not None else None),
    }
    conditions = previous.conditions
    if plan.action is Action.REFUSE:
        # The release is not ours to manage: its Helm status (ReleaseStatus column) would read as this one's.
        update["release_status"] = None
    if plan.action is Action.NOTHING and plan.reason in {Reason.IN_SYNC, Reason.TEST_FAILURE_IGNORED}:
        update["phase"] = Phase.SUCCEEDED
        conditions = _ensure_released(conditions, Reason.IN_SYNC, plan.message, stamp)
        if not desired.test:
            # Tests were turned off: a pending or failed test no longer holds the release back.
            conditions = _without(conditions, ConditionType.TESTED)
    elif plan.action is Action.REFUSE:
        update["phase"] = Phase.FAILED
        conditions = _set(
            conditions, ConditionType.RELEASED, ConditionStatus.FALSE, plan.reason, plan.message, stamp
        )
    elif plan.reason in {Reason.RETRIES_EXHAUSTED, Reason.WAITING_FOR_CHANGE}:
        # The rollback succeeded, but that is not where this ends: say that no retry is coming, and what to do.
        conditions = _set(
            conditions, ConditionType.RELEASED, ConditionStatus.FALSE, plan.reason, plan.message, stamp
        )
    return _finish(previous, update, conditions, stamp)


def status_after_record(
    previous: HelmReleaseStatus, desired: Desired, release: ObservedRelease, now: datetime
) -> HelmReleaseStatus:
    """Record a deploy (or a rollback) that Helm finished but the operator did not live to record
    (``Action.RECORD``).

    It is the outcome the interrupted install (revision 1) or upgrade would have recorded, so the plan goes on
    from there (a test, if enabled) instead of deploying the same chart and values again.
    """
    outcome = Outcome(True, helm_revision=release.revision, release_status=release.status)
    if rolled_back_unrecorded(desired, release, Recorded.from_status(previous)):
        # The interrupted action was the rollback after a failure: record it as its own outcome would have.
        return status_after_action(previous, desired, Action.ROLLBACK, outcome, now)
    action = Action.INSTALL if release.revision == 1 else Action.UPGRADE
    return status_after_action(previous, desired, action, outcome, now)


def status_after_chart_fetch(
    previous: HelmReleaseStatus, *, chart: str, error: str | None, now: datetime
) -> HelmReleaseStatus:
    """Record fetching ``chart`` (a description such as ``app 0.2.0 from https://charts.example.com/``).

    Not a final outcome: a failed fetch is retried, so ``observedGeneration`` stays.
    """
    stamp = _stamp(now)
    update: StatusUpdate = {}
    if error is None:
        status, reason, message = ConditionStatus.TRUE, Reason.CHART_FETCH_SUCCEEDED, f"Fetched chart {chart}"
        if previous.phase is Phase.CHART_FETCH_FAILED:
            update["phase"] = Phase.CHART_FETCHED
    else:
        status, reason = ConditionStatus.FALSE, Reason.CHART_FETCH_FAILED
        message = trim_message(f"Fetching chart {chart} failed: {error}")
        update["phase"] = Phase.CHART_FETCH_FAILED
    conditions = _set(previous.conditions, ConditionType.CHART_FETCHED, status, reason, message, stamp)
    return _finish(previous, update, conditions, stamp)


def status_after_problem(
    previous: HelmReleaseStatus, *, reason: Reason, message: str, generation: int | None, now: datetime
) -> HelmReleaseStatus:
    """Record a problem that stops the loop before Helm is called (``SpecError``, ``ValuesError``).

    Pass ``generation`` when the problem is final for this generation (an invalid spec) so
    ``observedGeneration`` records it; leave it None for problems that may clear by themselves (a Secret not
    created yet).
    """
    stamp = _stamp(now)
    update: StatusUpdate = {"phase": Phase.FAILED}
    if generation is not None:
        update["observed_generation"] = generation
    conditions = _set(
        previous.conditions,
        ConditionType.RELEASED,
        ConditionStatus.FALSE,
        reason,
        trim_message(message),
        stamp,
    )
    return _finish(previous, update, conditions, stamp)


def status_after_drift_check(
    previous: HelmReleaseStatus, now: datetime, *, release: str, drift: str | None
) -> HelmReleaseStatus:
    """Record a comparison of the release's resources with its manifest: when, and ``Drifted`` with what
    differs (``drift``, from ``drift.drift_summary``) or False when nothing does."""
    stamp = _stamp(now)
    update: StatusUpdate = {"last_drift_check": stamp}
    if drift is not None:
        status, reason, message = ConditionStatus.TRUE, Reason.DRIFT_DETECTED, trim_message(drift)
    else:
        status, reason = ConditionStatus.FALSE, Reason.NO_DRIFT
        message = f"The resources of release {release} are as its manifest declares"
    conditions = _set(previous.conditions, ConditionType.DRIFTED, status, reason, message, stamp)
    return _finish(previous, update, conditions, stamp)


def status_after_drift_corrected(
    previous: HelmReleaseStatus, *, release: str, revision: int | None, now: datetime
) -> HelmReleaseStatus:
    """The upgrade run to correct a drift succeeded: ``Drifted`` is False until a check finds drift again."""
    if previous.condition(ConditionType.DRIFTED) is None:
        return previous
    stamp = _stamp(now)
    message = f"Upgraded release {release} (revision {revision}) to correct the drift"
    conditions = _set(
        previous.conditions,
        ConditionType.DRIFTED,
        ConditionStatus.FALSE,
        Reason.DRIFT_CORRECTED,
        message,
        stamp,
    )
    return _finish(previous, {}, conditions, stamp)


def status_after_reset(previous: HelmReleaseStatus) -> HelmReleaseStatus:
    """``reconcile.fluxcd.io/resetAt``: zero the failure and rollback counters and forget the last attempt.

    Forgetting the attempt (digest, generation, action) is what makes the counters' reset count: the plan then
    decides from the release and the last applied chart and values alone, so a failed install, upgrade or test
    is tried again, and retries after a rollback start over. Conditions stay until that decision is recorded.
    """
    update: StatusUpdate = {
        "failures": 0,
        "rollback_count": 0,
        "cluster_failures": 0,
        "retry_at": None,
        "last_attempted_digest": None,
        "last_attempted_generation": None,
        "last_action": None,
    }
    return previous.model_copy(update=update)


def status_with_handled(
    previous: HelmReleaseStatus, *, reconcile: str | None, force: str | None, reset: str | None
) -> HelmReleaseStatus:
    """Echo the request tokens a finished pass handled (None: that request was not handled by it)."""
    update: StatusUpdate = {}
    if reconcile is not None:
        update["last_handled_reconcile_at"] = reconcile
    if force is not None:
        update["last_handled_force_at"] = force
    if reset is not None:
        update["last_handled_reset_at"] = reset
    return previous.model_copy(update=update) if update else previous


#: How to resume, in every Suspended message (the CLI command and the field).
RESUME_HINT: Final = "resume it with `helmrelease resume NAME` or by setting spec.suspend to false"


def status_when_suspended(
    previous: HelmReleaseStatus, *, generation: int, now: datetime
) -> HelmReleaseStatus:
    """``spec.suspend: true``: a final outcome for this generation, saying so in ``Ready`` and how to resume."""
    stamp = _stamp(now)
    message = (
        "The HelmRelease is suspended (spec.suspend: true): no Helm action, drift correction or image update "
        f"runs until it is resumed; {RESUME_HINT}"
    )
    conditions = _set(
        previous.conditions, ConditionType.SUSPENDED, ConditionStatus.TRUE, Reason.SUSPENDED, message, stamp
    )
    return _finish(previous, {"observed_generation": generation}, conditions, stamp)


def status_after_resume(previous: HelmReleaseStatus, now: datetime) -> HelmReleaseStatus:
    """``spec.suspend`` is off (again): the ``Suspended`` condition goes, and ``Ready`` says what the rest says."""
    if previous.condition(ConditionType.SUSPENDED) is None:
        return previous
    stamp = _stamp(now)
    return _finish(previous, {}, _without(previous.conditions, ConditionType.SUSPENDED), stamp)


def _after_deploy(
    previous: HelmReleaseStatus,
    desired: Desired,
    action: Action,
    outcome: Outcome,
    update: StatusUpdate,
    stamp: datetime,
) -> Conditions:
    installing = action is Action.INSTALL
    name, chart = desired.release, desired.chart_revision
    update["last_attempted_digest"] = desired.digest
    update["last_attempted_generation"] = desired.generation
    update["last_attempted_revision"] = chart
    conditions = previous.conditions
    if outcome.succeeded:
        reason = terms(action).succeeded
        message = (
            f"Installed chart {chart} as release {name} (revision {outcome.helm_revision})"
            if installing
            else f"Upgraded release {name} to chart {chart} (revision {outcome.helm_revision})"
        )
        update["phase"] = Phase.DEPLOYED if desired.test else Phase.SUCCEEDED
        update["last_applied_digest"] = desired.digest
        update["revision"] = chart
        update["rollback_count"] = 0
        conditions = _without(conditions, ConditionType.ROLLED_BACK)
        if desired.test:
            conditions = _set(
                conditions,
                ConditionType.TESTED,
                ConditionStatus.UNKNOWN,
                Reason.TEST_PENDING,
                f"Revision {outcome.helm_revision} has not been tested yet",
                stamp,
            )
        else:
            conditions = _without(conditions, ConditionType.TESTED)
        status = ConditionStatus.TRUE
    else:
        reason = terms(action).failed
        verb = (
            f"Installing chart {chart} as release {name}"
            if installing
            else f"Upgrading {name} to chart {chart}"
        )
        message = _failure_message(f"{verb} failed: {outcome.error}", update)
        update["phase"] = Phase.DEPLOY_FAILED
        if desired.digest != previous.last_attempted_digest:
            update["rollback_count"] = 0
        status = ConditionStatus.FALSE
    conditions = _set(conditions, ConditionType.DEPLOYED, status, reason, message, stamp)
    return _set(conditions, ConditionType.RELEASED, status, reason, message, stamp)


def _after_test(
    previous: HelmReleaseStatus, desired: Desired, outcome: Outcome, update: StatusUpdate, stamp: datetime
) -> Conditions:
    # A test is part of the current attempt; recording it tells the plan whether it failed before a change.
    update["last_attempted_digest"] = desired.digest
    update["last_attempted_generation"] = desired.generation
    subject = f"Tests of release {desired.release} revision {outcome.helm_revision}"
    conditions = previous.conditions
    reasons = terms(Action.TEST)
    if outcome.succeeded:
        update["phase"] = Phase.SUCCEEDED
        message = f"{subject} passed"
        conditions = _set(
            conditions, ConditionType.TESTED, ConditionStatus.TRUE, reasons.succeeded, message, stamp
        )
        return _ensure_released(conditions, reasons.succeeded, message, stamp)
    update["phase"] = Phase.TEST_FAILED
    message = _failure_message(f"{subject} failed: {outcome.error}", update)
    if desired.ignore_test_failures:
        return _set(
            conditions,
            ConditionType.TESTED,
            ConditionStatus.FALSE,
            Reason.TEST_FAILURE_IGNORED,
            message,
            stamp,
        )
    conditions = _set(conditions, ConditionType.TESTED, ConditionStatus.FALSE, reasons.failed, message, stamp)
    return _set(conditions, ConditionType.RELEASED, ConditionStatus.FALSE, reasons.failed, message, stamp)


def _after_rollback(
    previous: HelmReleaseStatus, desired: Desired, outcome: Outcome, update: StatusUpdate, stamp: datetime
) -> Conditions:
    name = desired.release
    reasons = terms(Action.ROLLBACK)
    if not outcome.succeeded:
        update["phase"] = Phase.ROLLBACK_FAILED
        update["last_applied_digest"] = None
        message = _failure_message(f"Rolling back release {name} failed: {outcome.error}", update)
        conditions = _set(
            previous.conditions,
            ConditionType.ROLLED_BACK,
            ConditionStatus.FALSE,
            reasons.failed,
            message,
            stamp,
        )
        return _set(conditions, ConditionType.RELEASED, ConditionStatus.FALSE, reasons.failed, message, stamp)
    count = previous.rollback_count + 1
    update["phase"] = Phase.ROLLED_BACK
    update["rollback_count"] = count
    if previous.last_applied_digest == desired.digest:
        # What was rolled back had been applied (its test failed): the revision now running is an older one.
        update["last_applied_digest"] = None
        update["revision"] = None
    cause = "test" if previous.last_action is Action.TEST else "upgrade"
    # Helm records a rollback as a new revision: name the one it went back to, and the new one.
    target = (
        "the previous revision" if outcome.rolled_back_to is None else f"revision {outcome.rolled_back_to}"
    )
    where = f"{target} (now revision {outcome.helm_revision}, rollback {count})"
    conditions = _set(
        previous.conditions,
        ConditionType.ROLLED_BACK,
        ConditionStatus.TRUE,
        reasons.succeeded,
        f"Rolled back release {name} to {where}",
        stamp,
    )
    return _set(
        conditions,
        ConditionType.RELEASED,
        ConditionStatus.FALSE,
        reasons.succeeded,
        f"Chart {desired.chart_revision} is not released: the {cause} failed and release {name} was rolled "
        f"back to {where}",
        stamp,
    )


def _after_housekeeping(
    previous: HelmReleaseStatus,
    desired: Desired,
    action: Action,
    outcome: Outcome,
    update: StatusUpdate,
    stamp: datetime,
) -> Conditions:
    """Unlock and uninstall: they prepare or end a release rather than deploy it."""
    name = desired.release
    old = f"{previous.release_namespace or desired.namespace}/{previous.release_name}"
    succeeded: dict[Action, tuple[ConditionStatus, str]] = {
        Action.UNLOCK: (
            ConditionStatus.UNKNOWN,
            f"Recovered release {name} from an interrupted operation; reconciling it again",
        ),
        Action.UNINSTALL: (ConditionStatus.FALSE, f"Uninstalled release {name}"),
        Action.UNINSTALL_PREVIOUS: (
            ConditionStatus.UNKNOWN,
            f"Uninstalled release {old}, which this HelmRelease made before spec.releaseName or "
            f"spec.targetNamespace moved its release to {name}; installing {name} next",
        ),
    }
    failed: dict[Action, str] = {
        Action.UNLOCK: f"Recovering release {name} from its pending state failed",
        Action.UNINSTALL: f"Uninstalling release {name} failed",
        Action.UNINSTALL_PREVIOUS: (
            f"Uninstalling release {old}, which this HelmRelease made before its release moved to {name}, "
            "failed (retrying)"
        ),
    }
    if outcome.succeeded:
        status, message = succeeded[action]
        reason = terms(action).succeeded
        if action in (Action.UNINSTALL, Action.UNINSTALL_PREVIOUS):
            update["last_applied_digest"] = None
            update["revision"] = None
    else:
        status, reason = ConditionStatus.FALSE, terms(action).failed
        message = trim_message(f"{failed[action]}: {outcome.error}")
        update["phase"] = Phase.FAILED
    return _set(previous.conditions, ConditionType.RELEASED, status, reason, message, stamp)


def _release_of(desired: Desired) -> StatusUpdate:
    return {"release_name": desired.release_name, "release_namespace": desired.namespace}


def _planned_retry(
    previous: HelmReleaseStatus, desired: Desired, action: Action, outcome: Outcome, stamp: datetime
) -> StatusUpdate:
    """``retry_at`` and ``cluster_failures`` after an action: a cluster-side failure plans the next retry, whose
    wait doubles while the same configuration keeps failing that way; anything else clears them."""
    if outcome.succeeded or not outcome.cluster_side or not terms(action).cluster_retried:
        return {"retry_at": None, "cluster_failures": 0}
    same = previous.retry_at is not None and (
        previous.last_attempted_digest,
        previous.last_attempted_generation,
    ) == (desired.digest, desired.generation)
    failures = previous.cluster_failures + 1 if same else 1
    return {
        "retry_at": stamp + timedelta(seconds=cluster_retry_delay(failures)),
        "cluster_failures": failures,
    }


def _failure_message(text: str, update: StatusUpdate) -> str:
    """A failure's message, ending with the planned retry when the cluster caused it."""
    retry_at = update.get("retry_at")
    if retry_at is None:
        return trim_message(text)
    when = retry_at.isoformat().replace("+00:00", "Z")
    note = (
        f"; the cluster caused this, not the configuration: trying again at {when} "
        f"(attempt {update.get('cluster_failures', 0) + 1})"
    )
    return trim_message(text, MESSAGE_LIMIT - len(note)) + note


def _helm_status(status: HelmStatus | None) -> str | None:
    return None if status is None else status.value


def _stamp(now: datetime) -> datetime:
    """Kubernetes timestamps are UTC with whole seconds; a naive time would be ambiguous, so it is refused."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC).replace(microsecond=0)


def _set(
    conditions: Conditions,
    condition_type: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    stamp: datetime,
) -> Conditions:
    """Set one condition; ``reason`` is a plain string because Ready copies reasons from other conditions."""
    current = next((c for c in conditions if c.type == condition_type), None)
    transition = stamp
    if current is not None:
        if (current.status, current.reason, current.message) == (status, reason, message):
            return conditions
        if current.status == status and current.last_transition_time is not None:
            transition = current.last_transition_time
    replacement = Condition(
        type=condition_type,
        status=status,
        reason=reason,
        message=message,
        last_update_time=stamp,
        last_transition_time=transition,
    )
    return (*_without(conditions, condition_type), replacement)


def _ensure_released(conditions: Conditions, reason: Reason, message: str, stamp: datetime) -> Conditions:
    """Make Released True, keeping the message of the install or upgrade that released it, if any."""
    current = next((c for c in conditions if c.type == ConditionType.RELEASED), None)
    if current is not None and current.status is ConditionStatus.TRUE:
        return conditions
    return _set(conditions, ConditionType.RELEASED, ConditionStatus.TRUE, reason, message, stamp)


def _without(conditions: Conditions, condition_type: ConditionType) -> Conditions:
    return tuple(c for c in conditions if c.type != condition_type)


def _ready(conditions: Conditions) -> tuple[ConditionStatus, str, str]:
    """The summary: the first condition that holds the release back decides, else Released."""
    by_type = {c.type: c for c in conditions}
    suspended = by_type.get(ConditionType.SUSPENDED)
    if suspended is not None and suspended.status is ConditionStatus.TRUE:
        return ConditionStatus.FALSE, suspended.reason, suspended.message
    fetched = by_type.get(ConditionType.CHART_FETCHED)
    released = by_type.get(ConditionType.RELEASED)
    tested = by_type.get(ConditionType.TESTED)
    tests_ignored = tested is not None and tested.reason == Reason.TEST_FAILURE_IGNORED
    blockers = (
        fetched if fetched is not None and fetched.status is ConditionStatus.FALSE else None,
        released if released is not None and released.status is not ConditionStatus.TRUE else None,
        tested
        if tested is not None and tested.status is not ConditionStatus.TRUE and not tests_ignored
        else None,
    )
    blocker = next((c for c in blockers if c is not None), None)
    if blocker is not None:
        return blocker.status, blocker.reason, blocker.message
    if released is None:
        return ConditionStatus.UNKNOWN, Reason.PROGRESSING, "The release has not been reconciled yet"
    message = released.message
    if tests_ignored:
        message += "; its tests failed and test.ignoreFailures is set"
    return ConditionStatus.TRUE, released.reason, message


def _finish(
    previous: HelmReleaseStatus, update: StatusUpdate, conditions: Conditions, stamp: datetime
) -> HelmReleaseStatus:
    status, reason, message = _ready(conditions)
    conditions = _set(conditions, ConditionType.READY, status, reason, message, stamp)
    order: dict[str, int] = {condition_type: index for index, condition_type in enumerate(_CONDITION_ORDER)}
    update["conditions"] = tuple(sorted(conditions, key=lambda c: order.get(c.type, len(order))))
    return previous.model_copy(update=update)
