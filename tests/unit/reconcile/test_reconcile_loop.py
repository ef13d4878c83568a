"""The plan and the status builder together, driven the way the handler drives them, against a scripted Helm.

Each scenario runs the loop (plan, record, act, record outcome, plan again) until it settles and checks the
sequence of actions: this is where "no hot loop", "retry at most maxRetries times" and "counters reset" show.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from helmrelease.api.constants import Action, ConditionType, HelmStatus
from helmrelease.api.ownership import Ownership
from helmrelease.api.status import HelmReleaseStatus
from helmrelease.reconcile.conditions import (
    Outcome,
    status_after_action,
    status_after_decision,
    status_after_record,
    status_before_action,
)
from helmrelease.reconcile.plan import Desired, ObservedRelease, Recorded, next_action
from helmrelease.reconcile.releases import digest_label

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DESIRED = Desired(
    release_name="apps-podinfo",
    namespace="apps",
    generation=1,
    digest="sha256:" + "1" * 64,
    chart_revision="6.5.0",
)


@dataclass
class FakeHelm:
    """Helm's release history for one release; deploys and tests fail for the digests listed in `failing`, and
    every deploy fails on the cluster's side (a quota, say) while `cluster_down`."""

    failing: set[str] = field(default_factory=set)
    failing_tests: set[str] = field(default_factory=set)
    #: (revision, status, digest) per stored revision, oldest first; the digest is also the revision's label.
    history: list[tuple[int, HelmStatus, str]] = field(default_factory=list)
    ownership: Ownership = Ownership.OURS
    cluster_down: bool = False

    def observe(self) -> ObservedRelease | None:
        if not self.history:
            return None
        revision, status, digest = self.history[-1]
        label = digest_label(digest) if digest.startswith("sha256:") else None
        return ObservedRelease(revision=revision, status=status, ownership=self.ownership, digest_label=label)

    def _store(self, status: HelmStatus, digest: str) -> int:
        revision = self.history[-1][0] + 1 if self.history else 1
        if status is HelmStatus.DEPLOYED:
            self.history = [(r, HelmStatus.SUPERSEDED, d) for r, _, d in self.history]
        self.history.append((revision, status, digest))
        return revision

    def _result(self, succeeded: bool, error: str = "") -> Outcome:
        observed = self.observe()
        return Outcome(
            succeeded=succeeded,
            error=error,
            helm_revision=observed.revision if observed else None,
            release_status=observed.status if observed else None,
        )

    def run(self, action: Action, desired: Desired) -> Outcome:
        match action:
            case Action.INSTALL | Action.UPGRADE:
                if self.cluster_down:
                    self._store(HelmStatus.FAILED, desired.digest)
                    failed = self._result(False, 'services "web" is forbidden: exceeded quota: q')
                    return replace(failed, cluster_side=True)
                if desired.digest in self.failing:
                    self._store(HelmStatus.FAILED, desired.digest)
                    return self._result(False, "Error: context deadline exceeded")
                self._store(HelmStatus.DEPLOYED, desired.digest)
                return self._result(True)
            case Action.TEST:
                digest = self.history[-1][2]
                passed = digest not in self.failing_tests
                return self._result(passed, "" if passed else "Error: pod podinfo-test failed")
            case Action.ROLLBACK:
                good = {HelmStatus.DEPLOYED, HelmStatus.SUPERSEDED}
                previous = [entry for entry in self.history[:-1] if entry[1] in good]
                self._store(HelmStatus.DEPLOYED, previous[-1][2])
                return self._result(True)
            case Action.UNLOCK:
                revision, _, digest = self.history[-1]
                self.history[-1] = (revision, HelmStatus.FAILED, digest)
                return self._result(True)
            case Action.ADOPT:
                self.ownership = Ownership.OURS
                return self._result(True)
            case Action.UNINSTALL:
                self.history = []
                return self._result(True)
        raise AssertionError(f"not a Helm action: {action}")


def revision_and_status(helm: FakeHelm) -> tuple[int, HelmStatus] | None:
    release = helm.observe()
    return None if release is None else (release.revision, release.status)


@dataclass
class Loop:
    """The handler's loop, pure: what it did, and the status it would write. Each step takes a second."""

    helm: FakeHelm
    status: HelmReleaseStatus = field(default_factory=HelmReleaseStatus)
    now: datetime = START
    #: Seconds after which the last pass asked to run again by itself (a planned retry), as the handler would.
    retry_after: float | None = None

    def tick(self, seconds: float = 1) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def reconcile(
        self,
        desired: Desired,
        *,
        drifted: bool = False,
        deleting: bool = False,
        crash_after: Action | None = None,
    ) -> list[Action]:
        """One pass; `crash_after`: the operator is killed right after Helm finishes that action."""
        actions: list[Action] = []
        self.retry_after = None
        for _ in range(30):
            release = self.helm.observe()
            plan = next_action(
                desired,
                release,
                Recorded.from_status(self.status),
                now=self.tick(),
                drifted=drifted,
                deleting=deleting,
            )
            actions.append(plan.action)
            if plan.action is Action.RECORD and release is not None:
                self.status = status_after_record(self.status, desired, release, self.tick())
                continue
            if not plan.action.runs_helm:
                self.status = status_after_decision(self.status, desired, plan, release, self.tick())
                self.retry_after = plan.retry_after
                return actions
            self.status = status_before_action(self.status, desired, plan.action, self.tick())
            outcome = self.helm.run(plan.action, desired)
            if plan.action is crash_after:
                return actions  # killed: the outcome is never recorded
            self.status = status_after_action(self.status, desired, plan.action, outcome, self.tick())
            drifted = drifted and plan.action is not Action.UPGRADE
            if deleting and plan.action is Action.UNINSTALL and outcome.succeeded:
                return actions
        raise AssertionError(f"the loop did not settle: {actions}")


INS, UPG, TST, RBK, NOP, WAIT = (
    Action.INSTALL,
    Action.UPGRADE,
    Action.TEST,
    Action.ROLLBACK,
    Action.NOTHING,
    Action.WAIT_RETRY,
)
BAD = "sha256:" + "b" * 64


def test_install_then_rest() -> None:
    loop = Loop(FakeHelm())
    assert loop.reconcile(DESIRED) == [INS, NOP]
    assert loop.reconcile(DESIRED) == [NOP], "a resync of an unchanged release runs no Helm action"
    assert loop.status.observed_generation == 1
    assert loop.status.helm_revision == 1


def test_new_digest_upgrades_once() -> None:
    loop = Loop(FakeHelm())
    loop.reconcile(DESIRED)
    changed = replace(DESIRED, digest="sha256:" + "2" * 64, generation=2)
    assert loop.reconcile(changed) == [UPG, NOP]
    assert loop.reconcile(changed) == [NOP]


def test_drift_is_corrected_once() -> None:
    loop = Loop(FakeHelm())
    loop.reconcile(DESIRED)
    assert loop.reconcile(DESIRED, drifted=True) == [UPG, NOP]
    assert revision_and_status(loop.helm) == (2, HelmStatus.DEPLOYED)


def test_failed_upgrade_without_rollback_is_not_retried() -> None:
    loop = Loop(FakeHelm(failing={BAD}))
    loop.reconcile(DESIRED)
    bad = replace(DESIRED, digest=BAD, generation=2)
    assert loop.reconcile(bad) == [UPG, WAIT]
    assert loop.reconcile(bad) == [WAIT]
    assert loop.reconcile(bad, drifted=True) == [WAIT], "drift does not restart a failing configuration"
    assert loop.status.observed_generation == 2
    fixed = replace(DESIRED, digest="sha256:" + "3" * 64, generation=3)
    assert loop.reconcile(fixed) == [UPG, NOP]


def test_spec_change_retries_a_failed_upgrade_once() -> None:
    loop = Loop(FakeHelm(failing={BAD}))
    loop.reconcile(DESIRED)
    loop.reconcile(replace(DESIRED, digest=BAD, generation=2))
    assert loop.reconcile(replace(DESIRED, digest=BAD, generation=3)) == [UPG, WAIT]


@pytest.mark.parametrize(
    ("max_retries", "actions", "rollbacks"),
    [
        pytest.param(2, [UPG, RBK, UPG, RBK, UPG, RBK, WAIT], 3, id="two-retries"),
        pytest.param(1, [UPG, RBK, UPG, RBK, WAIT], 2, id="one-retry"),
    ],
)
def test_rollback_and_retry_stop_at_max_retries(
    max_retries: int, actions: list[Action], rollbacks: int
) -> None:
    loop = Loop(FakeHelm(failing={BAD}))
    loop.reconcile(DESIRED)
    bad = replace(DESIRED, digest=BAD, generation=2, rollback=True, retry=True, max_retries=max_retries)
    assert loop.reconcile(bad) == actions
    assert loop.status.rollback_count == rollbacks
    assert loop.reconcile(bad) == [WAIT]
    assert revision_and_status(loop.helm) == (1 + 2 * rollbacks, HelmStatus.DEPLOYED)


def test_rollback_without_retry_waits_for_a_change_then_resets_the_count() -> None:
    loop = Loop(FakeHelm(failing={BAD}))
    loop.reconcile(DESIRED)
    assert loop.reconcile(replace(DESIRED, digest=BAD, generation=2, rollback=True)) == [UPG, RBK, WAIT]
    assert loop.status.rollback_count == 1
    fixed = replace(DESIRED, digest="sha256:" + "3" * 64, generation=3, rollback=True)
    assert loop.reconcile(fixed) == [UPG, NOP]
    assert loop.status.rollback_count == 0


def test_failed_test_rolls_back() -> None:
    loop = Loop(FakeHelm(failing_tests={BAD}))
    tested = replace(DESIRED, test=True, rollback=True)
    assert loop.reconcile(tested) == [INS, TST, NOP]
    bad = replace(tested, digest=BAD, generation=2)
    assert loop.reconcile(bad) == [UPG, TST, RBK, WAIT]
    assert loop.status.last_applied_digest is None, "what runs now is the older revision"
    assert loop.reconcile(bad) == [WAIT]


def test_ignored_test_failure_settles() -> None:
    loop = Loop(FakeHelm(failing_tests={DESIRED.digest}))
    assert loop.reconcile(replace(DESIRED, test=True, ignore_test_failures=True)) == [INS, TST, NOP]
    ready = loop.status.condition(ConditionType.READY)
    assert ready is not None
    assert ready.status == "True"


def test_interrupted_upgrade_is_recovered() -> None:
    loop = Loop(FakeHelm())
    loop.reconcile(DESIRED)
    loop.helm.history.append((2, HelmStatus.PENDING_UPGRADE, DESIRED.digest))
    changed = replace(DESIRED, digest="sha256:" + "2" * 64, generation=2)
    assert loop.reconcile(changed) == [Action.UNLOCK, UPG, NOP]


def test_unmarked_release_is_adopted_and_upgraded() -> None:
    helm = FakeHelm(ownership=Ownership.UNMARKED, history=[(1, HelmStatus.DEPLOYED, "hand-made")])
    assert Loop(helm).reconcile(DESIRED) == [Action.ADOPT, UPG, NOP]


def test_release_of_another_helmrelease_is_refused() -> None:
    helm = FakeHelm(ownership=Ownership.OTHER, history=[(1, HelmStatus.DEPLOYED, "theirs")])
    loop = Loop(helm)
    assert loop.reconcile(DESIRED) == [Action.REFUSE]
    assert loop.reconcile(DESIRED, deleting=True) == [NOP]
    assert helm.history == [(1, HelmStatus.DEPLOYED, "theirs")]


def test_deletion_uninstalls_ours() -> None:
    loop = Loop(FakeHelm())
    loop.reconcile(DESIRED)
    assert loop.reconcile(DESIRED, deleting=True) == [Action.UNINSTALL]
    assert loop.helm.observe() is None


def test_a_failure_of_the_cluster_is_retried_by_itself_with_backoff() -> None:
    """A quota that is full: no change to the HelmRelease is needed once it is raised, and no rollback."""
    loop = Loop(FakeHelm())
    loop.reconcile(DESIRED)
    changed = replace(DESIRED, digest="sha256:" + "2" * 64, generation=2, rollback=True)
    loop.helm.cluster_down = True
    assert loop.reconcile(changed) == [UPG, WAIT]
    assert loop.retry_after == 9, "10 s after the failure, which was a second ago"
    assert loop.reconcile(changed) == [WAIT], "a resync before the retry is due waits too"
    loop.tick(loop.retry_after)
    assert loop.reconcile(changed) == [UPG, WAIT]
    assert loop.retry_after == 19, "the second wait is twice as long"
    assert loop.status.cluster_failures == 2
    loop.helm.cluster_down = False
    loop.tick(loop.retry_after)
    assert loop.reconcile(changed) == [UPG, NOP]
    assert (loop.status.retry_at, loop.status.cluster_failures, loop.status.rollback_count) == (None, 0, 0)
    assert loop.status.observed_generation == 2
    ready = loop.status.condition(ConditionType.READY)
    assert ready is not None
    assert ready.status == "True"


def test_a_failure_of_the_cluster_on_install_is_retried_by_upgrading() -> None:
    loop = Loop(FakeHelm(cluster_down=True))
    assert loop.reconcile(DESIRED) == [INS, WAIT]
    loop.helm.cluster_down = False
    assert loop.retry_after is not None
    loop.tick(loop.retry_after)
    assert loop.reconcile(DESIRED) == [UPG, NOP], "helm keeps the failed install as revision 1"


def test_a_change_while_a_retry_is_planned_goes_ahead_at_once() -> None:
    loop = Loop(FakeHelm(cluster_down=True))
    assert loop.reconcile(DESIRED) == [INS, WAIT]
    loop.helm.cluster_down = False
    assert loop.reconcile(replace(DESIRED, generation=2)) == [UPG, NOP]


@pytest.mark.parametrize(
    ("first", "killed_in"),
    [pytest.param(None, INS, id="install"), pytest.param(DESIRED, UPG, id="upgrade")],
)
def test_a_deploy_helm_finished_before_a_crash_is_recorded_not_repeated(
    first: Desired | None, killed_in: Action
) -> None:
    loop = Loop(FakeHelm())
    if first is not None:
        loop.reconcile(first)
    changed = replace(DESIRED, digest="sha256:" + "2" * 64, generation=2, test=True)
    assert loop.reconcile(changed, crash_after=killed_in) == [killed_in]
    revisions = len(loop.helm.history)
    assert loop.reconcile(changed) == [Action.RECORD, TST, NOP], "recorded, then on as usual: the test"
    assert len(loop.helm.history) == revisions, "no second revision of the same chart and values"
    assert loop.status.last_applied_digest == changed.digest
