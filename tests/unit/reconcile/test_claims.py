"""Claims on releases across replicas (peering): the pure decision, the plan's row, and the Lease they live in.

kopf pauses a replica's watches when one of higher priority joins, not its running pass: without a claim the
newcomer took the release the paused one was upgrading (`pending-upgrade`) for a stale lock and rolled it back under
the running upgrade (tests/integration/test_replicas.py measures it with two real replicas).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.unit.reconcile.fakes import FakeHelm, FakeKube, KubeState, ReleaseIndex, StoredRevision
from tests.unit.reconcile.test_reconcile_pass import NAME, NAMESPACE, RELEASE, Harness, Pass

from helmrelease.api.constants import Action, ConditionStatus, ConditionType, HelmStatus, Reason
from helmrelease.api.ownership import Ownership
from helmrelease.reconcile.claims import HeldClaim, ReleaseClaims
from helmrelease.reconcile.observe import index_caught_up
from helmrelease.reconcile.plan import (
    CLAIM_DURATION,
    Claim,
    ClaimStep,
    Desired,
    ObservedRelease,
    Recorded,
    claim_lease_name,
    claim_step,
    claim_wait,
    next_action,
)
from helmrelease.reconcile.releases import IndexedRelease, StoredReleaseView, owner_labels

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ME, PEER = "pod-a/1/aaaa", "pod-b/1/bbbb"


def renewed(seconds_ago: float, holder: str | None = PEER) -> Claim:
    return Claim(holder, NOW - timedelta(seconds=seconds_ago), CLAIM_DURATION)


@pytest.mark.parametrize(
    ("claim", "step"),
    [
        pytest.param(None, ClaimStep.TAKE, id="no-claim-is-taken"),
        pytest.param(renewed(5, holder=None), ClaimStep.TAKE, id="a-claim-without-holder-is-taken"),
        pytest.param(renewed(5, holder=""), ClaimStep.TAKE, id="a-released-claim-is-taken"),
        pytest.param(renewed(5, holder=ME), ClaimStep.KEEP, id="ours-is-kept"),
        pytest.param(renewed(60, holder=ME), ClaimStep.KEEP, id="ours-even-expired-is-kept"),
        pytest.param(renewed(5), ClaimStep.WAIT, id="a-peer-renewing-it-is-waited-for"),
        pytest.param(renewed(CLAIM_DURATION - 0.5), ClaimStep.WAIT, id="just-before-expiry-is-waited-for"),
        pytest.param(renewed(CLAIM_DURATION), ClaimStep.TAKE, id="expired-at-its-duration-is-taken"),
        pytest.param(renewed(300), ClaimStep.TAKE, id="a-dead-peers-claim-is-taken"),
        pytest.param(Claim(PEER, None), ClaimStep.TAKE, id="no-renewal-time-counts-as-expired"),
        pytest.param(renewed(-5), ClaimStep.WAIT, id="renewed-in-our-future-is-waited-for"),
    ],
)
def test_claim_step(claim: Claim | None, step: ClaimStep) -> None:
    assert claim_step(claim, ME, NOW) is step


@pytest.mark.parametrize(
    ("claim", "wait"),
    [
        pytest.param(renewed(0), 10.0, id="polled-at-most-every-ten-seconds"),
        pytest.param(renewed(CLAIM_DURATION - 3), 3.0, id="until-it-expires"),
        pytest.param(renewed(CLAIM_DURATION - 0.2), 1.0, id="at-least-a-second"),
        pytest.param(Claim(PEER, None), 1.0, id="no-renewal-time"),
    ],
)
def test_claim_wait(claim: Claim, wait: float) -> None:
    assert claim_wait(claim, NOW) == wait


DESIRED = Desired("web", "apps", 2, "sha256:" + "b" * 64, "6.5.0", rollback=True)
RECORDED = Recorded(
    applied_digest="sha256:" + "a" * 64,
    attempted_digest="sha256:" + "a" * 64,
    attempted_generation=1,
    helm_revision=1,
    last_action=Action.INSTALL,
)


@pytest.mark.parametrize(
    "release",
    [
        pytest.param(ObservedRelease(2, HelmStatus.PENDING_UPGRADE, Ownership.OURS), id="pending-upgrade"),
        pytest.param(ObservedRelease(1, HelmStatus.PENDING_INSTALL, Ownership.OURS), id="pending-install"),
        pytest.param(ObservedRelease(1, HelmStatus.DEPLOYED, Ownership.OURS), id="deployed-config-changed"),
        pytest.param(ObservedRelease(1, HelmStatus.FAILED, Ownership.OURS), id="failed"),
        pytest.param(None, id="absent"),
    ],
)
@pytest.mark.parametrize("deleting", [False, True], ids=["reconciling", "deleting"])
def test_a_live_claim_of_another_replica_waits_whatever_the_release_shows(
    release: ObservedRelease | None, deleting: bool
) -> None:
    plan = next_action(DESIRED, release, RECORDED, now=NOW, deleting=deleting, claimed_by=renewed(5))
    assert (plan.action, plan.reason) == (Action.WAIT_RETRY, Reason.OPERATION_IN_PROGRESS)
    assert plan.retry_after == 10.0
    assert not plan.settled
    assert PEER in plan.message
    assert claim_lease_name("web") in plan.message


def test_without_a_claim_elsewhere_a_pending_release_is_a_stale_lock() -> None:
    pending = ObservedRelease(2, HelmStatus.PENDING_UPGRADE, Ownership.OURS)
    plan = next_action(DESIRED, pending, RECORDED, now=NOW)
    assert (plan.action, plan.reason) == (Action.UNLOCK, Reason.STALE_LOCK)


def test_a_claim_lease_name_is_a_valid_object_name_for_the_longest_release_name() -> None:
    name = claim_lease_name("r" * 53)
    assert len(name) <= 253
    assert name.startswith("helmrelease.")


@pytest.mark.parametrize(
    ("entry", "after", "caught_up"),
    [
        pytest.param(None, HelmStatus.DEPLOYED, False, id="no-entry"),
        pytest.param(IndexedRelease(1, "deployed"), HelmStatus.DEPLOYED, False, id="older-revision"),
        pytest.param(
            IndexedRelease(2, "pending-upgrade"), HelmStatus.DEPLOYED, False, id="same-still-pending"
        ),
        pytest.param(
            IndexedRelease(2, "pending-upgrade"), HelmStatus.PENDING_UPGRADE, True, id="both-pending"
        ),
        pytest.param(IndexedRelease(2, "deployed"), HelmStatus.DEPLOYED, True, id="same-finished"),
        pytest.param(IndexedRelease(2, "failed"), HelmStatus.DEPLOYED, True, id="same-changed-since"),
        pytest.param(IndexedRelease(3, "pending-rollback"), HelmStatus.DEPLOYED, True, id="newer-revision"),
    ],
)
def test_index_caught_up(entry: IndexedRelease | None, after: HelmStatus, caught_up: bool) -> None:
    assert index_caught_up(entry, ObservedRelease(2, after, Ownership.OURS)) is caught_up


def test_a_stored_release_view_has_the_latest_revision_of_each_release() -> None:
    labels = [
        {"name": "web", "version": "1", "status": "superseded"},
        {"name": "web", "version": "2", "status": "deployed"},
        {"name": "db", "version": "1", "status": "pending-install"},
        {"name": "broken", "version": "x"},
    ]
    view = StoredReleaseView("apps", labels)
    assert view.latest("apps", "web") == IndexedRelease(2, "deployed")
    assert view.latest("apps", "db") == IndexedRelease(1, "pending-install")
    assert view.latest("apps", "broken") is None
    assert view.latest("other", "web") is None


# --- the Lease ------------------------------------------------------------------------------------------------


def claims(state: KubeState, identity: str, duration: float = CLAIM_DURATION) -> ReleaseClaims:
    return ReleaseClaims(FakeKube(FakeHelm(), state), identity, duration=duration)


async def test_a_claim_is_taken_held_against_a_peer_and_deleted_when_released() -> None:
    state = KubeState()
    mine, theirs = claims(state, ME), claims(state, PEER)
    held = await mine.take("apps", "web")
    assert isinstance(held, HeldClaim)
    assert state.leases["apps", "helmrelease.web"].holder == ME
    waited = await theirs.take("apps", "web")
    assert isinstance(waited, Claim)
    assert waited.holder == ME
    await mine.release(held)
    assert ("apps", "helmrelease.web") not in state.leases, "released: no Lease left behind"
    taken = await theirs.take("apps", "web")
    assert isinstance(taken, HeldClaim)
    await theirs.release(taken)


async def test_the_claim_of_a_replica_that_stopped_renewing_is_taken_over() -> None:
    state = KubeState()
    dead = await claims(state, PEER).take("apps", "web")
    assert isinstance(dead, HeldClaim)
    assert dead.task is not None
    dead.task.cancel()  # killed: no more renewals
    lease = state.leases["apps", "helmrelease.web"]
    state.leases["apps", "helmrelease.web"] = type(lease)(
        lease.name, lease.namespace, lease.holder, dt.datetime.now(dt.UTC) - timedelta(seconds=31), 30.0, "9"
    )
    taken = await claims(state, ME).take("apps", "web")
    assert isinstance(taken, HeldClaim)
    assert state.leases["apps", "helmrelease.web"].holder == ME
    await claims(state, ME).release(taken)


async def test_a_write_that_loses_the_race_looks_again() -> None:
    state = KubeState(lease_conflicts=1)
    held = await claims(state, ME).take("apps", "web")
    assert isinstance(held, HeldClaim)
    await claims(state, ME).release(held)


async def test_a_claim_taken_meanwhile_is_lost_and_not_deleted() -> None:
    state = KubeState()
    mine = claims(state, ME, duration=0.3)
    held = await mine.take("apps", "web")
    assert isinstance(held, HeldClaim)
    lease = state.leases["apps", "helmrelease.web"]
    state.leases["apps", "helmrelease.web"] = type(lease)(
        lease.name, lease.namespace, PEER, dt.datetime.now(dt.UTC), 30.0, "99"
    )
    for _ in range(100):
        if held.lost is not None:
            break
        await asyncio.sleep(0.01)
    assert held.lost == "another replica took it"
    await mine.release(held)
    assert state.leases["apps", "helmrelease.web"].holder == PEER, "the peer's claim stays"


async def test_a_claim_that_cannot_be_renewed_in_time_is_lost() -> None:
    state = KubeState()
    mine = claims(state, ME, duration=0.3)
    held = await mine.take("apps", "web")
    assert isinstance(held, HeldClaim)
    state.leases_unavailable = True
    for _ in range(200):
        if held.lost is not None:
            break
        await asyncio.sleep(0.01)
    assert held.lost is not None
    assert "could not be renewed in time" in held.lost
    await mine.release(held)


# --- a pass with claims ----------------------------------------------------------------------------------------


async def test_a_pass_waits_for_a_peer_running_helm_on_the_release_and_goes_on_once_it_let_go(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path, ReleaseIndex, {"claim_identity": ME})
    harness.apply()
    await harness.reconcile()
    assert ("apps", f"helmrelease.{RELEASE}") not in harness.kube.state.leases, "released after the pass"
    # A peer (paused by peering) runs an upgrade: the release is pending-upgrade and the peer holds the claim.
    ours = owner_labels(NAMESPACE, NAME)
    harness.helm.revisions(NAMESPACE, RELEASE).append(StoredRevision(2, HelmStatus.PENDING_UPGRADE, ours))
    peer = claims(harness.kube.state, PEER)
    held = await peer.take(NAMESPACE, RELEASE)
    assert isinstance(held, HeldClaim)
    harness.apply({"replicas": 4})
    operations = harness.helm.operations()
    waited = await harness.reconcile()
    assert waited.error is not None
    assert waited.error.reason == Reason.OPERATION_IN_PROGRESS
    assert harness.helm.operations() == operations, "no helm while the peer holds the release"
    # The peer's upgrade finished (deployed), and it let the claim go.
    harness.helm.revisions(NAMESPACE, RELEASE)[-1] = StoredRevision(2, HelmStatus.DEPLOYED, ours)
    await peer.release(held)
    assert await harness.reconcile() == type(waited)([Reason.UPGRADE_SUCCEEDED])
    assert harness.helm.operations() == [*operations, "upgrade"], "no unlock, no rollback"


async def test_a_claimed_pass_decides_on_the_release_as_stored_not_on_a_lagging_index(tmp_path: Path) -> None:
    harness = Harness(tmp_path, ReleaseIndex, {"claim_identity": ME})
    harness.apply()
    await harness.reconcile()
    ours = owner_labels(NAMESPACE, NAME)
    harness.helm.revisions(NAMESPACE, RELEASE).append(StoredRevision(2, HelmStatus.PENDING_UPGRADE, ours))
    harness.index.sync()  # the index saw revision 2 pending, then its watch was paused
    harness.helm.revisions(NAMESPACE, RELEASE)[-1] = StoredRevision(2, HelmStatus.DEPLOYED, ours)
    harness.apply({"replicas": 4})
    body = await harness.kube.get_helmrelease(NAMESPACE, NAME)
    await harness.reconciler.reconcile(body, harness.index)
    assert "rollback" not in harness.helm.operations(), "a finished revision was taken for a stale lock"
    assert harness.helm.operations()[-1] == "upgrade"


async def test_with_peers_the_first_pass_of_an_object_reads_it_a_peer_may_have_written_since(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path, ReleaseIndex, {"claim_identity": ME})
    harness.apply()
    before = harness.body()  # as this replica's watch delivered it, before the peer's install
    await harness.reconcile()  # the peer's pass (same cluster), recorded in the status
    status, operations = harness.status, harness.helm.operations()
    harness.restart()  # this replica, which has not passed the object yet
    assert await harness.reconcile(body=before) == Pass([]), "nothing recorded again"
    assert (harness.status, harness.helm.operations()) == (status, operations)


async def test_an_api_error_after_a_successful_install_still_records_it(tmp_path: Path) -> None:
    """The install's outcome waits for the pass's next write; a step after it that fails leaves it written."""
    harness = Harness(tmp_path, ReleaseIndex, {"claim_identity": ME})
    harness.apply()
    harness.kube.state.storage_lists_left = 1  # the claimed pass's read before helm; the one after fails
    failed = await harness.reconcile()
    assert failed.error is not None
    assert failed.error.reason == "ApiUnavailable"
    assert failed.events == [Reason.INSTALL_SUCCEEDED]
    assert harness.condition(ConditionType.RELEASED) == (ConditionStatus.TRUE, Reason.INSTALL_SUCCEEDED)
    assert harness.status.helm_revision == 1
    harness.kube.state.storage_lists_left = None
    assert await harness.reconcile() == Pass([])
    assert harness.helm.operations() == ["install"], "recorded, so not installed again"
    assert harness.condition(ConditionType.READY) == (ConditionStatus.TRUE, Reason.INSTALL_SUCCEEDED)
