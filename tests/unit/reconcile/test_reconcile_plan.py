"""The next-action function: named rows for every rule, then invariants checked over the whole state space."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest

from helmrelease.api.constants import Action, HelmStatus, Reason
from helmrelease.api.ownership import Ownership
from helmrelease.api.resource import parse_helmrelease
from helmrelease.api.status import HelmReleaseStatus
from helmrelease.reconcile.plan import Desired, ObservedRelease, Plan, Recorded, next_action

DIGEST = "sha256:" + "d" * 64
OLD_DIGEST = "sha256:" + "0" * 64
GENERATION = 4

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


def deployed(revision: int = 3, ownership: Ownership = Ownership.OURS) -> ObservedRelease:
    return ObservedRelease(revision=revision, status=HelmStatus.DEPLOYED, ownership=ownership)


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


@dataclass(frozen=True)
class Row:
    desired: Desired
    release: ObservedRelease | None
    recorded: Recorded
    action: Action
    reason: Reason
    drifted: bool = False
    deleting: bool = False
    operation_running: bool = False


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
    # Ownership.
    "owned-by-other-refused": Row(
        DESIRED, deployed(ownership=Ownership.OTHER), Recorded(), Action.REFUSE, Reason.OWNED_BY_OTHER
    ),
    "unmarked-adopted": Row(
        DESIRED, deployed(ownership=Ownership.UNMARKED), Recorded(), Action.ADOPT, Reason.UNMANAGED_RELEASE
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
    "our-operation-running-waits": Row(
        DESIRED,
        with_status(HelmStatus.PENDING_UPGRADE),
        IN_SYNC,
        Action.WAIT_RETRY,
        Reason.OPERATION_IN_PROGRESS,
        operation_running=True,
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
    "deleting-waits-for-running-operation": Row(
        DESIRED,
        with_status(HelmStatus.PENDING_UPGRADE),
        IN_SYNC,
        Action.WAIT_RETRY,
        Reason.OPERATION_IN_PROGRESS,
        deleting=True,
        operation_running=True,
    ),
}


def decide(row: Row) -> Plan:
    return next_action(
        row.desired,
        row.release,
        row.recorded,
        drifted=row.drifted,
        deleting=row.deleting,
        operation_running=row.operation_running,
    )


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_rule(row: Row) -> None:
    plan = decide(row)
    assert (plan.action, plan.reason) == (row.action, row.reason), plan.message
    assert row.desired.release in plan.message


@pytest.mark.parametrize(
    ("plan", "settled"),
    [
        pytest.param(Plan(Action.NOTHING, Reason.IN_SYNC, "m"), True, id="nothing"),
        pytest.param(Plan(Action.REFUSE, Reason.OWNED_BY_OTHER, "m"), True, id="refuse"),
        pytest.param(Plan(Action.WAIT_RETRY, Reason.RETRIES_EXHAUSTED, "m"), True, id="wait-for-change"),
        pytest.param(Plan(Action.WAIT_RETRY, Reason.OPERATION_IN_PROGRESS, "m"), False, id="wait-for-lock"),
        pytest.param(Plan(Action.UPGRADE, Reason.CONFIG_CHANGED, "m"), False, id="upgrade"),
        pytest.param(Plan(Action.UNLOCK, Reason.STALE_LOCK, "m"), False, id="unlock"),
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
    "last_action": (None, *(action for action in Action if action.runs_helm)),
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


@dataclass(frozen=True)
class Case:
    desired: Desired
    release: ObservedRelease | None
    recorded: Recorded
    drifted: bool
    deleting: bool
    operation_running: bool

    def plan(self, **changes: bool) -> Plan:
        case = replace(self, **changes)
        return next_action(
            case.desired,
            case.release,
            case.recorded,
            drifted=case.drifted,
            deleting=case.deleting,
            operation_running=case.operation_running,
        )


def cases() -> Iterator[Case]:
    """Every release x every record x the three flags, each with one of the desired variants.

    The variant is drawn from a seeded generator: a fixed rotation would line up with the product's own period
    and pair some settings only with some flags (adoption only while an operation runs, say).
    """
    chooser = random.Random(20240611)
    for release, recorded, flags in itertools.product(
        RELEASES, RECORDS, itertools.product((False, True), repeat=3)
    ):
        yield Case(chooser.choice(DESIREDS), release, recorded, *flags)


def _ours_and_present(case: Case) -> bool:
    return (
        case.release is not None
        and case.release.status is not HelmStatus.UNINSTALLED
        and case.release.ownership is Ownership.OURS
    )


def never_touches_someone_elses_release(case: Case, plan: Plan) -> bool:
    if case.release is None or case.release.status is HelmStatus.UNINSTALLED:
        return True
    if case.release.ownership is Ownership.OTHER:
        return plan.action in {Action.REFUSE, Action.NOTHING, Action.WAIT_RETRY}
    if case.release.ownership is Ownership.UNMARKED:
        return plan.action in {Action.ADOPT, Action.REFUSE, Action.NOTHING, Action.WAIT_RETRY}
    return True


def never_upgrades_an_unchanged_deployed_release(case: Case, plan: Plan) -> bool:
    """Our revision, deployed, at the desired digest, not drifted: no upgrade, unless a rollback made it."""
    rolled_back = case.recorded.last_action is Action.ROLLBACK and case.recorded.attempted(case.desired)
    unchanged = (
        _ours_and_present(case)
        and case.release is not None
        and case.release.status is HelmStatus.DEPLOYED
        and case.recorded.applied_digest == case.desired.digest
        and case.recorded.helm_revision == case.release.revision
        and not case.drifted
        and not rolled_back
    )
    return not unchanged or plan.action is not Action.UPGRADE


def never_retries_a_failed_deploy_of_the_same_config(case: Case, plan: Plan) -> bool:
    recorded = case.recorded
    failed_deploy = (
        recorded.attempted(case.desired)
        and recorded.last_action_failed
        and recorded.last_action in {Action.INSTALL, Action.UPGRADE}
    )
    return not failed_deploy or plan.action not in {Action.INSTALL, Action.UPGRADE}


def drift_does_not_move_a_held_back_release(case: Case, plan: Plan) -> bool:
    if plan.action not in {Action.WAIT_RETRY, Action.ROLLBACK, Action.REFUSE}:
        return True
    return case.plan(drifted=not case.drifted) == plan


def uninstalls_only_our_release_on_delete(case: Case, plan: Plan) -> bool:
    return plan.action is not Action.UNINSTALL or (case.deleting and _ours_and_present(case))


def deletion_only_uninstalls_or_waits(case: Case, plan: Plan) -> bool:
    return not case.deleting or plan.action in {Action.UNINSTALL, Action.NOTHING, Action.WAIT_RETRY}


def running_operation_is_never_joined(case: Case, plan: Plan) -> bool:
    return not case.operation_running or plan.action is Action.WAIT_RETRY


def installs_only_what_is_absent(case: Case, plan: Plan) -> bool:
    absent = case.release is None or case.release.status is HelmStatus.UNINSTALLED
    return plan.action is not Action.INSTALL or absent


def unlocks_only_stale_locks(case: Case, plan: Plan) -> bool:
    locked = case.release is not None and (
        case.release.status.is_pending or case.release.status is HelmStatus.UNINSTALLING
    )
    return plan.action is not Action.UNLOCK or (locked and not case.operation_running)


def rolls_back_only_when_enabled_and_failed(case: Case, plan: Plan) -> bool:
    return plan.action is not Action.ROLLBACK or (case.desired.rollback and case.recorded.last_action_failed)


def runs_tests_only_when_enabled(case: Case, plan: Plan) -> bool:
    return plan.action is not Action.TEST or case.desired.test


def retries_within_max_retries(case: Case, plan: Plan) -> bool:
    if plan.reason is not Reason.RETRY_AFTER_ROLLBACK:
        return True
    limit = case.desired.max_retries
    return case.desired.retry and (limit == 0 or case.recorded.rollback_count <= limit)


def messages_name_the_release(case: Case, plan: Plan) -> bool:
    return case.desired.release in plan.message


INVARIANTS: dict[str, Callable[[Case, Plan], bool]] = {
    function.__name__: function
    for function in (
        never_touches_someone_elses_release,
        never_upgrades_an_unchanged_deployed_release,
        never_retries_a_failed_deploy_of_the_same_config,
        drift_does_not_move_a_held_back_release,
        uninstalls_only_our_release_on_delete,
        deletion_only_uninstalls_or_waits,
        running_operation_is_never_joined,
        installs_only_what_is_absent,
        unlocks_only_stale_locks,
        rolls_back_only_when_enabled_and_failed,
        runs_tests_only_when_enabled,
        retries_within_max_retries,
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
