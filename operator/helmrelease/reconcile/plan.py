"""The next action for a HelmRelease: one pure function from what we want, what Helm has and what we remember.

Like fluxcd/helm-controller's atomic release loop, the caller runs the chosen action, records its outcome in
the status (``reconcile.conditions``), observes again and asks again, until the answer is ``nothing``,
``wait-retry`` or ``refuse``. One call never returns two actions, and nothing here does I/O. Two Helm operations
never run on one release at once: the caller holds a lock per release, and with peering (several replicas) a
claim across replicas (`claim_step`) on the release each action runs on (`claimed_release`), so no row waits for
one of ours.

State machine, checked in this order (the first matching row decides)::

    another replica holds a live claim on the release the
        next action runs on (`claimed_release`: the old one
        for uninstall-previous) ........................... wait-retry  OperationInProgress (until it ends)
    the release name or target namespace changed and the
        release recorded under the old ones is ours ...... uninstall-previous  ReleaseRenamed (deleting too)
    object deleting, release absent or uninstalled ........... nothing     ReleaseAbsent
    object deleting, release not ours ........................ nothing     NotOurs (never uninstall theirs)
    object deleting, release ours ............................ uninstall   Deleting
    release absent or uninstalled, a force requested ......... install     ForceRequested
    release absent or uninstalled, our install/upgrade of
        this config failed on the cluster's side ......... install     ClusterRetry, once the retry is due
                                                           wait-retry  InstallFailed / UpgradeFailed until then
    release absent or uninstalled, our install/upgrade of
        this config failed ............................... wait-retry  InstallFailed / UpgradeFailed
    release absent or uninstalled ............................ install     ReleaseAbsent
    release marked for another HelmRelease ................... refuse      OwnedByOther
    release unmarked, our adoption of this config failed
        on the cluster's side ............................ adopt       ClusterRetry, once the retry is due
    release unmarked, our adoption of this config failed ..... wait-retry  UpgradeFailed
    release unmarked, adoption allowed / not allowed ......... adopt / refuse  UnmanagedRelease
    release pending-* or uninstalling (and not ours running) . unlock      StaleLock
    a force requested (reconcile.fluxcd.io/forceAt) .......... upgrade     ForceRequested
    the latest revision is the finished deploy of the pending
        force, from this config, not recorded yet ........ record      AlreadyApplied
    --- "this config" = same digest and same generation as our last attempt ---
    our install/upgrade/test/rollback of this config failed
        on the cluster's side ............................ the same again (an install whose release now exists:
                                                           upgrade)  ClusterRetry, once the retry is due;
                                                           wait-retry  <its failure reason> until then
    our upgrade or test of this config failed, rollback.enable,
        and the release moved on to a deployed revision
        not made from it (our rollback, unrecorded) ...... record      AlreadyApplied (as the rollback)
    our upgrade of this config failed, release failed,
        rollback.enable .................................. rollback    UpgradeFailed
    our install/upgrade of this config failed ................ wait-retry  InstallFailed / UpgradeFailed
    our test of this config failed, not ignored, rollback.enable
        and a previous revision to roll back to .......... rollback    TestFailed
    our test of this config failed, not ignored .............. wait-retry  TestFailed
    our rollback for this config failed ...................... wait-retry  RollbackFailed
    we rolled back this config, rollback.retry and retries
        left ............................................. upgrade     RetryAfterRollback
    we rolled back this config ............................... wait-retry  RetriesExhausted / WaitingForChange
    --- no failure holds us back: compare with the desired state ---
    digest differs from the last applied one, but the release
        is ours, deployed and labelled with the desired
        digest (we were stopped before recording it) ..... record      AlreadyApplied
    digest differs from the last applied one ................. upgrade     ConfigChanged, or SpecChanged
                                                           if only the generation moved
    release failed/superseded/unknown (not by a recorded
        failure of this config) .......................... upgrade     ReleaseFailed
    release revision is not the one we made .................. upgrade     ReleaseChangedOutside
    drift found in the cluster ............................... upgrade     DriftDetected
    test.enable and this revision untested (or its test
        failed before the object changed) ................ test        TestPending
    test failed and test.ignoreFailures ...................... nothing     TestFailureIgnored
    otherwise ................................................ nothing     InSync

A force (``forced``) is one install or upgrade whatever the failures recorded: the caller asks for it until a
deploy of the pass has run, and never for a release that is not ours, is locked or is being deleted. Suspension
(``spec.suspend``) is decided before any of this, by the caller: a suspended HelmRelease is not planned for.

Consequences worth stating: an unchanged digest on a deployed release with no drift never upgrades; a failing
configuration is not retried in a loop (drift and resyncs included) until the object changes (its generation
moves) or a rollback retry is due; a release that is not ours is never changed.

Retries: a rollback increments ``rollbackCount`` (reset by a successful install/upgrade or a new digest); the
upgrade is retried while ``rollbackCount <= maxRetries``, i.e. at most ``maxRetries`` retries after the first
failure, and ``maxRetries: 0`` means no limit, as in Flux v1.

Cluster-side failures (a quota exceeded, the Service IP range full, a webhook or the API server down: the helm
adapter classifies them) are not the configuration's fault, so they neither wait for a change nor count as the
failure a rollback remedies: the same action is tried again after a capped exponential backoff
(``cluster_retry_delay``: 10 s, doubling, at most 10 min), recorded as ``status.retryAt`` and
``status.clusterFailures`` and reset by a success or a change of the HelmRelease. Until the retry is due the plan
waits with ``retry_after``: the pass is not settled and runs again by itself when the retry is due.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from helmrelease.api.constants import DEFAULT_MAX_RETRIES, Action, HelmStatus, Reason
from helmrelease.api.ownership import Ownership
from helmrelease.api.resource import HelmRelease
from helmrelease.api.status import HelmReleaseStatus
from helmrelease.reconcile.actions import terms
from helmrelease.reconcile.digest import short_digest
from helmrelease.reconcile.releases import digest_label

_UNCHANGED = "not retrying the same chart and values until the HelmRelease changes"
#: The backoff of retries after cluster-side failures, in seconds: the first retry, and the most it grows to.
CLUSTER_RETRY_FIRST: Final = 10.0
CLUSTER_RETRY_MAX: Final = 600.0


def claim_lease_name(release_name: str) -> str:
    """The Lease, in the release's namespace, that holds the claim on Helm release `release_name` (at most 53
    characters, so the name stays a valid object name)."""
    return f"helmrelease.{release_name}"


def cluster_retry_delay(failures: int) -> float:
    """Seconds before the retry after the `failures`-th consecutive cluster-side failure: 10, 20, 40 ... 600."""
    exponent = min(max(failures, 1) - 1, 16)
    return min(CLUSTER_RETRY_FIRST * (1 << exponent), CLUSTER_RETRY_MAX)


@dataclass(frozen=True)
class Desired:
    """What the HelmRelease asks for, reduced to what the decisions (and the status builder) need."""

    release_name: str
    namespace: str
    generation: int
    digest: str
    #: Chart version or git commit, for status.revision and messages.
    chart_revision: str
    rollback: bool = False
    retry: bool = False
    max_retries: int = DEFAULT_MAX_RETRIES
    test: bool = False
    ignore_test_failures: bool = False
    #: Whether a release with no antecedent annotation may be taken over (Flux v1 did).
    adopt_unmarked: bool = True

    @classmethod
    def of(
        cls, release: HelmRelease, *, digest: str, chart_revision: str, adopt_unmarked: bool = True
    ) -> Desired:
        spec = release.spec
        return cls(
            release_name=release.release_name,
            namespace=release.target_namespace,
            generation=release.metadata.generation,
            digest=digest,
            chart_revision=chart_revision,
            rollback=spec.rollback.enable,
            retry=spec.rollback.retry,
            max_retries=spec.rollback.max_retries,
            test=spec.test.enable,
            ignore_test_failures=spec.test.ignore_failures,
            adopt_unmarked=adopt_unmarked,
        )

    @property
    def release(self) -> str:
        return f"{self.namespace}/{self.release_name}"

    def may_retry(self, rollback_count: int) -> bool:
        return self.retry and (self.max_retries == 0 or rollback_count <= self.max_retries)


@dataclass(frozen=True)
class ObservedRelease:
    """The latest revision of the Helm release as Helm reports it."""

    revision: int
    status: HelmStatus
    ownership: Ownership
    #: The antecedent annotation found, for telling a person who owns a release that is not ours.
    owner: str | None = None
    #: The revision's digest label (`releases.digest_label`): the chart and values we made it from.
    digest_label: str | None = None
    #: The revision's force label (`releases.force_label`): the force request it was deployed for, if any.
    force_label: str | None = None


@dataclass(frozen=True)
class Recorded:
    """What our status remembers from earlier passes."""

    applied_digest: str | None = None
    attempted_digest: str | None = None
    attempted_generation: int | None = None
    helm_revision: int | None = None
    rollback_count: int = 0
    last_action: Action | None = None
    last_action_failed: bool = False
    #: The release we last acted on or decided about (status.releaseNamespace, status.releaseName).
    release_namespace: str | None = None
    release_name: str | None = None
    #: When the retry after a cluster-side failure of the last action is due; None: no such failure.
    retry_at: datetime | None = None
    #: Consecutive cluster-side failures of this configuration.
    cluster_failures: int = 0

    @classmethod
    def from_status(cls, status: HelmReleaseStatus) -> Recorded:
        return cls(
            applied_digest=status.last_applied_digest,
            attempted_digest=status.last_attempted_digest,
            attempted_generation=status.last_attempted_generation,
            helm_revision=status.helm_revision,
            rollback_count=status.rollback_count,
            last_action=status.last_action,
            last_action_failed=status.failures > 0,
            release_namespace=status.release_namespace,
            release_name=status.release_name,
            retry_at=status.retry_at,
            cluster_failures=status.cluster_failures,
        )

    def attempted(self, desired: Desired) -> bool:
        """Whether our last attempt was at exactly this configuration (same digest, same generation)."""
        return (self.attempted_digest, self.attempted_generation) == (desired.digest, desired.generation)

    def previous_release(self, desired: Desired) -> tuple[str, str] | None:
        """(namespace, name) of the release recorded before spec.releaseName or targetNamespace changed; None
        when they did not. A status written before the namespace was recorded counts as the desired namespace."""
        if not self.release_name:
            return None
        previous = (self.release_namespace or desired.namespace, self.release_name)
        return None if previous == (desired.namespace, desired.release_name) else previous


#: Seconds a claim on a release lasts unless renewed: under kopf's peering lifetime (60 s), so a replica killed
#: mid-operation has lost its claims by the time its standby resumes; renewed every third of it.
CLAIM_DURATION: Final = 30.0
#: Seconds between two looks at a claim held elsewhere, at most (each is one GET).
CLAIM_POLL_MAX: Final = 10.0


@dataclass(frozen=True)
class Claim:
    """A replica's claim on a release (a Lease), as read: who holds it and until when, without renewal."""

    holder: str | None
    renewed: datetime | None
    duration: float = CLAIM_DURATION
    #: The Helm release (namespace, name) it is a claim on; None: the desired one.
    release: tuple[str, str] | None = None

    def expires(self) -> datetime | None:
        return None if self.renewed is None else self.renewed + timedelta(seconds=self.duration)

    def live(self, now: datetime) -> bool:
        """Held by someone whose last renewal has not expired. An unreadable time counts as expired."""
        expires = self.expires()
        return bool(self.holder) and expires is not None and now < expires


class ClaimStep(StrEnum):
    """What a replica about to run Helm on a release does with its claim."""

    #: Nobody holds it, or its holder stopped renewing it: take it (one write, which fails if another took it first).
    TAKE = "take"
    #: It is ours already (renewed by our own running pass, or left by an earlier one of this process).
    KEEP = "keep"
    #: Another replica holds it and renews it: its pass runs Helm on the release; wait.
    WAIT = "wait"


def claim_step(claim: Claim | None, me: str, now: datetime) -> ClaimStep:
    """Whether replica `me` may run Helm on a release whose claim reads `claim` (None: no claim exists).

    A pending release under a live claim of another replica is that replica's operation in progress, not a stale
    lock: kopf's peering pauses a replica's watches when one of higher priority joins, not its running handlers.
    Wall clocks are compared, as kopf's peering itself does with its peers' keep-alives.
    """
    if claim is None or not claim.holder:
        return ClaimStep.TAKE
    if claim.holder == me:
        return ClaimStep.KEEP
    return ClaimStep.WAIT if claim.live(now) else ClaimStep.TAKE


def claimed_release(action: Action, desired: Desired, recorded: Recorded) -> tuple[str, str]:
    """(namespace, name) of the Helm release `action` runs on, so the claim on that one is held before it runs:
    for `uninstall-previous`, the release recorded under the old releaseName or targetNamespace; for every other
    action, the desired one. A rename's pass may so need two claims, the old release's and then the new one's."""
    if action is Action.UNINSTALL_PREVIOUS:
        old = recorded.previous_release(desired)
        if old is not None:
            return old
    return (desired.namespace, desired.release_name)


def same_wait(told: Claim | None, claim: Claim) -> bool:
    """Whether waiting for `claim` is the wait already told of (`told`, None: none was): the same holder on the
    same release. Its renewals move its expiry, and so the message, but not the wait; another holder, or the claim
    on the other release of a rename, is a new one."""
    return told is not None and (told.holder, told.release) == (claim.holder, claim.release)


def claim_wait(claim: Claim, now: datetime) -> float:
    """Seconds before looking at a claim held elsewhere again: when it would expire, polled at most every
    `CLAIM_POLL_MAX` (its holder usually lets it go well before), at least a second."""
    expires = claim.expires()
    left = (expires - now).total_seconds() if expires is not None else 0.0
    return float(max(1, min(math.ceil(left), CLAIM_POLL_MAX)))


@dataclass(frozen=True)
class Plan:
    action: Action
    reason: Reason
    message: str
    #: Seconds after which the pass should run again by itself (a planned retry, a running operation); None for
    #: an action to run now or a final outcome.
    retry_after: float | None = None

    @property
    def settled(self) -> bool:
        """The loop stops here with a final outcome, so observedGeneration may be recorded."""
        return not self.action.runs_helm and self.action is not Action.RECORD and self.retry_after is None


def next_action(
    desired: Desired,
    release: ObservedRelease | None,
    recorded: Recorded,
    *,
    now: datetime,
    previous: ObservedRelease | None = None,
    drifted: bool = False,
    deleting: bool = False,
    forced: bool = False,
    force_applied: bool = False,
    claimed_by: Claim | None = None,
) -> Plan:
    """The single next step; see the module docstring for the table this implements.

    `previous` is the release at `recorded.previous_release(desired)`, if there is one and it exists; `forced`:
    a force request (reconcile.fluxcd.io/forceAt) still to carry out; `force_applied`: the release's latest
    revision is a finished deploy of the pending force request (the operator was killed before recording it);
    `claimed_by`: another replica's live claim on the release the next action runs on (`claim_step` said wait;
    `Claim.release` names which, `claimed_release` decides it).
    """
    name = desired.release
    if claimed_by is not None and claimed_by.holder:
        return _claimed(desired, claimed_by, release, previous, now)
    renamed = _previous_release(desired, recorded, previous)
    if renamed is not None:
        return renamed
    absent = release is None or release.status is HelmStatus.UNINSTALLED
    if deleting:
        return _on_delete(desired, release, absent)
    if absent:
        if forced:
            return Plan(
                Action.INSTALL,
                Reason.FORCE_REQUESTED,
                f"A force was requested (reconcile.fluxcd.io/forceAt); installing chart {desired.chart_revision} "
                f"as release {name}",
            )
        return _on_absent(desired, recorded, now)
    assert release is not None  # for mypy: absent covers None
    if release.ownership is Ownership.OTHER:
        return Plan(
            Action.REFUSE,
            Reason.OWNED_BY_OTHER,
            f"Helm release {name} belongs to {release.owner}; it is left alone. Set a different releaseName "
            "or targetNamespace, or delete the other HelmRelease",
        )
    if release.ownership is Ownership.UNMARKED:
        if desired.adopt_unmarked:
            return _adopt(desired, release, recorded, now)
        return Plan(
            Action.REFUSE,
            Reason.UNMANAGED_RELEASE,
            f"Helm release {name} was not made by a HelmRelease and adoption is disabled; delete it or set a "
            "different releaseName",
        )
    if release.status.is_pending or release.status is HelmStatus.UNINSTALLING:
        return Plan(
            Action.UNLOCK,
            Reason.STALE_LOCK,
            f"Helm release {name} is stuck in {release.status} by an operation that is no longer running; "
            "recovering it",
        )
    if forced:
        return Plan(
            Action.UPGRADE,
            Reason.FORCE_REQUESTED,
            f"A force was requested (reconcile.fluxcd.io/forceAt); upgrading release {name} to chart "
            f"{desired.chart_revision} whatever failed before",
        )
    if (
        force_applied
        and release.status is HelmStatus.DEPLOYED
        and release.revision != recorded.helm_revision
        and release.digest_label == digest_label(desired.digest)
    ):
        return Plan(
            Action.RECORD,
            Reason.ALREADY_APPLIED,
            f"Helm release {name} revision {release.revision} is the deploy forced by reconcile.fluxcd.io/forceAt, "
            "but the operator stopped before recording it; recording it without running Helm again",
        )
    if recorded.attempted(desired):
        blocked = _after_failure(desired, release, recorded, now)
        if blocked is not None:
            return blocked
    return _compare(desired, release, recorded, drifted=drifted)


def _claimed(
    desired: Desired,
    claim: Claim,
    release: ObservedRelease | None,
    previous: ObservedRelease | None,
    now: datetime,
) -> Plan:
    """Wait for the replica whose claim is on the release the next action runs on (`claim.release`: the old one of
    a rename, or the desired one)."""
    namespace, release_name = claim.release or (desired.namespace, desired.release_name)
    on = previous if (namespace, release_name) != (desired.namespace, desired.release_name) else release
    until = claim.expires()
    when = (
        ""
        if until is None
        else f" (its claim runs to {until.isoformat().replace('+00:00', 'Z')} unless renewed)"
    )
    state = f" ({on.status}, revision {on.revision})" if on is not None else ""
    return Plan(
        Action.WAIT_RETRY,
        Reason.OPERATION_IN_PROGRESS,
        f"Another operator replica, {claim.holder}, is running Helm on release {namespace}/{release_name}{state}"
        f"{when}; waiting for it to finish. If that replica is gone, its claim (Lease "
        f"{claim_lease_name(release_name)} in namespace {namespace}) expires by itself",
        retry_after=claim_wait(claim, now),
    )


def _adopt(desired: Desired, release: ObservedRelease, recorded: Recorded, now: datetime) -> Plan:
    """Adopt a release found without an owner, unless adopting exactly this configuration failed already: a
    failure before Helm wrote a revision (a template that does not render) leaves the release unowned, and adopting
    again would fail the same way on every pass. A cluster-side failure is retried after its backoff, as one."""
    name = desired.release
    # An adoption is recorded as the upgrade it is (actions.TERMS), so a failed one reads as a failed upgrade.
    if recorded.attempted(desired) and recorded.last_action_failed and recorded.last_action is Action.UPGRADE:
        retry = _cluster_retry(desired, release, recorded, now)
        if retry is None:
            # The reason of the upgrade it is recorded as, so the condition reads the same as after the attempt.
            return Plan(
                Action.WAIT_RETRY, Reason.UPGRADE_FAILED, f"Adopting release {name} failed; {_UNCHANGED}"
            )
        return retry if retry.action is Action.WAIT_RETRY else replace(retry, action=Action.ADOPT)
    return Plan(
        Action.ADOPT,
        Reason.UNMANAGED_RELEASE,
        f"Helm release {name} exists without an owner; adopting it for this HelmRelease",
    )


def _previous_release(desired: Desired, recorded: Recorded, previous: ObservedRelease | None) -> Plan | None:
    """Uninstall the release we made under the old name or namespace first (as Flux v2 does): left alone it would
    be forgotten, and installing the new one beside it could clash over objects with fixed names."""
    old = recorded.previous_release(desired)
    if old is None or previous is None or previous.status is HelmStatus.UNINSTALLED:
        return None
    if previous.ownership is not Ownership.OURS:
        return (
            None  # someone else's (or nobody's): never touched, and forgotten once the new name is recorded
        )
    return Plan(
        Action.UNINSTALL_PREVIOUS,
        Reason.RELEASE_RENAMED,
        f"The release of this HelmRelease moved from {old[0]}/{old[1]} to {desired.release} (spec.releaseName "
        f"or spec.targetNamespace changed); uninstalling {old[0]}/{old[1]}, which this HelmRelease made",
    )


def _on_delete(desired: Desired, release: ObservedRelease | None, absent: bool) -> Plan:
    name = desired.release
    if absent:
        return Plan(
            Action.NOTHING, Reason.RELEASE_ABSENT, f"Helm release {name} does not exist; nothing to uninstall"
        )
    assert release is not None  # for mypy: absent covers None
    if release.ownership is not Ownership.OURS:
        return Plan(
            Action.NOTHING,
            Reason.NOT_OURS,
            f"Helm release {name} was not made by this HelmRelease; leaving it in place",
        )
    return Plan(
        Action.UNINSTALL, Reason.DELETING, f"HelmRelease is being deleted; uninstalling release {name}"
    )


def _on_absent(desired: Desired, recorded: Recorded, now: datetime) -> Plan:
    failed = _cluster_retry(desired, None, recorded, now) or _failed_deploy(desired, recorded)
    if failed is not None:
        return failed
    return Plan(
        Action.INSTALL,
        Reason.RELEASE_ABSENT,
        f"Helm release {desired.release} does not exist; installing chart {desired.chart_revision}",
    )


def _failed_on_cluster(desired: Desired, recorded: Recorded) -> bool:
    """Our last install, upgrade, test or rollback of this configuration failed because of the cluster."""
    action = recorded.last_action
    return (
        recorded.attempted(desired)
        and recorded.last_action_failed
        and recorded.retry_at is not None
        and action is not None
        and action.runs_helm
        and terms(action).cluster_retried
    )


def _cluster_retry(
    desired: Desired, release: ObservedRelease | None, recorded: Recorded, now: datetime
) -> Plan | None:
    """After a cluster-side failure of this configuration: wait for the planned retry, then try the same again."""
    action = recorded.last_action
    if not _failed_on_cluster(desired, recorded) or action is None or recorded.retry_at is None:
        return None
    if release is None:
        again = Action.INSTALL if action in (Action.INSTALL, Action.UPGRADE) else None
    elif action in (Action.INSTALL, Action.UPGRADE):
        again = Action.UPGRADE
    elif action is Action.TEST:
        again = Action.TEST if desired.test else None
    else:
        again = Action.ROLLBACK if desired.rollback else None
    if again is None:
        return None
    verb, reason = terms(action).verb, terms(action).failed
    name, attempt = desired.release, recorded.cluster_failures + 1
    when = recorded.retry_at.isoformat().replace("+00:00", "Z")
    if now < recorded.retry_at:
        wait = max(1.0, math.ceil((recorded.retry_at - now).total_seconds()))
        return Plan(
            Action.WAIT_RETRY,
            reason,
            f"{verb} release {name} failed because of the cluster, not the configuration; trying again at "
            f"{when} (attempt {attempt})",
            retry_after=wait,
        )
    return Plan(
        again,
        Reason.CLUSTER_RETRY,
        f"{verb} release {name} failed because of the cluster, not the configuration; trying again "
        f"(attempt {attempt}, planned for {when})",
    )


def _failed_deploy(desired: Desired, recorded: Recorded) -> Plan | None:
    """Wait when our install or upgrade of exactly this configuration failed: Helm would fail the same way."""
    if not (recorded.attempted(desired) and recorded.last_action_failed):
        return None
    name = desired.release
    if recorded.last_action is Action.INSTALL:
        return Plan(
            Action.WAIT_RETRY, Reason.INSTALL_FAILED, f"Installing release {name} failed; {_UNCHANGED}"
        )
    if recorded.last_action is Action.UPGRADE:
        return Plan(
            Action.WAIT_RETRY, Reason.UPGRADE_FAILED, f"Upgrading release {name} failed; {_UNCHANGED}"
        )
    return None


def _after_failure(
    desired: Desired, release: ObservedRelease, recorded: Recorded, now: datetime
) -> Plan | None:
    """What a failed or rolled-back attempt at this exact configuration leaves to do; None if nothing."""
    if _failed_on_cluster(desired, recorded):
        # Not the configuration's failure: retry it, or (a test or rollback no longer asked for) forget it.
        return _cluster_retry(desired, release, recorded, now)
    name = desired.release
    action, failed = recorded.last_action, recorded.last_action_failed
    if rolled_back_unrecorded(desired, release, recorded):
        return Plan(
            Action.RECORD,
            Reason.ALREADY_APPLIED,
            f"Helm release {name} revision {release.revision} is the rollback after the failed "
            f"{'test' if action is Action.TEST else 'upgrade'}, but the operator stopped before recording it; "
            "recording it without rolling back again",
        )
    if failed and action is Action.UPGRADE and desired.rollback and release.status is HelmStatus.FAILED:
        return Plan(
            Action.ROLLBACK,
            Reason.UPGRADE_FAILED,
            f"Upgrading release {name} failed; rolling back to the previous revision",
        )
    deploy_failed = _failed_deploy(desired, recorded)
    if deploy_failed is not None:
        return deploy_failed
    if failed and action is Action.TEST and not desired.ignore_test_failures:
        if desired.rollback and release.revision > 1:
            return Plan(
                Action.ROLLBACK,
                Reason.TEST_FAILED,
                f"Tests of release {name} revision {release.revision} failed; rolling back to the previous "
                "revision",
            )
        return Plan(
            Action.WAIT_RETRY,
            Reason.TEST_FAILED,
            f"Tests of release {name} revision {release.revision} failed; {_UNCHANGED}",
        )
    if failed and action is Action.ROLLBACK:
        return Plan(
            Action.WAIT_RETRY,
            Reason.ROLLBACK_FAILED,
            f"Rolling back release {name} failed; it needs a person: inspect `helm history`, then change the "
            "HelmRelease to try again",
        )
    if not failed and action is Action.ROLLBACK:
        return _after_rollback(desired, release, recorded)
    return None


def rolled_back_unrecorded(desired: Desired, release: ObservedRelease, recorded: Recorded) -> bool:
    """Our upgrade or test of this configuration failed, and the release has since moved past the revision we
    recorded to a deployed one not made from this configuration: the rollback we ran, which the operator did not
    live to record (killed after `helm rollback` returned). Rolling back again would go back to the failed one."""
    return (
        recorded.last_action_failed
        and recorded.last_action in (Action.UPGRADE, Action.TEST)
        and desired.rollback
        and recorded.helm_revision is not None
        and release.revision > recorded.helm_revision
        and release.status is HelmStatus.DEPLOYED
        and release.digest_label != digest_label(desired.digest)
    )


def _after_rollback(desired: Desired, release: ObservedRelease, recorded: Recorded) -> Plan:
    name = desired.release
    count = recorded.rollback_count
    if desired.may_retry(count):
        limit = "no limit" if desired.max_retries == 0 else f"at most {desired.max_retries}"
        return Plan(
            Action.UPGRADE,
            Reason.RETRY_AFTER_ROLLBACK,
            f"Release {name} was rolled back; retrying the upgrade (retry {count} of {limit})",
        )
    running = f"revision {release.revision} (the rollback) runs"
    if desired.retry:
        return Plan(
            Action.WAIT_RETRY,
            Reason.RETRIES_EXHAUSTED,
            f"Release {name} was rolled back {count} times and rollback.maxRetries ({desired.max_retries}) is "
            f"used up, so no retry is coming; {running}. Fix the chart or values (the UpgradeFailed or "
            "TestFailed Event says what failed), or edit the HelmRelease to try the same again",
        )
    return Plan(
        Action.WAIT_RETRY,
        Reason.WAITING_FOR_CHANGE,
        f"Release {name} was rolled back after a failure and rollback.retry is off, so no retry is coming; "
        f"{running}. Fix the chart or values, or edit the HelmRelease to try the same again",
    )


def _compare(desired: Desired, release: ObservedRelease, recorded: Recorded, *, drifted: bool) -> Plan:
    """No failure holds us back: upgrade, test or rest, by comparing the release with the desired state."""
    name = desired.release
    if desired.digest != recorded.applied_digest:
        if release.status is HelmStatus.DEPLOYED and release.digest_label == digest_label(desired.digest):
            return Plan(
                Action.RECORD,
                Reason.ALREADY_APPLIED,
                f"Helm release {name} revision {release.revision} was made from these chart and values "
                f"({short_digest(desired.digest)}), but the operator stopped before recording it; recording it "
                "without running Helm again",
            )
        if (
            desired.digest == recorded.attempted_digest
            and desired.generation != recorded.attempted_generation
        ):
            return Plan(
                Action.UPGRADE,
                Reason.SPEC_CHANGED,
                f"The HelmRelease changed since the last attempt at these chart and values did not succeed; "
                f"upgrading release {name} again",
            )
        return Plan(
            Action.UPGRADE,
            Reason.CONFIG_CHANGED,
            f"Chart or values changed (applied {short_digest(recorded.applied_digest)}, desired "
            f"{short_digest(desired.digest)}); upgrading release {name} to chart {desired.chart_revision}",
        )
    if release.status is not HelmStatus.DEPLOYED:
        return Plan(
            Action.UPGRADE,
            Reason.RELEASE_FAILED,
            f"Helm release {name} is {release.status}; upgrading it to restore the desired state",
        )
    if release.revision != recorded.helm_revision:
        return Plan(
            Action.UPGRADE,
            Reason.RELEASE_CHANGED_OUTSIDE,
            f"Helm release {name} is at revision {release.revision}, which this HelmRelease did not make "
            f"(last made: {recorded.helm_revision}); upgrading to restore the desired state",
        )
    if drifted:
        return Plan(
            Action.UPGRADE,
            Reason.DRIFT_DETECTED,
            f"Resources of release {name} differ from the release manifest; upgrading to correct the drift",
        )
    tested = recorded.last_action is Action.TEST
    if desired.test and (not tested or (recorded.last_action_failed and not desired.ignore_test_failures)):
        return Plan(Action.TEST, Reason.TEST_PENDING, f"Testing release {name} revision {release.revision}")
    if desired.test and tested and recorded.last_action_failed:
        return Plan(
            Action.NOTHING,
            Reason.TEST_FAILURE_IGNORED,
            f"Release {name} revision {release.revision} is deployed; its tests failed and "
            "test.ignoreFailures is set",
        )
    return Plan(Action.NOTHING, Reason.IN_SYNC, f"Release {name} revision {release.revision} is up to date")
