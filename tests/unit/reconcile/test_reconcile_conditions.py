"""The status builder: phases, conditions, Ready as their summary, timestamps that move only when they should."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.api.constants import Action, ConditionStatus, ConditionType, HelmStatus, Phase, Reason
from helmrelease.api.ownership import Ownership
from helmrelease.api.spec import HelmReleaseSpec
from helmrelease.api.status import Condition, HelmReleaseStatus
from helmrelease.reconcile.actions import terms
from helmrelease.reconcile.conditions import (
    MESSAGE_LIMIT,
    Outcome,
    StatusUpdate,
    status_after_action,
    status_after_chart_fetch,
    status_after_decision,
    status_after_drift_check,
    status_after_drift_corrected,
    status_after_problem,
    status_after_record,
    status_after_reset,
    status_after_resume,
    status_before_action,
    status_when_suspended,
    status_with_handled,
    timeout_note,
    trim_message,
)
from helmrelease.reconcile.plan import Desired, ObservedRelease, Plan, Recorded, next_action
from helmrelease.reconcile.releases import digest_label

NOW = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
DIGEST = "sha256:" + "d" * 64
OLD_DIGEST = "sha256:" + "0" * 64
DESIRED = Desired(
    release_name="apps-podinfo", namespace="apps", generation=7, digest=DIGEST, chart_revision="6.5.0"
)
HELM_ERROR = "Error: UPGRADE FAILED: cannot patch Deployment podinfo: spec.replicas: Invalid value: -1"
EMPTY = HelmReleaseStatus()
#: A release we upgraded to OLD_DIGEST at revision 3, in sync, ready.
RELEASED = status_after_action(
    EMPTY,
    replace(DESIRED, digest=OLD_DIGEST, chart_revision="6.4.0", generation=6),
    Action.UPGRADE,
    Outcome(succeeded=True, helm_revision=3, release_status=HelmStatus.DEPLOYED),
    NOW,
)


IN_SYNC_RELEASE = ObservedRelease(revision=3, status=HelmStatus.DEPLOYED, ownership=Ownership.OURS)


def ok(revision: int = 4, status: HelmStatus = HelmStatus.DEPLOYED) -> Outcome:
    return Outcome(succeeded=True, helm_revision=revision, release_status=status)


def failure(revision: int | None = 4, error: str = HELM_ERROR) -> Outcome:
    return Outcome(succeeded=False, error=error, helm_revision=revision, release_status=HelmStatus.FAILED)


def conditions(status: HelmReleaseStatus) -> dict[str, tuple[ConditionStatus, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def ready(status: HelmReleaseStatus) -> Condition:
    condition = status.condition(ConditionType.READY)
    assert condition is not None
    return condition


# ---------------------------------------------------------------------------------------------------------------
# Outcomes of Helm actions.


@pytest.mark.parametrize(
    ("desired", "action", "outcome", "phase", "expected"),
    [
        pytest.param(
            DESIRED,
            Action.INSTALL,
            ok(1),
            Phase.SUCCEEDED,
            {
                ConditionType.DEPLOYED: (ConditionStatus.TRUE, Reason.INSTALL_SUCCEEDED),
                ConditionType.RELEASED: (ConditionStatus.TRUE, Reason.INSTALL_SUCCEEDED),
                ConditionType.READY: (ConditionStatus.TRUE, Reason.INSTALL_SUCCEEDED),
            },
            id="install-succeeded",
        ),
        pytest.param(
            replace(DESIRED, test=True),
            Action.UPGRADE,
            ok(),
            Phase.DEPLOYED,
            {
                ConditionType.DEPLOYED: (ConditionStatus.TRUE, Reason.UPGRADE_SUCCEEDED),
                ConditionType.RELEASED: (ConditionStatus.TRUE, Reason.UPGRADE_SUCCEEDED),
                ConditionType.TESTED: (ConditionStatus.UNKNOWN, Reason.TEST_PENDING),
                ConditionType.READY: (ConditionStatus.UNKNOWN, Reason.TEST_PENDING),
            },
            id="upgrade-succeeded-test-pending",
        ),
        pytest.param(
            DESIRED,
            Action.UPGRADE,
            failure(),
            Phase.DEPLOY_FAILED,
            {
                ConditionType.DEPLOYED: (ConditionStatus.FALSE, Reason.UPGRADE_FAILED),
                ConditionType.RELEASED: (ConditionStatus.FALSE, Reason.UPGRADE_FAILED),
                ConditionType.READY: (ConditionStatus.FALSE, Reason.UPGRADE_FAILED),
            },
            id="upgrade-failed",
        ),
        pytest.param(
            DESIRED,
            Action.INSTALL,
            failure(None),
            Phase.DEPLOY_FAILED,
            {
                ConditionType.DEPLOYED: (ConditionStatus.FALSE, Reason.INSTALL_FAILED),
                ConditionType.RELEASED: (ConditionStatus.FALSE, Reason.INSTALL_FAILED),
                ConditionType.READY: (ConditionStatus.FALSE, Reason.INSTALL_FAILED),
            },
            id="install-failed",
        ),
        pytest.param(
            replace(DESIRED, test=True),
            Action.TEST,
            ok(3),
            Phase.SUCCEEDED,
            {
                ConditionType.DEPLOYED: (ConditionStatus.TRUE, Reason.UPGRADE_SUCCEEDED),
                ConditionType.RELEASED: (ConditionStatus.TRUE, Reason.UPGRADE_SUCCEEDED),
                ConditionType.TESTED: (ConditionStatus.TRUE, Reason.TEST_SUCCEEDED),
                ConditionType.READY: (ConditionStatus.TRUE, Reason.UPGRADE_SUCCEEDED),
            },
            id="test-passed",
        ),
        pytest.param(
            replace(DESIRED, test=True),
            Action.TEST,
            failure(3),
            Phase.TEST_FAILED,
            {
                ConditionType.DEPLOYED: (ConditionStatus.TRUE, Reason.UPGRADE_SUCCEEDED),
                ConditionType.RELEASED: (ConditionStatus.FALSE, Reason.TEST_FAILED),
                ConditionType.TESTED: (ConditionStatus.FALSE, Reason.TEST_FAILED),
                ConditionType.READY: (ConditionStatus.FALSE, Reason.TEST_FAILED),
            },
            id="test-failed",
        ),
        pytest.param(
            replace(DESIRED, test=True, ignore_test_failures=True),
            Action.TEST,
            failure(3),
            Phase.TEST_FAILED,
            {
                ConditionType.DEPLOYED: (ConditionStatus.TRUE, Reason.UPGRADE_SUCCEEDED),
                ConditionType.RELEASED: (ConditionStatus.TRUE, Reason.UPGRADE_SUCCEEDED),
                ConditionType.TESTED: (ConditionStatus.FALSE, Reason.TEST_FAILURE_IGNORED),
                ConditionType.READY: (ConditionStatus.TRUE, Reason.UPGRADE_SUCCEEDED),
            },
            id="test-failed-ignored",
        ),
        pytest.param(
            DESIRED,
            Action.UNLOCK,
            ok(3, HelmStatus.FAILED),
            Phase.SUCCEEDED,
            {
                ConditionType.DEPLOYED: (ConditionStatus.TRUE, Reason.UPGRADE_SUCCEEDED),
                ConditionType.RELEASED: (ConditionStatus.UNKNOWN, Reason.UNLOCKED),
                ConditionType.READY: (ConditionStatus.UNKNOWN, Reason.UNLOCKED),
            },
            id="unlocked",
        ),
        pytest.param(
            DESIRED,
            Action.UNINSTALL,
            Outcome(succeeded=True),
            Phase.SUCCEEDED,
            {
                ConditionType.DEPLOYED: (ConditionStatus.TRUE, Reason.UPGRADE_SUCCEEDED),
                ConditionType.RELEASED: (ConditionStatus.FALSE, Reason.UNINSTALLED),
                ConditionType.READY: (ConditionStatus.FALSE, Reason.UNINSTALLED),
            },
            id="uninstalled",
        ),
    ],
)
def test_outcome_sets_phase_and_conditions(
    desired: Desired,
    action: Action,
    outcome: Outcome,
    phase: Phase,
    expected: dict[ConditionType, tuple[ConditionStatus, Reason]],
) -> None:
    status = status_after_action(RELEASED, desired, action, outcome, LATER)
    assert status.phase is phase
    assert conditions(status) == expected
    assert status.last_action is action
    assert status.helm_revision == outcome.helm_revision
    assert status.release_status == (outcome.release_status.value if outcome.release_status else None)
    assert status.failures == (0 if outcome.succeeded else 1)
    assert status.release_name == "apps-podinfo"
    assert status.observed_generation == RELEASED.observed_generation, "only a settled decision writes it"


@pytest.mark.parametrize("outcome", [pytest.param(ok(), id="adopted"), pytest.param(failure(), id="failed")])
def test_an_adoption_is_recorded_as_the_upgrade_it_is(outcome: Outcome) -> None:
    """Only its Event says Adopted: the plan goes on from an upgrade of a release that is now ours."""
    adopted = status_after_action(RELEASED, DESIRED, Action.ADOPT, outcome, LATER)
    assert adopted == status_after_action(RELEASED, DESIRED, Action.UPGRADE, outcome, LATER)
    assert adopted.last_action is Action.UPGRADE


def test_a_status_update_names_exactly_the_status_fields() -> None:
    """The TypedDict that mypy checks every status change against, kept to the model's fields."""
    assert set(StatusUpdate.__annotations__) == set(HelmReleaseStatus.model_fields)


def test_a_drift_check_is_stamped_in_whole_seconds() -> None:
    checked = status_after_drift_check(RELEASED, NOW, release="apps/web", drift=None)
    assert checked.last_drift_check == NOW.replace(microsecond=0)
    drifted = checked.condition(ConditionType.DRIFTED)
    assert drifted is not None
    assert (drifted.status, drifted.reason) == (ConditionStatus.FALSE, Reason.NO_DRIFT)
    without = tuple(c for c in checked.conditions if c.type != ConditionType.DRIFTED)
    assert checked.model_copy(update={"last_drift_check": None, "conditions": without}) == RELEASED


def test_successful_deploy_records_what_was_applied() -> None:
    rolled_back = RELEASED.model_copy(update={"rollback_count": 2})
    status = status_after_action(rolled_back, DESIRED, Action.UPGRADE, ok(), LATER)
    assert (status.last_applied_digest, status.last_attempted_digest) == (DIGEST, DIGEST)
    assert (status.revision, status.last_attempted_revision) == ("6.5.0", "6.5.0")
    assert status.last_attempted_generation == 7
    assert status.rollback_count == 0


def test_failed_deploy_keeps_what_was_applied() -> None:
    status = status_after_action(RELEASED, DESIRED, Action.UPGRADE, failure(), LATER)
    assert (status.last_applied_digest, status.last_attempted_digest) == (OLD_DIGEST, DIGEST)
    assert (status.revision, status.last_attempted_revision) == ("6.4.0", "6.5.0")
    assert status.last_attempted_generation == 7


@pytest.mark.parametrize(
    ("attempted", "count"),
    [
        pytest.param(DIGEST, 2, id="same-digest-keeps-count"),
        pytest.param(OLD_DIGEST, 0, id="new-digest-resets-count"),
    ],
)
def test_failed_deploy_rollback_count(attempted: str, count: int) -> None:
    previous = RELEASED.model_copy(update={"rollback_count": 2, "last_attempted_digest": attempted})
    assert status_after_action(previous, DESIRED, Action.UPGRADE, failure(), LATER).rollback_count == count


def test_consecutive_failures_are_counted_and_reset() -> None:
    once = status_after_action(RELEASED, DESIRED, Action.UPGRADE, failure(), LATER)
    twice = status_after_action(once, DESIRED, Action.ROLLBACK, failure(), LATER)
    assert twice.failures == 2
    assert status_after_action(twice, DESIRED, Action.ROLLBACK, ok(5), LATER).failures == 0


def test_rollback_after_failed_upgrade_keeps_the_applied_digest() -> None:
    """The previous revision, restored by the rollback, is exactly what we had applied."""
    failed = status_after_action(RELEASED, DESIRED, Action.UPGRADE, failure(), LATER)
    rolled_back = status_after_action(failed, DESIRED, Action.ROLLBACK, ok(5), LATER)
    assert rolled_back.phase is Phase.ROLLED_BACK
    assert rolled_back.rollback_count == 1
    assert (rolled_back.last_applied_digest, rolled_back.revision) == (OLD_DIGEST, "6.4.0")
    assert conditions(rolled_back)[ConditionType.ROLLED_BACK] == (
        ConditionStatus.TRUE,
        Reason.ROLLBACK_SUCCEEDED,
    )
    assert conditions(rolled_back)[ConditionType.RELEASED] == (
        ConditionStatus.FALSE,
        Reason.ROLLBACK_SUCCEEDED,
    )
    assert "upgrade failed" in ready(rolled_back).message
    assert ready(rolled_back).status is ConditionStatus.FALSE


def test_rollback_after_failed_test_forgets_the_applied_digest() -> None:
    """What was rolled back had been applied; the revision running now is an older one we cannot name."""
    desired = replace(DESIRED, test=True, rollback=True)
    upgraded = status_after_action(RELEASED, desired, Action.UPGRADE, ok(), LATER)
    tested = status_after_action(upgraded, desired, Action.TEST, failure(4), LATER)
    rolled_back = status_after_action(tested, desired, Action.ROLLBACK, ok(5), LATER)
    assert (rolled_back.last_applied_digest, rolled_back.revision) == (None, None)
    assert "test failed" in ready(rolled_back).message


def test_failed_rollback_reports_on_both_conditions() -> None:
    failed = status_after_action(RELEASED, DESIRED, Action.UPGRADE, failure(), LATER)
    status = status_after_action(
        failed, DESIRED, Action.ROLLBACK, failure(4, "Error: timed out waiting"), LATER
    )
    assert status.phase is Phase.ROLLBACK_FAILED
    assert status.last_applied_digest is None
    assert conditions(status)[ConditionType.ROLLED_BACK] == (ConditionStatus.FALSE, Reason.ROLLBACK_FAILED)
    assert ready(status).message.endswith("Error: timed out waiting")


def test_failure_message_names_release_chart_and_helm_error() -> None:
    status = status_after_action(RELEASED, DESIRED, Action.UPGRADE, failure(), LATER)
    released = status.condition(ConditionType.RELEASED)
    assert released is not None
    assert released.message == f"Upgrading apps/apps-podinfo to chart 6.5.0 failed: {HELM_ERROR}"


def cluster_failure(revision: int | None = 4) -> Outcome:
    error = 'services "web" is forbidden: exceeded quota: q, requested: services=1, used: services=1'
    return replace(failure(revision, error), cluster_side=True)


def test_a_cluster_side_failure_plans_a_retry_and_says_when() -> None:
    status = status_after_action(RELEASED, DESIRED, Action.UPGRADE, cluster_failure(), NOW)
    assert (status.retry_at, status.cluster_failures) == (datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC), 1)
    released = status.condition(ConditionType.RELEASED)
    assert released is not None
    assert released.reason == Reason.UPGRADE_FAILED
    assert released.message.endswith(
        "exceeded quota: q, requested: services=1, used: services=1; the cluster caused this, not the "
        "configuration: trying again at 2026-03-01T12:00:10Z (attempt 2)"
    )


def test_cluster_side_failures_of_one_configuration_back_off() -> None:
    status = RELEASED
    waits = []
    for _ in range(8):
        status = status_after_action(status, DESIRED, Action.UPGRADE, cluster_failure(), NOW)
        assert status.retry_at is not None
        waits.append((status.retry_at - NOW.replace(microsecond=0)).total_seconds())
    assert waits == [10, 20, 40, 80, 160, 320, 600, 600]
    assert status.cluster_failures == 8
    assert "(attempt 9)" in ready(status).message


@pytest.mark.parametrize(
    ("then", "failures"),
    [
        pytest.param((replace(DESIRED, generation=8), cluster_failure()), 1, id="a-change-starts-over"),
        pytest.param((DESIRED, ok()), 0, id="a-success-clears"),
        pytest.param((DESIRED, failure()), 0, id="a-configuration-failure-plans-nothing"),
    ],
)
def test_cluster_failures_reset(then: tuple[Desired, Outcome], failures: int) -> None:
    first = status_after_action(RELEASED, DESIRED, Action.UPGRADE, cluster_failure(), NOW)
    second = status_after_action(first, DESIRED, Action.UPGRADE, cluster_failure(), NOW)
    desired, outcome = then
    status = status_after_action(second, desired, Action.UPGRADE, outcome, NOW)
    assert status.cluster_failures == failures
    assert (status.retry_at is None) is (failures == 0)


@pytest.mark.parametrize("action", [Action.UNLOCK, Action.UNINSTALL, Action.UNINSTALL_PREVIOUS])
def test_housekeeping_plans_no_cluster_retry(action: Action) -> None:
    previous = RELEASED.model_copy(update={"release_name": "old"})
    status = status_after_action(previous, DESIRED, action, cluster_failure(), NOW)
    assert (status.retry_at, status.cluster_failures) == (None, 0)


def test_the_plan_waits_for_the_retry_the_status_planned() -> None:
    """The two halves agree: the failure recorded here is retried by the plan once due, not before."""
    status = status_after_action(RELEASED, DESIRED, Action.UPGRADE, cluster_failure(), NOW)
    failed = ObservedRelease(revision=4, status=HelmStatus.FAILED, ownership=Ownership.OURS)
    recorded = Recorded.from_status(status)
    early = next_action(replace(DESIRED, rollback=True), failed, recorded, now=NOW + timedelta(seconds=5))
    assert (early.action, early.retry_after) == (Action.WAIT_RETRY, 5)
    due = next_action(replace(DESIRED, rollback=True), failed, recorded, now=NOW + timedelta(seconds=10))
    assert (due.action, due.reason) == (Action.UPGRADE, Reason.CLUSTER_RETRY)


def test_a_rollback_names_the_revision_it_went_back_to() -> None:
    failed = status_after_action(RELEASED, DESIRED, Action.UPGRADE, failure(), LATER)
    outcome = replace(ok(5), rolled_back_to=3)
    rolled_back = status_after_action(failed, DESIRED, Action.ROLLBACK, outcome, LATER)
    assert rolled_back.condition(ConditionType.ROLLED_BACK) == Condition(
        type=ConditionType.ROLLED_BACK,
        status=ConditionStatus.TRUE,
        reason=Reason.ROLLBACK_SUCCEEDED,
        message="Rolled back release apps/apps-podinfo to revision 3 (now revision 5, rollback 1)",
        last_update_time=LATER.replace(microsecond=0),
        last_transition_time=LATER.replace(microsecond=0),
    )
    assert ready(rolled_back).message.endswith("rolled back to revision 3 (now revision 5, rollback 1)")


def test_a_rollback_whose_target_is_unknown_does_not_guess() -> None:
    failed = status_after_action(RELEASED, DESIRED, Action.UPGRADE, failure(), LATER)
    rolled_back = status_after_action(failed, DESIRED, Action.ROLLBACK, ok(5), LATER)
    assert "to the previous revision (now revision 5, rollback 1)" in ready(rolled_back).message


@pytest.mark.parametrize("reason", [Reason.RETRIES_EXHAUSTED, Reason.WAITING_FOR_CHANGE])
def test_after_the_last_rollback_the_condition_says_no_retry_is_coming(reason: Reason) -> None:
    failed = status_after_action(RELEASED, DESIRED, Action.UPGRADE, failure(), LATER)
    rolled_back = status_after_action(
        failed, DESIRED, Action.ROLLBACK, replace(ok(5), rolled_back_to=3), LATER
    )
    plan = Plan(Action.WAIT_RETRY, reason, "Release apps/apps-podinfo ... no retry is coming; fix it")
    settled = status_after_decision(rolled_back, DESIRED, plan, IN_SYNC_RELEASE, LATER)
    assert conditions(settled)[ConditionType.RELEASED] == (ConditionStatus.FALSE, reason)
    assert ready(settled).reason == reason
    assert ready(settled).message == plan.message
    assert conditions(settled)[ConditionType.ROLLED_BACK] == (ConditionStatus.TRUE, Reason.ROLLBACK_SUCCEEDED)


@pytest.mark.parametrize(("revision", "recorded_as"), [(1, Action.INSTALL), (4, Action.UPGRADE)])
def test_recording_a_deploy_found_done_is_its_outcome(revision: int, recorded_as: Action) -> None:
    release = ObservedRelease(revision=revision, status=HelmStatus.DEPLOYED, ownership=Ownership.OURS)
    before = status_before_action(RELEASED, DESIRED, recorded_as, NOW)  # what the killed operator had written
    status = status_after_record(before, DESIRED, release, LATER)
    assert status == status_after_action(before, DESIRED, recorded_as, ok(revision), LATER)
    assert (status.last_applied_digest, status.helm_revision, status.last_action) == (
        DIGEST,
        revision,
        recorded_as,
    )


@pytest.mark.parametrize("failed", [Action.UPGRADE, Action.TEST])
def test_recording_a_rollback_found_done_is_the_rollback_s_outcome(failed: Action) -> None:
    """Killed after `helm rollback` returned: what the restart records is that rollback, counted once."""
    broken = Outcome(False, error=HELM_ERROR, helm_revision=4, release_status=HelmStatus.FAILED)
    if failed is Action.TEST:
        upgraded = status_after_action(RELEASED, replace(DESIRED, test=True), Action.UPGRADE, ok(4), NOW)
        before = status_after_action(upgraded, replace(DESIRED, test=True), Action.TEST, broken, NOW)
    else:
        before = status_after_action(RELEASED, DESIRED, Action.UPGRADE, broken, NOW)
    desired = replace(DESIRED, rollback=True, test=failed is Action.TEST)
    release = ObservedRelease(5, HelmStatus.DEPLOYED, Ownership.OURS, digest_label=digest_label(OLD_DIGEST))
    status = status_after_record(before, desired, release, LATER)
    assert status == status_after_action(before, desired, Action.ROLLBACK, ok(5), LATER)
    assert (status.phase, status.rollback_count, status.helm_revision) == (Phase.ROLLED_BACK, 1, 5)
    assert next_action(desired, release, Recorded.from_status(status), now=LATER).action is Action.WAIT_RETRY


def test_uninstalling_the_previous_release_keeps_its_name_until_it_is_gone() -> None:
    previous = RELEASED.model_copy(update={"release_name": "old-name", "release_namespace": "old-ns"})
    failed = status_after_action(previous, DESIRED, Action.UNINSTALL_PREVIOUS, failure(None, "boom"), NOW)
    assert (failed.release_namespace, failed.release_name) == ("old-ns", "old-name")
    assert "Uninstalling release old-ns/old-name, which this HelmRelease made before" in ready(failed).message
    done = status_after_action(failed, DESIRED, Action.UNINSTALL_PREVIOUS, Outcome(True), NOW)
    assert (done.release_namespace, done.release_name) == ("apps", "apps-podinfo")
    released = done.condition(ConditionType.RELEASED)
    assert released is not None
    assert (released.status, released.reason) == (ConditionStatus.UNKNOWN, Reason.UNINSTALLED)
    assert "old-ns/old-name" in released.message
    assert "apps/apps-podinfo" in released.message
    assert (done.last_applied_digest, done.revision) == (None, None)


@pytest.mark.parametrize(
    ("action", "note"),
    [
        (Action.UPGRADE, "spec.timeout is 60s"),
        (Action.INSTALL, "spec.timeout is 60s"),
        (Action.UNINSTALL, "spec.timeout is 60s"),
        (Action.ROLLBACK, "spec.rollback.timeout is 30s"),
        (Action.TEST, "spec.test.timeout is 20s"),
    ],
)
def test_a_timeout_names_its_field_and_value(action: Action, note: str) -> None:
    spec = HelmReleaseSpec.model_validate(
        {
            "chart": {"git": "g", "path": "p"},
            "timeout": 60,
            "rollback": {"timeout": 30},
            "test": {"timeout": 20},
        }
    )
    assert timeout_note(action, spec) == f"{note}; raise it if the release needs longer"


@pytest.mark.parametrize(
    ("action", "condition"),
    [
        (Action.INSTALL, ConditionType.RELEASED),
        (Action.UNINSTALL_PREVIOUS, ConditionType.RELEASED),
        (Action.TEST, ConditionType.TESTED),
        (Action.ROLLBACK, ConditionType.ROLLED_BACK),
    ],
)
def test_each_action_reports_on_one_condition(action: Action, condition: ConditionType) -> None:
    assert terms(action).condition is condition


@pytest.mark.parametrize("action", [Action.NOTHING, Action.WAIT_RETRY, Action.REFUSE, Action.RECORD])
def test_decisions_are_not_helm_outcomes(action: Action) -> None:
    with pytest.raises(ValueError, match="decision"):
        status_after_action(RELEASED, DESIRED, action, ok(), LATER)


# ---------------------------------------------------------------------------------------------------------------
# Timestamps.


def test_a_pass_that_changes_nothing_writes_nothing() -> None:
    """An equal status lets the handler skip the write: resyncs of a settled release cost no API call."""
    plan = Plan(Action.NOTHING, Reason.IN_SYNC, "Release apps/apps-podinfo revision 3 is up to date")
    settled = status_after_decision(RELEASED, DESIRED, plan, IN_SYNC_RELEASE, LATER)
    assert (
        status_after_decision(settled, DESIRED, plan, IN_SYNC_RELEASE, LATER + timedelta(hours=1)) == settled
    )


def test_the_same_failure_again_leaves_conditions_alone() -> None:
    failed = status_after_action(RELEASED, DESIRED, Action.UPGRADE, failure(), LATER)
    again = status_after_action(failed, DESIRED, Action.UPGRADE, failure(), LATER + timedelta(minutes=5))
    assert again.conditions == failed.conditions


def test_transition_time_moves_only_when_status_flips() -> None:
    first = status_after_action(RELEASED, DESIRED, Action.UPGRADE, failure(error="Error: one"), LATER)
    later = LATER + timedelta(minutes=5)
    second = status_after_action(first, DESIRED, Action.UPGRADE, failure(error="Error: two"), later)
    before, after = first.condition(ConditionType.RELEASED), second.condition(ConditionType.RELEASED)
    assert before is not None
    assert after is not None
    assert after.last_transition_time == before.last_transition_time == LATER.replace(microsecond=0)
    assert after.last_update_time == later.replace(microsecond=0)
    recovered = status_after_action(second, DESIRED, Action.UPGRADE, ok(), later + timedelta(minutes=1))
    flipped = recovered.condition(ConditionType.RELEASED)
    assert flipped is not None
    assert flipped.last_transition_time == (later + timedelta(minutes=1)).replace(microsecond=0)


def test_times_are_utc_whole_seconds() -> None:
    tokyo = NOW.astimezone(datetime.now(UTC).astimezone().tzinfo)
    status = status_after_action(EMPTY, DESIRED, Action.INSTALL, ok(1), tokyo)
    for condition in status.conditions:
        assert condition.last_transition_time == NOW.replace(microsecond=0)
        assert condition.last_transition_time is not None
        assert condition.last_transition_time.utcoffset() == timedelta(0)


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        status_after_action(EMPTY, DESIRED, Action.INSTALL, ok(1), datetime(2026, 1, 1))


# ---------------------------------------------------------------------------------------------------------------
# In-progress phases, decisions, and problems before Helm.


FAILED_UPGRADE = status_after_action(RELEASED, DESIRED, Action.UPGRADE, failure(), NOW)


@pytest.mark.parametrize(
    ("previous", "action", "phase", "condition", "readiness"),
    [
        pytest.param(
            RELEASED, Action.INSTALL, Phase.INSTALLING, ConditionType.RELEASED, "Unknown", id="install"
        ),
        pytest.param(
            RELEASED, Action.UPGRADE, Phase.UPGRADING, ConditionType.RELEASED, "Unknown", id="upgrade"
        ),
        pytest.param(RELEASED, Action.TEST, Phase.TESTING, ConditionType.TESTED, "Unknown", id="test"),
        pytest.param(
            FAILED_UPGRADE,
            Action.ROLLBACK,
            Phase.ROLLING_BACK,
            ConditionType.ROLLED_BACK,
            "False",
            id="rollback-keeps-the-failure-visible",
        ),
    ],
)
def test_long_actions_show_progress(
    previous: HelmReleaseStatus, action: Action, phase: Phase, condition: ConditionType, readiness: str
) -> None:
    status = status_before_action(previous, DESIRED, action, LATER)
    assert status.phase is phase
    assert conditions(status)[condition] == (ConditionStatus.UNKNOWN, Reason.PROGRESSING)
    assert ready(status).status == readiness
    assert status.last_action == previous.last_action, "starting is not an outcome"


@pytest.mark.parametrize("action", [Action.UNLOCK, Action.ADOPT, Action.UNINSTALL])
def test_short_actions_show_nothing_before(action: Action) -> None:
    assert status_before_action(RELEASED, DESIRED, action, LATER) is RELEASED


@pytest.mark.parametrize(
    ("previous", "plan", "phase", "released"),
    [
        pytest.param(
            RELEASED,
            Plan(Action.NOTHING, Reason.IN_SYNC, "Release apps/apps-podinfo revision 3 is up to date"),
            Phase.SUCCEEDED,
            (ConditionStatus.TRUE, Reason.UPGRADE_SUCCEEDED),
            id="in-sync-keeps-the-release-message",
        ),
        pytest.param(
            status_after_problem(
                RELEASED, reason=Reason.VALUES_ERROR, message="missing", generation=None, now=NOW
            ),
            Plan(Action.NOTHING, Reason.IN_SYNC, "Release apps/apps-podinfo revision 3 is up to date"),
            Phase.SUCCEEDED,
            (ConditionStatus.TRUE, Reason.IN_SYNC),
            id="in-sync-recovers-from-a-problem",
        ),
        pytest.param(
            RELEASED,
            Plan(
                Action.REFUSE, Reason.OWNED_BY_OTHER, "Helm release apps/apps-podinfo belongs to other:hr/x"
            ),
            Phase.FAILED,
            (ConditionStatus.FALSE, Reason.OWNED_BY_OTHER),
            id="refuse",
        ),
        pytest.param(
            FAILED_UPGRADE,
            Plan(Action.WAIT_RETRY, Reason.UPGRADE_FAILED, "Upgrading release apps/apps-podinfo failed; ..."),
            Phase.DEPLOY_FAILED,
            (ConditionStatus.FALSE, Reason.UPGRADE_FAILED),
            id="wait-keeps-the-failure",
        ),
    ],
)
def test_settled_decision(
    previous: HelmReleaseStatus, plan: Plan, phase: Phase, released: tuple[ConditionStatus, Reason]
) -> None:
    status = status_after_decision(previous, DESIRED, plan, IN_SYNC_RELEASE, LATER)
    assert status.observed_generation == DESIRED.generation
    assert status.phase is phase
    assert conditions(status)[ConditionType.RELEASED] == released
    assert (status.release_namespace, status.release_name) == ("apps", "apps-podinfo")
    # A refused release is someone else's: its Helm status is not this HelmRelease's (ReleaseStatus column).
    assert status.release_status == (None if plan.action is Action.REFUSE else "deployed")


@pytest.mark.parametrize(
    "outcome",
    [pytest.param(None, id="pending"), pytest.param(failure(3), id="failed")],
)
def test_turning_tests_off_clears_the_test_from_ready(outcome: Outcome | None) -> None:
    status = status_after_action(EMPTY, replace(DESIRED, test=True), Action.UPGRADE, ok(3), NOW)
    if outcome is not None:
        status = status_after_action(status, replace(DESIRED, test=True), Action.TEST, outcome, NOW)
    assert ready(status).status is not ConditionStatus.TRUE
    plan = Plan(Action.NOTHING, Reason.IN_SYNC, "Release apps/apps-podinfo revision 3 is up to date")
    settled = status_after_decision(status, replace(DESIRED, generation=8), plan, IN_SYNC_RELEASE, LATER)
    assert settled.condition(ConditionType.TESTED) is None
    assert ready(settled).status is ConditionStatus.TRUE


def test_unsettled_decision_changes_nothing() -> None:
    for plan in (
        Plan(Action.WAIT_RETRY, Reason.INSTALL_FAILED, "trying again at ...", retry_after=30),
        Plan(Action.WAIT_RETRY, Reason.UPGRADE_FAILED, "trying again at ...", retry_after=10),
    ):
        assert status_after_decision(RELEASED, DESIRED, plan, IN_SYNC_RELEASE, LATER) is RELEASED


def test_helm_actions_are_not_decisions() -> None:
    with pytest.raises(ValueError, match="status_after_action"):
        status_after_decision(
            RELEASED, DESIRED, Plan(Action.UPGRADE, Reason.CONFIG_CHANGED, "m"), None, LATER
        )


def test_chart_fetch_failure_makes_ready_false_until_fetched() -> None:
    failed = status_after_chart_fetch(RELEASED, chart="podinfo 6.5.0", error="404 Not Found", now=LATER)
    assert failed.phase is Phase.CHART_FETCH_FAILED
    assert conditions(failed)[ConditionType.CHART_FETCHED] == (
        ConditionStatus.FALSE,
        Reason.CHART_FETCH_FAILED,
    )
    assert (ready(failed).status, ready(failed).reason) == (ConditionStatus.FALSE, Reason.CHART_FETCH_FAILED)
    assert failed.observed_generation == RELEASED.observed_generation
    fetched = status_after_chart_fetch(failed, chart="podinfo 6.5.0", error=None, now=LATER)
    assert fetched.phase is Phase.CHART_FETCHED
    assert (ready(fetched).status, ready(fetched).reason) == (ConditionStatus.TRUE, Reason.UPGRADE_SUCCEEDED)


def test_chart_fetch_success_leaves_the_phase() -> None:
    assert status_after_chart_fetch(RELEASED, chart="podinfo", error=None, now=LATER).phase is RELEASED.phase


@pytest.mark.parametrize(
    ("generation", "observed"),
    [pytest.param(7, 7, id="final-for-this-generation"), pytest.param(None, None, id="may-clear-by-itself")],
)
def test_problem_before_helm(generation: int | None, observed: int | None) -> None:
    status = status_after_problem(
        EMPTY,
        reason=Reason.INVALID_SPEC,
        message="spec.chart: set exactly one",
        generation=generation,
        now=NOW,
    )
    assert status.phase is Phase.FAILED
    assert status.observed_generation == observed
    assert (ready(status).status, ready(status).reason) == (ConditionStatus.FALSE, Reason.INVALID_SPEC)


def test_status_round_trips_through_a_patch() -> None:
    status = status_after_action(RELEASED, replace(DESIRED, test=True), Action.TEST, failure(3), LATER)
    patch: dict[str, Any] = status.as_patch()
    assert patch["conditions"][0]["lastTransitionTime"] == "2026-03-01T12:00:00Z"
    assert HelmReleaseStatus.model_validate(patch) == status


def test_conditions_come_in_a_fixed_order() -> None:
    status = status_after_chart_fetch(RELEASED, chart="podinfo", error=None, now=LATER)
    assert [c.type for c in status.conditions] == ["ChartFetched", "Deployed", "Released", "Ready"]


# ---------------------------------------------------------------------------------------------------------------
# Message trimming.


def test_short_messages_are_kept() -> None:
    assert trim_message("  Error: boom \n") == "Error: boom"


def test_long_helm_output_keeps_its_start_and_last_line() -> None:
    text = "Error: UPGRADE FAILED: " + "noise " * 400 + "\nError: the real reason"
    trimmed = trim_message(text)
    assert len(trimmed) <= MESSAGE_LIMIT
    assert trimmed.startswith("Error: UPGRADE FAILED: noise")
    assert trimmed.endswith("Error: the real reason")


@given(st.text(min_size=1, max_size=5000).filter(str.strip), st.integers(min_value=40, max_value=2000))
def test_trimmed_messages_fit(text: str, limit: int) -> None:
    trimmed = trim_message(text, limit)
    assert len(trimmed) <= limit
    if len(text.strip()) <= limit:
        assert trimmed == text.strip()


# --- suspend, requests, Drifted -------------------------------------------------------------------------------


def _summary(status: HelmReleaseStatus, condition_type: ConditionType) -> tuple[str, str] | None:
    found = status.condition(condition_type)
    return None if found is None else (found.status, found.reason)


@pytest.mark.parametrize(
    "before",
    [
        pytest.param(RELEASED, id="ready"),
        pytest.param(status_after_action(RELEASED, DESIRED, Action.UPGRADE, failure(), NOW), id="failed"),
        pytest.param(EMPTY, id="never-reconciled"),
    ],
)
def test_suspended_says_so_in_ready_whatever_else_holds_and_resuming_gives_the_rest_back(
    before: HelmReleaseStatus,
) -> None:
    suspended = status_when_suspended(before, generation=9, now=LATER)
    assert _summary(suspended, ConditionType.SUSPENDED) == (ConditionStatus.TRUE, Reason.SUSPENDED)
    assert _summary(suspended, ConditionType.READY) == (ConditionStatus.FALSE, Reason.SUSPENDED)
    ready = suspended.condition(ConditionType.READY)
    assert ready is not None
    assert "helmrelease resume" in ready.message
    assert suspended.observed_generation == 9
    assert status_when_suspended(suspended, generation=9, now=LATER + timedelta(hours=1)) == suspended
    resumed = status_after_resume(suspended, LATER)
    assert resumed.condition(ConditionType.SUSPENDED) is None
    assert _summary(resumed, ConditionType.READY) == _summary(before, ConditionType.READY) or before is EMPTY
    assert status_after_resume(before, LATER) is before, "not suspended: nothing to resume"


def test_a_reset_zeroes_the_counters_and_forgets_the_attempt_but_not_the_release() -> None:
    failed = RELEASED.model_copy(
        update={"failures": 3, "rollback_count": 2, "cluster_failures": 4, "retry_at": LATER}
    )
    reset = status_after_reset(failed)
    assert (reset.failures, reset.rollback_count, reset.cluster_failures, reset.retry_at) == (0, 0, 0, None)
    assert (reset.last_attempted_digest, reset.last_attempted_generation, reset.last_action) == (
        None,
        None,
        None,
    )
    assert (reset.last_applied_digest, reset.helm_revision, reset.conditions) == (
        failed.last_applied_digest,
        failed.helm_revision,
        failed.conditions,
    )


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        pytest.param({"reconcile": "a", "force": None, "reset": None}, ("a", None, None), id="reconcile"),
        pytest.param({"reconcile": "a", "force": "a", "reset": "a"}, ("a", "a", "a"), id="all"),
        pytest.param({"reconcile": None, "force": "b", "reset": None}, ("old", "b", None), id="force-only"),
        pytest.param({"reconcile": None, "force": None, "reset": None}, ("old", None, None), id="nothing"),
    ],
)
def test_handled_tokens_are_echoed(tokens: dict[str, str | None], expected: tuple[str | None, ...]) -> None:
    before = RELEASED.model_copy(update={"last_handled_reconcile_at": "old"})
    after = status_with_handled(before, **tokens)
    assert (
        after.last_handled_reconcile_at,
        after.last_handled_force_at,
        after.last_handled_reset_at,
    ) == expected


def test_drifted_names_what_drifted_until_corrected_and_does_not_hold_ready_back() -> None:
    found = "Drift in release apps/podinfo: 1 object differs from the release manifest\nConfigMap apps/a is missing"
    drifted = status_after_drift_check(RELEASED, NOW, release="apps/podinfo", drift=found)
    condition = drifted.condition(ConditionType.DRIFTED)
    assert condition is not None
    assert (condition.status, condition.reason, condition.message) == (
        ConditionStatus.TRUE,
        Reason.DRIFT_DETECTED,
        found,
    )
    assert _summary(drifted, ConditionType.READY) == _summary(RELEASED, ConditionType.READY)
    corrected = status_after_drift_corrected(drifted, release="apps/podinfo", revision=4, now=LATER)
    assert _summary(corrected, ConditionType.DRIFTED) == (ConditionStatus.FALSE, Reason.DRIFT_CORRECTED)
    clean = status_after_drift_check(corrected, LATER, release="apps/podinfo", drift=None)
    assert _summary(clean, ConditionType.DRIFTED) == (ConditionStatus.FALSE, Reason.NO_DRIFT)
    assert status_after_drift_corrected(RELEASED, release="apps/podinfo", revision=4, now=LATER) is RELEASED


def test_a_huge_drift_message_is_trimmed_keeping_its_last_line() -> None:
    found = "\n".join(
        ["Drift in release apps/podinfo: 6 objects differ", *["x" * 400] * 5, "and 1 more objects"]
    )
    drifted = status_after_drift_check(RELEASED, NOW, release="apps/podinfo", drift=found)
    condition = drifted.condition(ConditionType.DRIFTED)
    assert condition is not None
    assert len(condition.message) <= MESSAGE_LIMIT
    assert condition.message.endswith("and 1 more objects")
