"""The next-action function: named rows for every rule, then invariants checked over the whole state space."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from helmrelease.api.constants import Action, HelmStatus, Reason
from helmrelease.api.ownership import Ownership
from helmrelease.api.resource import parse_helmrelease
from helmrelease.api.status import HelmReleaseStatus
from helmrelease.reconcile.plan import (
    CLUSTER_RETRY_MAX,
    Desired,
    ObservedRelease,
    Plan,
    Recorded,
    cluster_retry_delay,
    next_action,
)
from helmrelease.reconcile.releases import digest_label

DIGEST = "sha256:" + "d" * 64
OLD_DIGEST = "sha256:" + "0" * 64
GENERATION = 4
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: A retry after a cluster-side failure that is due, and one that is not yet.
DUE = NOW - timedelta(seconds=1)
LATER = NOW + timedelta(seconds=40)

DESIRED = Desired(
    release_name="apps-podinfo",
    namespace="apps",
    generation=GENERATION,
    digest=DIGEST,
    chart_revision="6.5.0",
)
WITH_ROLLBACK = replace(DESIRED, rollback=True)
WITH_RETRY = replace(DESIRED, rollback=True, retry=True, max_retries=2)
WITH_TEST = replace(DESIRED, test=True)


def deployed(
    revision: int = 3, ownership: Ownership = Ownership.OURS, digest: str | None = None
) -> ObservedRelease:
    label = digest_label(digest) if digest else None
    return ObservedRelease(
        revision=revision, status=HelmStatus.DEPLOYED, ownership=ownership, digest_label=label
    )


def with_status(status: HelmStatus, revision: int = 3) -> ObservedRelease:
    return ObservedRelease(revision=revision, status=status, ownership=Ownership.OURS)


#: We upgraded to DIGEST at this generation and made revision 3.
IN_SYNC = Recorded(
    applied_digest=DIGEST,
    attempted_digest=DIGEST,
    attempted_generation=GENERATION,
    helm_revision=3,
    last_action=Action.UPGRADE,
)
#: Revision 3 was ours at OLD_DIGEST; the object now asks for DIGEST.
OUTDATED = replace(IN_SYNC, applied_digest=OLD_DIGEST, attempted_digest=OLD_DIGEST, attempted_generation=3)


def failed(action: Action, **changes: object) -> Recorded:
    """Our attempt at exactly DESIRED ended with `action` failing."""
    base = replace(OUTDATED, attempted_digest=DIGEST, attempted_generation=GENERATION, helm_revision=4)
    return replace(base, last_action=action, last_action_failed=True, **changes)


ROLLED_BACK = replace(
    failed(Action.UPGRADE), last_action=Action.ROLLBACK, last_action_failed=False, helm_revision=5
)


def cluster_failed(action: Action, retry_at: datetime, **changes: object) -> Recorded:
    """Our attempt at exactly DESIRED ended with `action` failing because of the cluster; a retry is planned."""
    return failed(action, retry_at=retry_at, cluster_failures=2, **changes)


#: The status remembers the release under its old name (spec.releaseName changed since).
RENAMED = replace(IN_SYNC, release_namespace="apps", release_name="old-name")


@dataclass(frozen=True)
class Row:
    desired: Desired
    release: ObservedRelease | None
    recorded: Recorded
    action: Action
    reason: Reason
    drifted: bool = False
    deleting: bool = False
    previous: ObservedRelease | None = None
    forced: bool = False
    force_applied: bool = False


ROWS = {
    # Absent releases.
    "absent-installs": Row(DESIRED, None, Recorded(), Action.INSTALL, Reason.RELEASE_ABSENT),
    "uninstalled-with-history-installs": Row(
        DESIRED, with_status(HelmStatus.UNINSTALLED), OUTDATED, Action.INSTALL, Reason.RELEASE_ABSENT
    ),
    "absent-after-our-install-failed-waits": Row(
        DESIRED, None, failed(Action.INSTALL), Action.WAIT_RETRY, Reason.INSTALL_FAILED
    ),
    "absent-after-install-failed-at-older-generation-installs": Row(
        DESIRED, None, failed(Action.INSTALL, attempted_generation=3), Action.INSTALL, Reason.RELEASE_ABSENT
    ),
    "removed-outside-reinstalls": Row(DESIRED, None, IN_SYNC, Action.INSTALL, Reason.RELEASE_ABSENT),
    # Failures caused by the cluster: retried when due, whatever the rollback settings.
    "absent-after-cluster-failed-install-waits-for-the-retry": Row(
        DESIRED, None, cluster_failed(Action.INSTALL, LATER), Action.WAIT_RETRY, Reason.INSTALL_FAILED
    ),
    "absent-after-cluster-failed-install-installs-when-due": Row(
        DESIRED, None, cluster_failed(Action.INSTALL, DUE), Action.INSTALL, Reason.CLUSTER_RETRY
    ),
    "failed-release-after-cluster-failed-install-upgrades-when-due": Row(
        WITH_ROLLBACK,
        with_status(HelmStatus.FAILED, 1),
        cluster_failed(Action.INSTALL, DUE, helm_revision=1),
        Action.UPGRADE,
        Reason.CLUSTER_RETRY,
    ),
    "cluster-failed-upgrade-is-not-rolled-back": Row(
        WITH_ROLLBACK,
        with_status(HelmStatus.FAILED, 4),
        cluster_failed(Action.UPGRADE, LATER),
        Action.WAIT_RETRY,
        Reason.UPGRADE_FAILED,
    ),
    "cluster-failed-upgrade-retried-when-due": Row(
        WITH_ROLLBACK,
        with_status(HelmStatus.FAILED, 4),
        cluster_failed(Action.UPGRADE, DUE),
        Action.UPGRADE,
        Reason.CLUSTER_RETRY,
    ),
    "cluster-failed-upgrade-waits-despite-drift": Row(
        DESIRED,
        with_status(HelmStatus.FAILED, 4),
        cluster_failed(Action.UPGRADE, LATER),
        Action.WAIT_RETRY,
        Reason.UPGRADE_FAILED,
        drifted=True,
    ),
    "cluster-failed-test-retried-when-due": Row(
        WITH_TEST,
        deployed(),
        cluster_failed(Action.TEST, DUE, helm_revision=3),
        Action.TEST,
        Reason.CLUSTER_RETRY,
    ),
    "cluster-failed-rollback-retried-when-due": Row(
        WITH_ROLLBACK,
        with_status(HelmStatus.FAILED, 4),
        cluster_failed(Action.ROLLBACK, DUE),
        Action.ROLLBACK,
        Reason.CLUSTER_RETRY,
    ),
    "cluster-failed-upgrade-superseded-by-a-change": Row(
        replace(DESIRED, generation=GENERATION + 1),
        with_status(HelmStatus.FAILED, 4),
        cluster_failed(Action.UPGRADE, LATER),
        Action.UPGRADE,
        Reason.SPEC_CHANGED,
    ),
    # A deploy helm finished but the operator did not live to record.
    "deploy-done-but-unrecorded-is-recorded": Row(
        DESIRED, deployed(4, digest=DIGEST), OUTDATED, Action.RECORD, Reason.ALREADY_APPLIED
    ),
    "install-done-but-unrecorded-is-recorded": Row(
        DESIRED, deployed(1, digest=DIGEST), Recorded(), Action.RECORD, Reason.ALREADY_APPLIED
    ),
    "release-labelled-with-another-digest-upgrades": Row(
        DESIRED, deployed(4, digest=OLD_DIGEST), OUTDATED, Action.UPGRADE, Reason.CONFIG_CHANGED
    ),
    "failed-release-with-the-desired-digest-upgrades": Row(
        DESIRED,
        ObservedRelease(4, HelmStatus.FAILED, Ownership.OURS, digest_label=digest_label(DIGEST)),
        OUTDATED,
        Action.UPGRADE,
        Reason.CONFIG_CHANGED,
    ),
    "labelled-revision-made-outside-is-still-corrected": Row(
        DESIRED, deployed(5, digest=DIGEST), IN_SYNC, Action.UPGRADE, Reason.RELEASE_CHANGED_OUTSIDE
    ),
    # A release renamed (spec.releaseName or targetNamespace changed).
    "renamed-uninstalls-our-previous-release-first": Row(
        DESIRED, None, RENAMED, Action.UNINSTALL_PREVIOUS, Reason.RELEASE_RENAMED, previous=deployed()
    ),
    "renamed-leaves-someone-elses-previous-release": Row(
        DESIRED,
        None,
        RENAMED,
        Action.INSTALL,
        Reason.RELEASE_ABSENT,
        previous=deployed(ownership=Ownership.OTHER),
    ),
    "renamed-with-previous-release-gone-installs": Row(
        DESIRED, None, RENAMED, Action.INSTALL, Reason.RELEASE_ABSENT, previous=None
    ),
    "renamed-previous-uninstalled-installs": Row(
        DESIRED,
        None,
        RENAMED,
        Action.INSTALL,
        Reason.RELEASE_ABSENT,
        previous=with_status(HelmStatus.UNINSTALLED),
    ),
    "deleting-renamed-uninstalls-the-previous-release-too": Row(
        DESIRED,
        deployed(),
        RENAMED,
        Action.UNINSTALL_PREVIOUS,
        Reason.RELEASE_RENAMED,
        deleting=True,
        previous=deployed(),
    ),
    # Ownership.
    "owned-by-other-refused": Row(
        DESIRED, deployed(ownership=Ownership.OTHER), Recorded(), Action.REFUSE, Reason.OWNED_BY_OTHER
    ),
    "unmarked-adopted": Row(
        DESIRED, deployed(ownership=Ownership.UNMARKED), Recorded(), Action.ADOPT, Reason.UNMANAGED_RELEASE
    ),
    # An adoption is recorded as an upgrade; one that failed before Helm wrote a revision leaves it unmarked.
    "unmarked-whose-adoption-of-this-config-failed-waits": Row(
        DESIRED,
        deployed(ownership=Ownership.UNMARKED),
        failed(Action.UPGRADE),
        Action.WAIT_RETRY,
        Reason.UPGRADE_FAILED,
    ),
    "unmarked-adopted-again-after-a-change": Row(
        DESIRED,
        deployed(ownership=Ownership.UNMARKED),
        replace(failed(Action.UPGRADE), attempted_digest=OLD_DIGEST),
        Action.ADOPT,
        Reason.UNMANAGED_RELEASE,
    ),
    "unmarked-cluster-failed-adoption-waits-for-the-retry": Row(
        DESIRED,
        deployed(ownership=Ownership.UNMARKED),
        cluster_failed(Action.UPGRADE, LATER),
        Action.WAIT_RETRY,
        Reason.UPGRADE_FAILED,
    ),
    "unmarked-cluster-failed-adoption-is-adopted-when-due": Row(
        DESIRED,
        deployed(ownership=Ownership.UNMARKED),
        cluster_failed(Action.UPGRADE, DUE),
        Action.ADOPT,
        Reason.CLUSTER_RETRY,
    ),
    "unmarked-refused-without-adoption": Row(
        replace(DESIRED, adopt_unmarked=False),
        deployed(ownership=Ownership.UNMARKED),
        Recorded(),
        Action.REFUSE,
        Reason.UNMANAGED_RELEASE,
    ),
    # Locks.
    "pending-upgrade-of-dead-process-unlocked": Row(
        DESIRED, with_status(HelmStatus.PENDING_UPGRADE), IN_SYNC, Action.UNLOCK, Reason.STALE_LOCK
    ),
    "pending-install-unlocked": Row(
        DESIRED, with_status(HelmStatus.PENDING_INSTALL, 1), Recorded(), Action.UNLOCK, Reason.STALE_LOCK
    ),
    "pending-rollback-unlocked": Row(
        DESIRED, with_status(HelmStatus.PENDING_ROLLBACK), ROLLED_BACK, Action.UNLOCK, Reason.STALE_LOCK
    ),
    "interrupted-uninstall-unlocked": Row(
        DESIRED, with_status(HelmStatus.UNINSTALLING), IN_SYNC, Action.UNLOCK, Reason.STALE_LOCK
    ),
    "after-unlock-the-failed-release-is-upgraded": Row(
        DESIRED,
        with_status(HelmStatus.FAILED, 4),
        replace(OUTDATED, last_action=Action.UNLOCK, helm_revision=4),
        Action.UPGRADE,
        Reason.CONFIG_CHANGED,
    ),
    # In sync and changes.
    "in-sync-does-nothing": Row(DESIRED, deployed(), IN_SYNC, Action.NOTHING, Reason.IN_SYNC),
    "changed-digest-upgrades": Row(DESIRED, deployed(), OUTDATED, Action.UPGRADE, Reason.CONFIG_CHANGED),
    "adopted-release-upgraded": Row(
        DESIRED,
        deployed(),
        Recorded(helm_revision=3, last_action=Action.ADOPT),
        Action.UPGRADE,
        Reason.CONFIG_CHANGED,
    ),
    "drift-on-in-sync-release-upgrades": Row(
        DESIRED, deployed(), IN_SYNC, Action.UPGRADE, Reason.DRIFT_DETECTED, drifted=True
    ),
    "revision-made-outside-upgrades": Row(
        DESIRED, deployed(revision=5), IN_SYNC, Action.UPGRADE, Reason.RELEASE_CHANGED_OUTSIDE
    ),
    "failed-release-not-from-our-recorded-failure-upgrades": Row(
        DESIRED, with_status(HelmStatus.FAILED), IN_SYNC, Action.UPGRADE, Reason.RELEASE_FAILED
    ),
    "superseded-latest-upgrades": Row(
        DESIRED, with_status(HelmStatus.SUPERSEDED), IN_SYNC, Action.UPGRADE, Reason.RELEASE_FAILED
    ),
    # Failed upgrades.
    "failed-upgrade-rolls-back": Row(
        WITH_ROLLBACK,
        with_status(HelmStatus.FAILED, 4),
        failed(Action.UPGRADE),
        Action.ROLLBACK,
        Reason.UPGRADE_FAILED,
    ),
    "failed-upgrade-without-rollback-waits": Row(
        DESIRED,
        with_status(HelmStatus.FAILED, 4),
        failed(Action.UPGRADE),
        Action.WAIT_RETRY,
        Reason.UPGRADE_FAILED,
    ),
    "failed-upgrade-without-rollback-ignores-drift": Row(
        DESIRED,
        with_status(HelmStatus.FAILED, 4),
        failed(Action.UPGRADE),
        Action.WAIT_RETRY,
        Reason.UPGRADE_FAILED,
        drifted=True,
    ),
    "upgrade-that-never-touched-the-release-waits": Row(
        WITH_ROLLBACK,
        deployed(),
        failed(Action.UPGRADE, helm_revision=3),
        Action.WAIT_RETRY,
        Reason.UPGRADE_FAILED,
    ),
    "failed-upgrade-retried-after-spec-change": Row(
        replace(DESIRED, generation=GENERATION + 1),
        with_status(HelmStatus.FAILED, 4),
        failed(Action.UPGRADE),
        Action.UPGRADE,
        Reason.SPEC_CHANGED,
    ),
    "failed-upgrade-superseded-by-new-digest": Row(
        replace(DESIRED, digest="sha256:" + "e" * 64),
        with_status(HelmStatus.FAILED, 4),
        failed(Action.UPGRADE),
        Action.UPGRADE,
        Reason.CONFIG_CHANGED,
    ),
    "failed-install-waits-even-with-rollback": Row(
        WITH_ROLLBACK,
        with_status(HelmStatus.FAILED, 1),
        failed(Action.INSTALL, helm_revision=1),
        Action.WAIT_RETRY,
        Reason.INSTALL_FAILED,
    ),
    "failed-install-upgraded-after-spec-change": Row(
        replace(DESIRED, generation=GENERATION + 1),
        with_status(HelmStatus.FAILED, 1),
        failed(Action.INSTALL, helm_revision=1, applied_digest=None),
        Action.UPGRADE,
        Reason.SPEC_CHANGED,
    ),
    # Rollbacks and retries.
    "rolled-back-retries-upgrade": Row(
        WITH_RETRY,
        deployed(5),
        replace(ROLLED_BACK, rollback_count=1),
        Action.UPGRADE,
        Reason.RETRY_AFTER_ROLLBACK,
    ),
    "rolled-back-retries-at-the-limit": Row(
        WITH_RETRY,
        deployed(5),
        replace(ROLLED_BACK, rollback_count=2),
        Action.UPGRADE,
        Reason.RETRY_AFTER_ROLLBACK,
    ),
    "rolled-back-retries-exhausted": Row(
        WITH_RETRY,
        deployed(5),
        replace(ROLLED_BACK, rollback_count=3),
        Action.WAIT_RETRY,
        Reason.RETRIES_EXHAUSTED,
    ),
    "rolled-back-retries-exhausted-ignores-drift": Row(
        WITH_RETRY,
        deployed(5),
        replace(ROLLED_BACK, rollback_count=3),
        Action.WAIT_RETRY,
        Reason.RETRIES_EXHAUSTED,
        drifted=True,
    ),
    "max-retries-zero-is-unlimited": Row(
        replace(WITH_RETRY, max_retries=0),
        deployed(5),
        replace(ROLLED_BACK, rollback_count=40),
        Action.UPGRADE,
        Reason.RETRY_AFTER_ROLLBACK,
    ),
    "rolled-back-without-retry-waits": Row(
        WITH_ROLLBACK,
        deployed(5),
        replace(ROLLED_BACK, rollback_count=1),
        Action.WAIT_RETRY,
        Reason.WAITING_FOR_CHANGE,
    ),
    "rolled-back-then-new-digest-upgrades": Row(
        replace(WITH_ROLLBACK, digest="sha256:" + "e" * 64),
        deployed(5),
        replace(ROLLED_BACK, rollback_count=1),
        Action.UPGRADE,
        Reason.CONFIG_CHANGED,
    ),
    # Killed after `helm rollback` returned, before recording it: the rollback is recorded, never run again (a
    # second one would go back to the failed revision).
    "failed-upgrade-rolled-back-unrecorded-records-the-rollback": Row(
        WITH_ROLLBACK,
        deployed(5, digest=OLD_DIGEST),
        failed(Action.UPGRADE),
        Action.RECORD,
        Reason.ALREADY_APPLIED,
    ),
    "failed-test-rolled-back-unrecorded-records-the-rollback": Row(
        replace(WITH_TEST, rollback=True),
        deployed(4, digest=OLD_DIGEST),
        replace(IN_SYNC, last_action=Action.TEST, last_action_failed=True),
        Action.RECORD,
        Reason.ALREADY_APPLIED,
    ),
    "failed-upgrade-without-rollback-then-moved-on-waits": Row(
        DESIRED,
        deployed(5, digest=OLD_DIGEST),
        failed(Action.UPGRADE),
        Action.WAIT_RETRY,
        Reason.UPGRADE_FAILED,
    ),
    "failed-rollback-waits": Row(
        WITH_RETRY,
        with_status(HelmStatus.FAILED, 5),
        replace(ROLLED_BACK, last_action_failed=True),
        Action.WAIT_RETRY,
        Reason.ROLLBACK_FAILED,
    ),
    # Tests.
    "untested-revision-tested": Row(WITH_TEST, deployed(), IN_SYNC, Action.TEST, Reason.TEST_PENDING),
    "tested-revision-rests": Row(
        WITH_TEST, deployed(), replace(IN_SYNC, last_action=Action.TEST), Action.NOTHING, Reason.IN_SYNC
    ),
    "failed-test-rolls-back": Row(
        replace(WITH_TEST, rollback=True),
        deployed(),
        replace(IN_SYNC, last_action=Action.TEST, last_action_failed=True),
        Action.ROLLBACK,
        Reason.TEST_FAILED,
    ),
    "failed-test-of-first-revision-waits": Row(
        replace(WITH_TEST, rollback=True),
        deployed(1),
        replace(IN_SYNC, helm_revision=1, last_action=Action.TEST, last_action_failed=True),
        Action.WAIT_RETRY,
        Reason.TEST_FAILED,
    ),
    "failed-test-without-rollback-waits": Row(
        WITH_TEST,
        deployed(),
        replace(IN_SYNC, last_action=Action.TEST, last_action_failed=True),
        Action.WAIT_RETRY,
        Reason.TEST_FAILED,
    ),
    "failed-test-ignored": Row(
        replace(WITH_TEST, rollback=True, ignore_test_failures=True),
        deployed(),
        replace(IN_SYNC, last_action=Action.TEST, last_action_failed=True),
        Action.NOTHING,
        Reason.TEST_FAILURE_IGNORED,
    ),
    "failed-test-rerun-after-spec-change": Row(
        replace(WITH_TEST, generation=GENERATION + 1),
        deployed(),
        replace(IN_SYNC, last_action=Action.TEST, last_action_failed=True),
        Action.TEST,
        Reason.TEST_PENDING,
    ),
    "tests-enabled-later-test-current-revision": Row(
        replace(WITH_TEST, generation=GENERATION + 1), deployed(), IN_SYNC, Action.TEST, Reason.TEST_PENDING
    ),
    "drift-upgrades-before-testing": Row(
        WITH_TEST, deployed(), IN_SYNC, Action.UPGRADE, Reason.DRIFT_DETECTED, drifted=True
    ),
    # Deletion.
    "deleting-ours-uninstalls": Row(
        DESIRED, deployed(), IN_SYNC, Action.UNINSTALL, Reason.DELETING, deleting=True
    ),
    "deleting-failed-ours-uninstalls": Row(
        DESIRED,
        with_status(HelmStatus.FAILED),
        failed(Action.UPGRADE),
        Action.UNINSTALL,
        Reason.DELETING,
        deleting=True,
    ),
    "deleting-stale-pending-ours-uninstalls": Row(
        DESIRED,
        with_status(HelmStatus.PENDING_INSTALL, 1),
        Recorded(),
        Action.UNINSTALL,
        Reason.DELETING,
        deleting=True,
    ),
    "deleting-absent-does-nothing": Row(
        DESIRED, None, IN_SYNC, Action.NOTHING, Reason.RELEASE_ABSENT, deleting=True
    ),
    "deleting-uninstalled-does-nothing": Row(
        DESIRED,
        with_status(HelmStatus.UNINSTALLED),
        IN_SYNC,
        Action.NOTHING,
        Reason.RELEASE_ABSENT,
        deleting=True,
    ),
    "deleting-leaves-other-owners-release": Row(
        DESIRED,
        deployed(ownership=Ownership.OTHER),
        Recorded(),
        Action.NOTHING,
        Reason.NOT_OURS,
        deleting=True,
    ),
    "deleting-leaves-unmarked-release": Row(
        DESIRED,
        deployed(ownership=Ownership.UNMARKED),
        Recorded(),
        Action.NOTHING,
        Reason.NOT_OURS,
        deleting=True,
    ),
    # A force (reconcile.fluxcd.io/forceAt): one deploy whatever held the release back, never more than that.
    "force-upgrades-after-retries-are-exhausted": Row(
        WITH_RETRY,
        deployed(5),
        replace(ROLLED_BACK, rollback_count=3),
        Action.UPGRADE,
        Reason.FORCE_REQUESTED,
        forced=True,
    ),
    "force-upgrades-a-failed-upgrade-waiting-for-a-change": Row(
        DESIRED,
        with_status(HelmStatus.FAILED, 4),
        failed(Action.UPGRADE),
        Action.UPGRADE,
        Reason.FORCE_REQUESTED,
        forced=True,
    ),
    "force-upgrades-before-a-cluster-retry-is-due": Row(
        DESIRED,
        with_status(HelmStatus.FAILED, 4),
        cluster_failed(Action.UPGRADE, LATER),
        Action.UPGRADE,
        Reason.FORCE_REQUESTED,
        forced=True,
    ),
    "force-upgrades-an-unchanged-release": Row(
        DESIRED, deployed(), IN_SYNC, Action.UPGRADE, Reason.FORCE_REQUESTED, forced=True
    ),
    "force-installs-after-a-failed-install": Row(
        DESIRED, None, failed(Action.INSTALL), Action.INSTALL, Reason.FORCE_REQUESTED, forced=True
    ),
    "force-upgrades-instead-of-recording": Row(
        DESIRED, deployed(digest=DIGEST), OUTDATED, Action.UPGRADE, Reason.FORCE_REQUESTED, forced=True
    ),
    "force-does-not-touch-someone-elses-release": Row(
        DESIRED,
        deployed(ownership=Ownership.OTHER),
        Recorded(),
        Action.REFUSE,
        Reason.OWNED_BY_OTHER,
        forced=True,
    ),
    "force-unlocks-first": Row(
        DESIRED,
        with_status(HelmStatus.PENDING_UPGRADE),
        IN_SYNC,
        Action.UNLOCK,
        Reason.STALE_LOCK,
        forced=True,
    ),
    "force-does-not-stop-a-deletion": Row(
        DESIRED, deployed(), IN_SYNC, Action.UNINSTALL, Reason.DELETING, deleting=True, forced=True
    ),
    # The forced deploy finished, and the operator was killed before recording it: recorded, not forced again.
    "forced-upgrade-found-done-is-recorded": Row(
        DESIRED,
        deployed(4, digest=DIGEST),
        IN_SYNC,
        Action.RECORD,
        Reason.ALREADY_APPLIED,
        force_applied=True,
    ),
    "forced-upgrade-found-done-after-retries-is-recorded": Row(
        WITH_RETRY,
        deployed(6, digest=DIGEST),
        replace(ROLLED_BACK, rollback_count=3),
        Action.RECORD,
        Reason.ALREADY_APPLIED,
        force_applied=True,
    ),
    "forced-upgrade-found-done-and-recorded-rests": Row(
        DESIRED, deployed(3, digest=DIGEST), IN_SYNC, Action.NOTHING, Reason.IN_SYNC, force_applied=True
    ),
    "forced-deploy-of-older-values-found-done-upgrades-to-these": Row(
        DESIRED,
        deployed(4, digest=OLD_DIGEST),
        OUTDATED,
        Action.UPGRADE,
        Reason.CONFIG_CHANGED,
        force_applied=True,
    ),
}


def decide(row: Row) -> Plan:
    return next_action(
        row.desired,
        row.release,
        row.recorded,
        now=NOW,
        previous=row.previous,
        drifted=row.drifted,
        deleting=row.deleting,
        forced=row.forced,
        force_applied=row.force_applied,
    )


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_rule(row: Row) -> None:
    plan = decide(row)
    assert (plan.action, plan.reason) == (row.action, row.reason), plan.message
    assert row.desired.release in plan.message


def test_a_planned_retry_says_when_and_which_attempt_and_is_not_settled() -> None:
    plan = decide(ROWS["cluster-failed-upgrade-is-not-rolled-back"])
    assert plan.retry_after == 40
    assert not plan.settled
    assert "trying again at 2026-03-01T12:00:40Z (attempt 3)" in plan.message
    assert "because of the cluster" in plan.message


def test_a_retry_a_fraction_of_a_second_away_waits_at_least_a_second() -> None:
    recorded = cluster_failed(Action.INSTALL, NOW + timedelta(milliseconds=200))
    assert next_action(DESIRED, None, recorded, now=NOW).retry_after == 1


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 10), (1, 10), (2, 20), (3, 40), (6, 320), (7, 600), (8, 600), (10**6, 600)],
)
def test_cluster_retries_back_off_exponentially_up_to_a_cap(failures: int, delay: float) -> None:
    assert cluster_retry_delay(failures) == delay
    assert delay <= CLUSTER_RETRY_MAX


def test_exhausted_retries_say_what_to_do() -> None:
    plan = decide(ROWS["rolled-back-retries-exhausted"])
    assert "no retry is coming" in plan.message
    assert "revision 5 (the rollback) runs" in plan.message
    assert "edit the HelmRelease" in plan.message


def test_the_previous_release_is_the_recorded_one_when_the_name_or_namespace_moved() -> None:
    assert RENAMED.previous_release(DESIRED) == ("apps", "old-name")
    assert IN_SYNC.previous_release(DESIRED) is None, "nothing recorded"
    same = replace(IN_SYNC, release_namespace="apps", release_name="apps-podinfo")
    assert same.previous_release(DESIRED) is None
    moved = replace(same, release_namespace="old-ns")
    assert moved.previous_release(DESIRED) == ("old-ns", "apps-podinfo")
    older_status = replace(IN_SYNC, release_name="old-name")
    assert older_status.previous_release(DESIRED) == ("apps", "old-name"), "no namespace: the target's"


@pytest.mark.parametrize(
    ("plan", "settled"),
    [
        pytest.param(Plan(Action.NOTHING, Reason.IN_SYNC, "m"), True, id="nothing"),
        pytest.param(Plan(Action.REFUSE, Reason.OWNED_BY_OTHER, "m"), True, id="refuse"),
        pytest.param(Plan(Action.WAIT_RETRY, Reason.RETRIES_EXHAUSTED, "m"), True, id="wait-for-change"),
        pytest.param(
            Plan(Action.WAIT_RETRY, Reason.INSTALL_FAILED, "m", retry_after=10), False, id="wait-for-retry"
        ),
        pytest.param(Plan(Action.UPGRADE, Reason.CONFIG_CHANGED, "m"), False, id="upgrade"),
        pytest.param(Plan(Action.UNLOCK, Reason.STALE_LOCK, "m"), False, id="unlock"),
        pytest.param(Plan(Action.RECORD, Reason.ALREADY_APPLIED, "m"), False, id="record"),
    ],
)
def test_only_final_decisions_settle(plan: Plan, settled: bool) -> None:
    assert plan.settled is settled


def test_desired_reads_the_helmrelease() -> None:
    release = parse_helmrelease(
        {
            "metadata": {"name": "podinfo", "namespace": "flux", "generation": 9},
            "spec": {
                "targetNamespace": "apps",
                "chart": {"git": "https://git.example.com/charts.git", "path": "podinfo"},
                "rollback": {"enable": True, "retry": True, "maxRetries": 0},
                "test": {"enable": True, "ignoreFailures": True},
            },
        }
    )
    desired = Desired.of(release, digest=DIGEST, chart_revision="abc123", adopt_unmarked=False)
    assert desired == Desired(
        release_name="flux-apps-podinfo",
        namespace="apps",
        generation=9,
        digest=DIGEST,
        chart_revision="abc123",
        rollback=True,
        retry=True,
        max_retries=0,
        test=True,
        ignore_test_failures=True,
        adopt_unmarked=False,
    )
    assert desired.release == "apps/flux-apps-podinfo"


def test_recorded_reads_the_status_memory() -> None:
    status = HelmReleaseStatus.model_validate(
        {
            "lastAppliedDigest": OLD_DIGEST,
            "lastAttemptedDigest": DIGEST,
            "lastAttemptedGeneration": 4,
            "helmRevision": 7,
            "rollbackCount": 2,
            "lastAction": "rollback",
            "failures": 1,
            "releaseName": "web",
            "releaseNamespace": "apps",
            "retryAt": "2026-03-01T12:00:40Z",
            "clusterFailures": 3,
        }
    )
    assert Recorded.from_status(status) == Recorded(
        applied_digest=OLD_DIGEST,
        attempted_digest=DIGEST,
        attempted_generation=4,
        helm_revision=7,
        rollback_count=2,
        last_action=Action.ROLLBACK,
        last_action_failed=True,
        release_namespace="apps",
        release_name="web",
        retry_at=LATER,
        cluster_failures=3,
    )


# ------------------------------------------------------------------------------------------------------------
# Invariants over the state space: every combination of the dimensions that matter.

OTHER_DIGEST = "sha256:" + "e" * 64
RELEASES: tuple[ObservedRelease | None, ...] = (
    None,
    *(
        ObservedRelease(
            revision=revision, status=status, ownership=ownership, owner="elsewhere:helmrelease/x"
        )
        for status, ownership, revision in itertools.product(HelmStatus, Ownership, (1, 3))
    ),
)
RECORD_DIMENSIONS: dict[str, tuple[object, ...]] = {
    "applied_digest": (None, DIGEST, OLD_DIGEST),
    "attempted_digest": (None, DIGEST, OTHER_DIGEST),
    "attempted_generation": (GENERATION, GENERATION - 1),
    "helm_revision": (None, 3),
    "rollback_count": (2, 3),  # at and past the limit of WITH_RETRY-like settings (max_retries 2)
    # (Uninstalling a previous release is recorded like an uninstall and decides the same.)
    "last_action": (
        None,
        *(action for action in Action if action.runs_helm and action is not Action.UNINSTALL_PREVIOUS),
    ),
    "last_action_failed": (False, True),
}
DESIRED_DIMENSIONS: dict[str, tuple[object, ...]] = {
    "rollback": (False, True),
    "retry": (False, True),
    "max_retries": (0, 2),
    "test": (False, True),
    "ignore_test_failures": (False, True),
    "adopt_unmarked": (False, True),
}


def _product(dimensions: dict[str, tuple[object, ...]]) -> Iterator[dict[str, object]]:
    for values in itertools.product(*dimensions.values()):
        yield dict(zip(dimensions, values, strict=True))


RECORDS = tuple(Recorded(**fields) for fields in _product(RECORD_DIMENSIONS))
DESIREDS = tuple(replace(DESIRED, **fields) for fields in _product(DESIRED_DIMENSIONS))


#: Drawn per case rather than multiplied in, to keep the sweep near half a million cases.
RETRY_ATS = (None, DUE, LATER)
LABELS = (None, digest_label(DIGEST), digest_label(OLD_DIGEST))
#: Mostly the desired release (or none recorded): a previous one decides before everything else.
RECORDED_RELEASES = (
    (None, None),
    ("apps", DESIRED.release_name),
    ("apps", DESIRED.release_name),
    (None, DESIRED.release_name),
    ("apps", DESIRED.release_name),
    (None, None),
    ("apps", "old-name"),
    ("old-ns", DESIRED.release_name),
)
PREVIOUS = (
    deployed(),
    deployed(ownership=Ownership.OTHER),
    deployed(ownership=Ownership.UNMARKED),
    with_status(HelmStatus.UNINSTALLED),
    with_status(HelmStatus.FAILED),
    None,
)


@dataclass(frozen=True)
class Case:
    desired: Desired
    release: ObservedRelease | None
    recorded: Recorded
    drifted: bool
    deleting: bool
    previous: ObservedRelease | None = None
    forced: bool = False

    def plan(self, **changes: bool) -> Plan:
        case = replace(self, **changes) if changes else self
        return next_action(
            case.desired,
            case.release,
            case.recorded,
            now=NOW,
            previous=case.previous,
            drifted=case.drifted,
            deleting=case.deleting,
            forced=case.forced,
        )


def cases() -> Iterator[Case]:
    """Every release x every record x both flags (drifted, deleting), each with one of the desired variants; and
    again, where they can matter, with a planned retry time, a digest label on the release, a recorded release
    name and a release found under it, drawn too.

    The variants are drawn from a seeded generator: a fixed rotation would line up with the product's own period
    and pair some settings only with some flags (adoption only while deleting, say).
    """
    chooser = random.Random(20240611)
    labelled = {
        (index, label): replace(release, digest_label=label)
        for index, release in enumerate(RELEASES)
        if release is not None
        for label in LABELS
    }
    extended: dict[tuple[int, int, int], Recorded] = {}
    for (index, release), (record_index, recorded), flags in itertools.product(
        enumerate(RELEASES), enumerate(RECORDS), itertools.product((False, True), repeat=2)
    ):
        desired = chooser.choice(DESIREDS)
        yield Case(desired, release, recorded, *flags)
        if record_index % 7 == 0:  # a force requested: without a draw, so the cases above stay the same
            yield Case(desired, release, recorded, *flags, forced=True)
        retry, names = chooser.randrange(len(RETRY_ATS)), chooser.randrange(len(RECORDED_RELEASES))
        key = (record_index, retry, names)
        if key not in extended:
            namespace, name = RECORDED_RELEASES[names]
            extended[key] = replace(
                recorded, retry_at=RETRY_ATS[retry], release_namespace=namespace, release_name=name
            )
        variant = extended[key]
        label = chooser.choice(LABELS)
        # The pass observes a previous release only where the status names one other than the desired one.
        previous = chooser.choice(PREVIOUS) if variant.previous_release(desired) else None
        retry_matters = (
            variant.retry_at is not None and variant.attempted(desired) and variant.last_action_failed
        )
        label_matters = (
            label is not None
            and release is not None
            and release.status is HelmStatus.DEPLOYED
            and recorded.applied_digest != desired.digest
        )
        if retry_matters or label_matters or previous is not None:
            if release is not None:
                release = labelled[(index, label)]
            yield Case(desired, release, variant, *flags, previous=previous)


def _ours_and_present(case: Case) -> bool:
    return (
        case.release is not None
        and case.release.status is not HelmStatus.UNINSTALLED
        and case.release.ownership is Ownership.OURS
    )


def never_touches_someone_elses_release(case: Case, plan: Plan) -> bool:
    """(Uninstalling our previous release acts on that one, which its own invariant guards.)"""
    if case.release is None or case.release.status is HelmStatus.UNINSTALLED:
        return True
    hands_off = {Action.REFUSE, Action.NOTHING, Action.WAIT_RETRY, Action.UNINSTALL_PREVIOUS}
    if case.release.ownership is Ownership.OTHER:
        return plan.action in hands_off
    if case.release.ownership is Ownership.UNMARKED:
        return plan.action in {Action.ADOPT, *hands_off}
    return True


def _cluster_failure(case: Case) -> bool:
    """Our last action on exactly this configuration failed because of the cluster: a retry is planned."""
    recorded = case.recorded
    return recorded.attempted(case.desired) and recorded.last_action_failed and recorded.retry_at is not None


def _cluster_retry_due(case: Case) -> bool:
    return _cluster_failure(case) and case.recorded.retry_at is not None and case.recorded.retry_at <= NOW


def never_upgrades_an_unchanged_deployed_release(case: Case, plan: Plan) -> bool:
    """Our revision, deployed, at the desired digest, not drifted: no upgrade, unless a rollback made it or a
    cluster-side failure of an upgrade (a drift correction, say) is due for its retry."""
    rolled_back = case.recorded.last_action is Action.ROLLBACK and case.recorded.attempted(case.desired)
    unchanged = (
        _ours_and_present(case)
        and case.release is not None
        and case.release.status is HelmStatus.DEPLOYED
        and case.recorded.applied_digest == case.desired.digest
        and case.recorded.helm_revision == case.release.revision
        and not case.drifted
        and not rolled_back
        and not _cluster_retry_due(case)
        and not case.forced
    )
    return not unchanged or plan.action is not Action.UPGRADE


def never_retries_a_failed_deploy_of_the_same_config(case: Case, plan: Plan) -> bool:
    """...unless the cluster caused the failure and its retry is due."""
    recorded = case.recorded
    failed_deploy = (
        recorded.attempted(case.desired)
        and recorded.last_action_failed
        and recorded.last_action in {Action.INSTALL, Action.UPGRADE}
        and not _cluster_retry_due(case)
        and not case.forced
    )
    return not failed_deploy or plan.action not in {Action.INSTALL, Action.UPGRADE}


RETRIED = {Action.INSTALL, Action.UPGRADE, Action.TEST, Action.ROLLBACK}


def never_retries_before_the_planned_time(case: Case, plan: Plan) -> bool:
    if plan.reason is Reason.CLUSTER_RETRY:
        return _cluster_retry_due(case) and plan.action is not Action.WAIT_RETRY
    early = _cluster_failure(case) and not _cluster_retry_due(case) and case.recorded.last_action in RETRIED
    return case.forced or not (early and plan.action is case.recorded.last_action)


def a_plan_that_runs_again_by_itself_only_waits(case: Case, plan: Plan) -> bool:
    """retry_after: a planned retry not yet due (and then exactly its distance)."""
    if plan.retry_after is None:
        return True
    if plan.action is not Action.WAIT_RETRY:
        return False
    retry_at = case.recorded.retry_at
    return (
        _cluster_failure(case)
        and retry_at is not None
        and plan.retry_after >= (retry_at - NOW).total_seconds()
    )


def never_rolls_back_for_the_cluster(case: Case, plan: Plan) -> bool:
    """A cluster-side failure of an upgrade or test is retried, not remedied with a rollback."""
    return not (
        plan.action is Action.ROLLBACK
        and _cluster_failure(case)
        and case.recorded.last_action is not Action.ROLLBACK
    )


def records_only_a_deployed_revision_of_the_desired_digest(case: Case, plan: Plan) -> bool:
    if plan.action is not Action.RECORD:
        return True
    return (
        _ours_and_present(case)
        and case.release is not None
        and case.release.status is HelmStatus.DEPLOYED
        and case.release.digest_label == digest_label(case.desired.digest)
        and case.recorded.applied_digest != case.desired.digest
        and not case.deleting
    )


def uninstalls_a_previous_release_only_if_ours(case: Case, plan: Plan) -> bool:
    if plan.action is not Action.UNINSTALL_PREVIOUS:
        return True
    previous = case.previous
    return (
        case.recorded.previous_release(case.desired) is not None
        and previous is not None
        and previous.ownership is Ownership.OURS
        and previous.status is not HelmStatus.UNINSTALLED
    )


def drift_does_not_move_a_held_back_release(case: Case, plan: Plan) -> bool:
    if plan.action not in {Action.WAIT_RETRY, Action.ROLLBACK, Action.REFUSE}:
        return True
    return case.plan(drifted=not case.drifted) == plan


def uninstalls_only_our_release_on_delete(case: Case, plan: Plan) -> bool:
    return plan.action is not Action.UNINSTALL or (case.deleting and _ours_and_present(case))


def deletion_only_uninstalls_or_waits(case: Case, plan: Plan) -> bool:
    allowed = {Action.UNINSTALL, Action.UNINSTALL_PREVIOUS, Action.NOTHING, Action.WAIT_RETRY}
    return not case.deleting or plan.action in allowed


def installs_only_what_is_absent(case: Case, plan: Plan) -> bool:
    absent = case.release is None or case.release.status is HelmStatus.UNINSTALLED
    return plan.action is not Action.INSTALL or absent


def unlocks_only_stale_locks(case: Case, plan: Plan) -> bool:
    locked = case.release is not None and (
        case.release.status.is_pending or case.release.status is HelmStatus.UNINSTALLING
    )
    return plan.action is not Action.UNLOCK or locked


def rolls_back_only_when_enabled_and_failed(case: Case, plan: Plan) -> bool:
    return plan.action is not Action.ROLLBACK or (case.desired.rollback and case.recorded.last_action_failed)


def runs_tests_only_when_enabled(case: Case, plan: Plan) -> bool:
    return plan.action is not Action.TEST or case.desired.test


def retries_within_max_retries(case: Case, plan: Plan) -> bool:
    if plan.reason is not Reason.RETRY_AFTER_ROLLBACK:
        return True
    limit = case.desired.max_retries
    return case.desired.retry and (limit == 0 or case.recorded.rollback_count <= limit)


def a_force_deploys_what_is_ours_and_free(case: Case, plan: Plan) -> bool:
    """A force installs or upgrades unless the release is someone else's, locked, being deleted or renamed
    (those rows come first); without a force it is never the reason."""
    if not case.forced:
        return plan.reason is not Reason.FORCE_REQUESTED
    absent = case.release is None or case.release.status is HelmStatus.UNINSTALLED
    free = absent or (
        _ours_and_present(case)
        and case.release is not None
        and not case.release.status.is_pending
        and case.release.status is not HelmStatus.UNINSTALLING
    )
    if case.deleting or not free or plan.action is Action.UNINSTALL_PREVIOUS:
        return plan.reason is not Reason.FORCE_REQUESTED
    expected = Action.INSTALL if absent else Action.UPGRADE
    return (plan.action, plan.reason) == (expected, Reason.FORCE_REQUESTED)


def messages_name_the_release(case: Case, plan: Plan) -> bool:
    return case.desired.release in plan.message


INVARIANTS: dict[str, Callable[[Case, Plan], bool]] = {
    function.__name__: function
    for function in (
        never_touches_someone_elses_release,
        never_upgrades_an_unchanged_deployed_release,
        never_retries_a_failed_deploy_of_the_same_config,
        never_retries_before_the_planned_time,
        a_plan_that_runs_again_by_itself_only_waits,
        never_rolls_back_for_the_cluster,
        records_only_a_deployed_revision_of_the_desired_digest,
        uninstalls_a_previous_release_only_if_ours,
        drift_does_not_move_a_held_back_release,
        uninstalls_only_our_release_on_delete,
        deletion_only_uninstalls_or_waits,
        installs_only_what_is_absent,
        unlocks_only_stale_locks,
        rolls_back_only_when_enabled_and_failed,
        runs_tests_only_when_enabled,
        retries_within_max_retries,
        a_force_deploys_what_is_ours_and_free,
        messages_name_the_release,
    )
}


@dataclass(frozen=True)
class Sweep:
    """One pass over the state space: the first few cases breaking each invariant, and what was decided."""

    broken: dict[str, list[tuple[Case, Plan]]]
    actions: frozenset[Action]
    reasons: frozenset[Reason]
    size: int


@pytest.fixture(scope="module")
def sweep() -> Sweep:
    broken: dict[str, list[tuple[Case, Plan]]] = {name: [] for name in INVARIANTS}
    actions: set[Action] = set()
    reasons: set[Reason] = set()
    size = 0
    for case in cases():
        plan = case.plan()
        size += 1
        actions.add(plan.action)
        reasons.add(plan.reason)
        for name, holds in INVARIANTS.items():
            if len(broken[name]) < 3 and not holds(case, plan):
                broken[name].append((case, plan))
    return Sweep(broken, frozenset(actions), frozenset(reasons), size)


@pytest.mark.parametrize("name", list(INVARIANTS))
def test_invariant_holds_everywhere(name: str, sweep: Sweep) -> None:
    assert not sweep.broken[name], f"{name} broken, first cases: {sweep.broken[name]}"


def test_state_space_reaches_every_action_and_reason(sweep: Sweep) -> None:
    """The invariants are only as good as the space they run over: it must exercise every branch."""
    assert sweep.size > 100_000
    assert sweep.actions == set(Action)
    assert {row.reason for row in ROWS.values()} <= sweep.reasons
