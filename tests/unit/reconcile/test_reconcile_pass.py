"""The production reconcile pass (`Reconciler.reconcile`), driven against in-memory Helm and Kubernetes.

Each test applies a HelmRelease, runs passes as kopf would (a handler call, a retry, a resync) and checks what the
user sees (the Event reasons of each pass, the status, the error that asks kopf for a retry) and what Helm holds.
This is where the loop's rules show: no action twice in one pass (a rollback's retry is the next pass's), no hot
loop on a failing configuration, retries at most `maxRetries`, a cluster's failure retried by itself with backoff,
a deploy Helm finished before a crash recorded rather than repeated.

Most tests run twice: with the release index behind the pass (it shows Helm's storage as the pass began, so the
pass decides on what its own actions reported) and with an index that has always caught up.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.unit.reconcile.fakes import (
    Clock,
    FakeCharts,
    FakeHelm,
    FakeKube,
    LiveIndex,
    NoUrls,
    OperatorKilled,
    ReleaseIndex,
    StoredRevision,
)

from helmrelease.adapters.helm import ChartNotFound, HelmError, RepositoryUnreachable
from helmrelease.api.constants import ConditionStatus, ConditionType, HelmStatus, Reason
from helmrelease.api.ownership import ANTECEDENT_ANNOTATION
from helmrelease.api.status import HelmReleaseStatus
from helmrelease.reconcile.drift import parse_manifest
from helmrelease.reconcile.errors import ReconcileError
from helmrelease.reconcile.releases import owner_labels
from helmrelease.reconcile.service import MAX_STEPS, PASSES_PER_WORKER, RETRY_SOON, Reconciler
from helmrelease.reconcile.settings import OperatorSettings

NAME, NAMESPACE, RELEASE = "web", "apps", "apps-web"
BAD = {"replicas": -1}
GOOD = {"replicas": 2}
TESTS_FAIL = {"replicas": 3, "probe": "broken"}
MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  greeting: hello
"""


def yaml_object(manifest: str) -> dict[str, Any]:
    """A live object exactly as the manifest declares it."""
    [obj] = [o.body for o in parse_manifest(manifest, NAMESPACE)]
    return copy.deepcopy(dict(obj))


def rejects(values: Mapping[str, Any]) -> bool:
    return bool(values.get("replicas", 1) < 0)


def probe_is_broken(values: Mapping[str, Any]) -> bool:
    return values.get("probe") == "broken"


@dataclass(frozen=True)
class Pass:
    """What one pass showed: the reasons of its Events, in order, and the error it raised for kopf (if any)."""

    events: list[str]
    error: ReconcileError | None = None

    @property
    def retry_after(self) -> float | None:
        return self.error.retry_after if self.error is not None else None


@dataclass
class Harness:
    tmp: Path
    index_type: type[ReleaseIndex] = ReleaseIndex
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.helm = FakeHelm()
        self.helm.state.rejects = rejects
        self.helm.state.tests_fail = probe_is_broken
        self.kube = FakeKube(self.helm)
        self.index = self.index_type(self.helm)
        self.clock = Clock()
        (self.tmp / "chart").mkdir(exist_ok=True)
        self.charts = FakeCharts(self.tmp / "chart")
        self.reconciler = Reconciler(
            kube=self.kube,
            helm=self.helm,
            charts=self.charts,
            urls=NoUrls(),
            settings=OperatorSettings(state_dir=self.tmp / "state", **self.settings),
            clock=self.clock,
        )

    def restart(self) -> Reconciler:
        """A new operator process over the same cluster (nothing remembered in memory); returns the old one."""
        old = self.reconciler
        self.reconciler = Reconciler(
            kube=self.kube,
            helm=self.helm,
            charts=FakeCharts(self.tmp / "chart"),
            urls=NoUrls(),
            settings=OperatorSettings(state_dir=self.tmp / "state", **self.settings),
            clock=self.clock,
        )
        return old

    def apply(self, values: Mapping[str, Any] | None = None, **spec: Any) -> None:
        """Create the HelmRelease, or change its spec (the generation moves, the status stays)."""
        key = (NAMESPACE, NAME)
        current = self.kube.state.helmreleases.get(key)
        generation = current["metadata"]["generation"] + 1 if current else 1
        body = copy.deepcopy(current) if current else {"status": {}}
        body.update(
            apiVersion="helm.fluxcd.io/v1",
            kind="HelmRelease",
            metadata={
                "name": NAME,
                "namespace": NAMESPACE,
                "uid": "uid-web",
                "generation": generation,
                "annotations": dict((current or {}).get("metadata", {}).get("annotations", {})),
            },
            spec={
                "chart": {"repository": "https://charts.example/", "name": "podinfo", "version": "6.5.0"},
                "values": dict(GOOD if values is None else values),
                **spec,
            },
        )
        self.kube.state.helmreleases[key] = body

    def annotate(self, **annotations: str) -> None:
        """Set `reconcile.fluxcd.io/<key>` annotations (requestedAt=..., forceAt=...): the generation stays."""
        metadata = self.kube.state.helmreleases[NAMESPACE, NAME]["metadata"]
        metadata.setdefault("annotations", {}).update(
            {f"reconcile.fluxcd.io/{key}": value for key, value in annotations.items()}
        )

    def body(self) -> dict[str, Any]:
        """The HelmRelease as the watch delivers it now (not a read of the pass's)."""
        return copy.deepcopy(self.kube.state.helmreleases[NAMESPACE, NAME])

    async def reconcile(self, *, check_drift: bool = False, body: dict[str, Any] | None = None) -> Pass:
        """One pass, as a handler call: the index has caught up with everything before it. `body`: the object as
        the handler got it (by default, as it is now)."""
        self.index.sync()
        seen = len(self.kube.state.events)
        try:
            await self.reconciler.reconcile(
                self.body() if body is None else body, self.index, check_drift=check_drift
            )
        except ReconcileError as error:
            return Pass(self.reasons(seen), error)
        return Pass(self.reasons(seen))

    async def finalize(self) -> Pass:
        self.index.sync()
        seen = len(self.kube.state.events)
        body = await self.kube.get_helmrelease(NAMESPACE, NAME)
        try:
            await self.reconciler.finalize(body, self.index)
        except ReconcileError as error:
            return Pass(self.reasons(seen), error)
        return Pass(self.reasons(seen))

    def reasons(self, since: int = 0) -> list[str]:
        return [reason for _, _, reason, _ in self.kube.state.events[since:]]

    def messages(self, reason: str) -> list[str]:
        return [message for _, _, said, message in self.kube.state.events if said == reason]

    @property
    def status(self) -> HelmReleaseStatus:
        return HelmReleaseStatus.model_validate(self.kube.state.helmreleases[NAMESPACE, NAME]["status"])

    def condition(self, condition_type: ConditionType) -> tuple[str, str] | None:
        found = self.status.condition(condition_type)
        return None if found is None else (found.status, found.reason)

    def revisions(self, name: str = RELEASE) -> list[tuple[int, HelmStatus]]:
        return [(r.number, r.status) for r in self.helm.revisions(NAMESPACE, name)]


@pytest.fixture(params=[ReleaseIndex, LiveIndex], ids=["index-behind", "index-caught-up"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    index_type: type[ReleaseIndex] = request.param
    return Harness(tmp_path, index_type)


READY = (ConditionStatus.TRUE, Reason.INSTALL_SUCCEEDED)


async def test_an_install_then_rest_and_a_resync_costs_nothing(harness: Harness) -> None:
    harness.apply()
    assert await harness.reconcile() == Pass([Reason.INSTALL_SUCCEEDED])
    assert harness.revisions() == [(1, HelmStatus.DEPLOYED)]
    assert (harness.status.observed_generation, harness.status.helm_revision) == (1, 1)
    assert harness.condition(ConditionType.READY) == READY
    writes, operations = len(harness.kube.state.status_writes), harness.helm.operations()
    assert await harness.reconcile() == Pass([])
    assert harness.helm.operations() == operations, "a resync of an unchanged release runs no helm"
    assert len(harness.kube.state.status_writes) == writes, "and writes no status"


async def test_an_install_that_ends_soon_writes_the_status_once_settled(harness: Harness) -> None:
    harness.apply()
    assert await harness.reconcile() == Pass([Reason.INSTALL_SUCCEEDED])
    (settled_write,) = harness.kube.state.status_writes
    settled = sorted(
        (c["type"], c["status"]) for c in settled_write["conditions"] if c["type"] in ("Ready", "Released")
    )
    assert settled == [("Ready", "True"), ("Released", "True")], (
        "the install's outcome and Ready in one write"
    )
    assert settled_write["lastAttemptedRevision"] == "6.5.0", "what the progress write held is in it"


async def test_an_install_that_runs_on_shows_it_is_in_progress_then_settles(tmp_path: Path) -> None:
    harness = Harness(tmp_path, settings={"progress_after": 0.01})
    harness.helm.state.hold = asyncio.Event()
    harness.apply()
    running = asyncio.create_task(harness.reconcile())
    while not harness.kube.state.status_writes:
        assert not running.done(), running
        await asyncio.sleep(0.01)
    (progress,) = harness.kube.state.status_writes
    assert progress["phase"] == "Installing"
    assert [c["reason"] for c in progress["conditions"] if c["type"] == "Released"] == [Reason.PROGRESSING]
    assert harness.helm.operations() == [], "written while helm still runs"
    harness.helm.state.hold.set()
    assert await running == Pass([Reason.INSTALL_SUCCEEDED])
    _, settled = harness.kube.state.status_writes
    assert settled["phase"] == "Succeeded"
    assert harness.condition(ConditionType.READY) == READY


async def test_a_progress_write_that_fails_costs_only_the_progress_shown(tmp_path: Path) -> None:
    harness = Harness(tmp_path, settings={"progress_after": 0.0})
    harness.helm.state.hold = asyncio.Event()
    harness.kube.state.lost_answers = {1}  # the progress write: its answer is lost (ApiUnavailable)
    harness.apply()
    running = asyncio.create_task(harness.reconcile())
    while not harness.kube.state.status_writes:
        assert not running.done(), running
        await asyncio.sleep(0.01)
    harness.helm.state.hold.set()
    assert await running == Pass([Reason.INSTALL_SUCCEEDED]), "helm ran, and its outcome was recorded"
    assert len(harness.kube.state.status_writes) == 2
    assert harness.condition(ConditionType.READY) == READY


async def test_a_resync_reads_neither_the_helmrelease_nor_its_namespace_again(harness: Harness) -> None:
    harness.helm.state.manifest = MANIFEST
    harness.kube.state.objects["ConfigMap", NAMESPACE, "web-config"] = yaml_object(MANIFEST)
    harness.apply()
    await harness.reconcile()
    state = harness.kube.state
    reads = (state.helmrelease_reads, state.namespace_reads)
    for _ in range(3):
        stamp = harness.status.last_drift_check
        harness.clock.advance(30)
        assert await harness.reconcile(check_drift=True) == Pass([])
        assert harness.status.last_drift_check != stamp, "the drift check ran and its stamp was written"
    assert (state.helmrelease_reads, state.namespace_reads) == reads, (
        "the body carries the status the last pass left, and the index shows the release in its namespace"
    )


async def test_a_namespace_seen_to_exist_is_not_asked_for_again_within_a_minute(harness: Harness) -> None:
    harness.apply()
    await harness.reconcile()
    state = harness.kube.state
    assert state.namespace_reads == 1
    harness.apply(releaseName="web-two")  # a release the index does not hold: its namespace is checked
    assert Reason.INSTALL_SUCCEEDED in (await harness.reconcile()).events
    assert state.namespace_reads == 1, "seen a moment ago"
    harness.clock.advance(61)
    harness.apply(releaseName="web-three")
    state.namespaces.discard(NAMESPACE)
    failed = await harness.reconcile()
    assert failed.error is not None
    assert failed.error.reason == Reason.TARGET_NAMESPACE_NOT_FOUND, "after a minute the API is asked again"
    assert state.namespace_reads == 2


async def test_the_first_pass_of_an_object_in_a_process_decides_on_the_body_it_was_given(
    harness: Harness,
) -> None:
    harness.apply()
    assert await harness.reconcile() == Pass([Reason.INSTALL_SUCCEEDED])
    assert harness.kube.state.helmrelease_reads == 0, (
        "nothing of this process wrote after the watch delivered it"
    )
    harness.restart()
    assert await harness.reconcile() == Pass([])
    assert harness.kube.state.helmrelease_reads == 0, (
        "after a restart, the body the watch listed is the latest"
    )


async def test_a_second_pass_from_the_same_fresh_body_reads_what_the_first_left(harness: Harness) -> None:
    """The create handler and a requested pass can start from one body; the one that waited for the lock decides
    on what the other wrote, not on the body from before it."""
    harness.apply()
    fresh = harness.body()
    assert await harness.reconcile(body=fresh) == Pass([Reason.INSTALL_SUCCEEDED])
    status, operations = harness.status, harness.helm.operations()
    assert await harness.reconcile(body=fresh) == Pass([]), "no second install, nothing recorded again"
    assert harness.kube.state.helmrelease_reads == 1
    assert (harness.status, harness.helm.operations()) == (status, operations)


async def test_a_body_older_than_the_last_pass_is_read_again_and_the_pass_decides_on_the_fresh_status(
    harness: Harness,
) -> None:
    harness.apply()
    await harness.reconcile()
    harness.apply({"replicas": 4})
    stale = harness.body()  # the new spec, with the status from before its upgrade
    assert await harness.reconcile() == Pass([Reason.UPGRADE_SUCCEEDED])
    status, operations = harness.status, harness.helm.operations()
    assert await harness.reconcile(body=stale) == Pass([]), "no second upgrade, nothing recorded again"
    assert (harness.status, harness.helm.operations()) == (status, operations)


async def test_after_a_status_write_whose_answer_was_lost_the_next_pass_reads_the_helmrelease_again(
    harness: Harness,
) -> None:
    harness.apply()
    await harness.reconcile()
    assert await harness.reconcile() == Pass([]), "the status of this body is known from now on"
    harness.apply({"replicas": 4})
    stale = harness.body()
    # The write after the upgrade lands, but its answer is lost: the pass cannot know what the object holds.
    harness.kube.state.lost_answers = {len(harness.kube.state.status_writes) + 1}
    failed = await harness.reconcile()
    assert failed.error is not None
    assert failed.error.reason == "ApiUnavailable"
    applied, operations = harness.status.last_applied_digest, harness.helm.operations()
    assert applied != HelmReleaseStatus.model_validate(stale["status"]).last_applied_digest, (
        "the write landed"
    )
    reads = harness.kube.state.helmrelease_reads
    # Decided on the stale status, the pass would record the upgrade a second time (an Event).
    assert await harness.reconcile(body=stale) == Pass([]), "decided on what the object holds: nothing to do"
    assert harness.kube.state.helmrelease_reads == reads + 1
    assert (harness.status.last_applied_digest, harness.helm.operations()) == (applied, operations)


async def test_a_deploy_marks_its_resources_from_what_helm_printed_without_asking_helm_again(
    harness: Harness,
) -> None:
    harness.helm.state.manifest = MANIFEST
    harness.apply()
    assert await harness.reconcile() == Pass([Reason.INSTALL_SUCCEEDED])
    assert harness.kube.state.annotated == [("ConfigMap", "web-config")]
    assert harness.helm.state.status_reads == 0, "no `helm status` process after the install"


async def test_resync_drift_checks_read_helms_storage_not_at_all_after_our_own_deploy(
    harness: Harness,
) -> None:
    harness.helm.state.manifest = MANIFEST
    harness.kube.state.objects["ConfigMap", NAMESPACE, "web-config"] = yaml_object(MANIFEST)
    harness.apply()
    await harness.reconcile()
    for _ in range(3):
        assert await harness.reconcile(check_drift=True) == Pass([])
    assert harness.status.last_drift_check is not None, "the drift checks ran"
    assert harness.kube.state.stored_reads == 0, "the manifest helm printed is the one compared"


async def test_a_drift_check_after_a_restart_reads_the_stored_manifest_once(harness: Harness) -> None:
    harness.helm.state.manifest = MANIFEST
    harness.kube.state.objects["ConfigMap", NAMESPACE, "web-config"] = yaml_object(MANIFEST)
    harness.apply()
    await harness.reconcile()
    harness.restart()
    for _ in range(3):
        assert await harness.reconcile(check_drift=True) == Pass([])
    assert harness.kube.state.stored_reads == 1


async def test_a_revision_remade_after_an_uninstall_is_compared_with_its_own_manifest(
    harness: Harness,
) -> None:
    harness.helm.state.manifest = MANIFEST
    harness.kube.state.objects["ConfigMap", NAMESPACE, "web-config"] = yaml_object(MANIFEST)
    harness.apply()
    await harness.reconcile()
    assert await harness.reconcile(check_drift=True) == Pass([])
    # Gone by hand, made again as revision 1 from other values, with another manifest, by another operator.
    harness.helm.state.releases.clear()
    harness.helm.state.manifest = MANIFEST.replace("hello", "bonjour")
    harness.apply({"replicas": 3})
    first = harness.restart()
    await harness.reconcile()
    assert harness.revisions() == [(1, HelmStatus.DEPLOYED)]
    harness.reconciler = first
    # The live object still says hello: drift against revision 1's own manifest, not the one cached before.
    assert await harness.reconcile(check_drift=True) == Pass(
        [Reason.DRIFT_DETECTED, Reason.UPGRADE_SUCCEEDED]
    )


async def test_new_values_upgrade_once(harness: Harness) -> None:
    harness.apply()
    await harness.reconcile()
    harness.apply({"replicas": 4})
    assert await harness.reconcile() == Pass([Reason.UPGRADE_SUCCEEDED])
    assert await harness.reconcile() == Pass([])
    assert harness.revisions() == [(1, HelmStatus.SUPERSEDED), (2, HelmStatus.DEPLOYED)]
    assert harness.helm.state.values[NAMESPACE, RELEASE, 2] == {"replicas": 4}


async def test_drift_is_corrected_once(harness: Harness) -> None:
    harness.helm.state.manifest = MANIFEST
    harness.apply()
    await harness.reconcile()
    live = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "web-config"},
        "data": {"greeting": "edited"},
    }
    harness.kube.state.objects["ConfigMap", NAMESPACE, "web-config"] = live
    assert await harness.reconcile(check_drift=True) == Pass(
        [Reason.DRIFT_DETECTED, Reason.UPGRADE_SUCCEEDED]
    )
    found = (
        f"Drift in release {NAMESPACE}/{RELEASE}: 1 object differs from the release manifest\n"
        "ConfigMap apps/web-config changed at .data.greeting"
    )
    assert harness.messages(Reason.DRIFT_DETECTED) == [f"{found}\nupgrading the release to correct it"]
    assert harness.status.last_drift_check == harness.clock.now
    assert harness.condition(ConditionType.DRIFTED) == (ConditionStatus.FALSE, Reason.DRIFT_CORRECTED)
    assert harness.condition(ConditionType.READY) == (ConditionStatus.TRUE, Reason.UPGRADE_SUCCEEDED)
    harness.kube.state.objects["ConfigMap", NAMESPACE, "web-config"]["data"]["greeting"] = "hello"  # helm did
    assert await harness.reconcile(check_drift=True) == Pass([])
    assert harness.revisions()[-1] == (2, HelmStatus.DEPLOYED)
    assert harness.condition(ConditionType.DRIFTED) == (ConditionStatus.FALSE, Reason.NO_DRIFT)


async def test_a_failed_upgrade_without_rollback_waits_for_a_change(harness: Harness) -> None:
    harness.apply()
    await harness.reconcile()
    harness.apply(BAD)
    assert await harness.reconcile() == Pass([Reason.UPGRADE_FAILED])
    assert await harness.reconcile() == Pass([]), "not retried: helm would fail the same way"
    assert await harness.reconcile(check_drift=True) == Pass([]), "drift does not restart it either"
    assert harness.status.observed_generation == 2
    assert harness.condition(ConditionType.READY) == (ConditionStatus.FALSE, Reason.UPGRADE_FAILED)
    harness.apply(BAD, timeout=120)
    assert await harness.reconcile() == Pass([Reason.UPGRADE_FAILED]), "a change of the spec tries once more"
    harness.apply({"replicas": 3})
    assert await harness.reconcile() == Pass([Reason.UPGRADE_SUCCEEDED])
    assert harness.helm.operations() == ["install", "upgrade", "upgrade", "upgrade"]


FAILED_AND_ROLLED_BACK = [Reason.UPGRADE_FAILED, Reason.ROLLBACK_SUCCEEDED]


@pytest.mark.parametrize("max_retries", [1, 2])
async def test_each_retry_after_a_rollback_is_the_next_pass_until_max_retries(
    harness: Harness, max_retries: int
) -> None:
    """Never the same action twice in a pass: the retry upgrade is planned, handed to kopf, and run next pass."""
    rollback = {"enable": True, "retry": True, "maxRetries": max_retries}
    harness.apply(rollback=rollback)
    await harness.reconcile()
    harness.apply(BAD, rollback=rollback)
    for retry in range(1, max_retries + 1):
        ran = await harness.reconcile()
        assert ran.events == FAILED_AND_ROLLED_BACK
        assert ran.error is not None
        assert (ran.error.reason, ran.retry_after) == (Reason.RETRY_AFTER_ROLLBACK, RETRY_SOON)
        assert f"retry {retry} of at most {max_retries}" in str(ran.error)
    assert await harness.reconcile() == Pass([*FAILED_AND_ROLLED_BACK, Reason.RETRIES_EXHAUSTED])
    assert harness.status.rollback_count == max_retries + 1
    assert await harness.reconcile() == Pass([])
    rollbacks = max_retries + 1
    assert harness.revisions()[-1] == (1 + 2 * rollbacks, HelmStatus.DEPLOYED)
    assert harness.condition(ConditionType.READY) == (ConditionStatus.FALSE, Reason.RETRIES_EXHAUSTED)


async def test_a_rollback_without_retry_waits_for_a_change_which_resets_the_count(harness: Harness) -> None:
    harness.apply(rollback={"enable": True})
    await harness.reconcile()
    harness.apply(BAD, rollback={"enable": True})
    assert await harness.reconcile() == Pass([*FAILED_AND_ROLLED_BACK, Reason.WAITING_FOR_CHANGE])
    assert harness.status.rollback_count == 1
    harness.apply({"replicas": 3}, rollback={"enable": True})
    assert await harness.reconcile() == Pass([Reason.UPGRADE_SUCCEEDED])
    assert harness.status.rollback_count == 0


async def test_a_failed_test_rolls_back_and_waits(harness: Harness) -> None:
    spec = {"test": {"enable": True, "cleanup": True}, "rollback": {"enable": True}}
    harness.apply(**spec)
    assert await harness.reconcile() == Pass([Reason.INSTALL_SUCCEEDED, Reason.TEST_SUCCEEDED])
    harness.apply(TESTS_FAIL, **spec)
    assert await harness.reconcile() == Pass(
        [Reason.UPGRADE_SUCCEEDED, Reason.TEST_FAILED, Reason.ROLLBACK_SUCCEEDED, Reason.WAITING_FOR_CHANGE]
    )
    assert harness.status.last_applied_digest is None, "what runs now is the older revision"
    assert harness.revisions()[-1] == (3, HelmStatus.DEPLOYED)
    assert harness.helm.revisions(NAMESPACE, RELEASE)[-1].description == "Rollback to 1"
    assert await harness.reconcile() == Pass([])
    assert harness.kube.state.deleted_pods == [(NAMESPACE, f"{RELEASE}-test", None)] * 2, "test.cleanup"


async def test_an_ignored_test_failure_settles_ready(harness: Harness) -> None:
    harness.apply(TESTS_FAIL, test={"enable": True, "ignoreFailures": True})
    assert await harness.reconcile() == Pass([Reason.INSTALL_SUCCEEDED, Reason.TEST_FAILED])
    assert harness.condition(ConditionType.TESTED) == (ConditionStatus.FALSE, Reason.TEST_FAILURE_IGNORED)
    assert harness.condition(ConditionType.READY) == READY
    assert await harness.reconcile() == Pass([])


async def test_an_interrupted_upgrade_is_unlocked_then_upgraded(harness: Harness) -> None:
    harness.apply()
    await harness.reconcile()
    ours = owner_labels(NAMESPACE, NAME)
    harness.helm.revisions(NAMESPACE, RELEASE).append(StoredRevision(2, HelmStatus.PENDING_UPGRADE, ours))
    harness.apply({"replicas": 4})
    assert await harness.reconcile() == Pass([Reason.UNLOCKED, Reason.UPGRADE_SUCCEEDED])
    assert harness.helm.operations() == ["install", "rollback", "upgrade"]
    assert harness.revisions()[-1] == (4, HelmStatus.DEPLOYED)


async def test_an_unmarked_release_is_adopted_by_one_upgrade(harness: Harness) -> None:
    """The adoption is the upgrade (recorded as one): the release is then in sync, with no second upgrade."""
    harness.helm.put(NAMESPACE, RELEASE, StoredRevision(1, HelmStatus.DEPLOYED, {}))
    harness.apply()
    assert await harness.reconcile() == Pass([Reason.ADOPTED])
    assert harness.helm.operations() == ["adopt"]
    assert harness.helm.revisions(NAMESPACE, RELEASE)[-1].labels == owner_labels(
        NAMESPACE, NAME, harness.status.last_applied_digest
    )
    assert await harness.reconcile() == Pass([])


async def test_an_adoption_that_fails_before_helm_writes_waits_for_a_change(harness: Harness) -> None:
    """The release stays unowned, so the ownership check alone would adopt again, fail again, every pass."""
    harness.helm.put(NAMESPACE, RELEASE, StoredRevision(1, HelmStatus.DEPLOYED, {}))
    harness.helm.state.unrenderable = lambda values: values.get("template") == "broken"
    harness.apply({"template": "broken"})
    failing = await harness.reconcile()
    assert failing.events == [Reason.ADOPT_FAILED]
    assert harness.helm.operations() == ["adopt"]
    assert await harness.reconcile() == Pass([]), "not adopted again: helm would fail the same way"
    assert harness.helm.operations() == ["adopt"]
    assert harness.condition(ConditionType.READY) == (ConditionStatus.FALSE, Reason.UPGRADE_FAILED)
    harness.apply({"template": "fixed"})
    assert await harness.reconcile() == Pass([Reason.ADOPTED])
    assert harness.helm.operations() == ["adopt", "adopt"]


@pytest.mark.parametrize(
    ("antecedent", "events"),
    [
        pytest.param("apps:helmrelease/web", [Reason.UPGRADE_SUCCEEDED], id="flux-v1-ours"),
        pytest.param("apps:helmrelease/other", [Reason.OWNED_BY_OTHER], id="flux-v1-theirs"),
    ],
)
async def test_a_release_flux_v1_marked_is_judged_by_its_antecedent(
    harness: Harness, antecedent: str, events: list[str]
) -> None:
    harness.helm.state.manifest = MANIFEST
    harness.helm.put(NAMESPACE, RELEASE, StoredRevision(1, HelmStatus.DEPLOYED, {}, manifest=MANIFEST))
    live = {
        "kind": "ConfigMap",
        "metadata": {"name": "web-config", "annotations": {ANTECEDENT_ANNOTATION: antecedent}},
    }
    harness.kube.state.objects["ConfigMap", NAMESPACE, "web-config"] = live
    harness.apply()
    assert (await harness.reconcile()).events == events


async def test_the_release_of_another_helmrelease_is_never_touched(harness: Harness) -> None:
    theirs = StoredRevision(1, HelmStatus.DEPLOYED, owner_labels("apps", "other"))
    harness.helm.put(NAMESPACE, RELEASE, theirs)
    harness.apply()
    assert await harness.reconcile() == Pass([Reason.OWNED_BY_OTHER])
    assert harness.messages(Reason.OWNED_BY_OTHER) == [
        f"Helm release {NAMESPACE}/{RELEASE} belongs to apps:helmrelease/other; it is left alone. Set a "
        "different releaseName or targetNamespace, or delete the other HelmRelease"
    ]
    assert await harness.reconcile() == Pass([]), "said once"
    assert await harness.finalize() == Pass([Reason.NOT_OURS])
    assert harness.helm.operations() == []


async def test_deleting_uninstalls_our_release(harness: Harness) -> None:
    harness.apply()
    await harness.reconcile()
    assert await harness.finalize() == Pass([Reason.UNINSTALLED])
    assert harness.revisions() == []


async def test_a_failure_of_the_cluster_is_retried_by_itself_with_backoff(harness: Harness) -> None:
    """A full quota: once it is raised, no change to the HelmRelease is needed, and no rollback is made."""
    harness.apply(rollback={"enable": True})
    await harness.reconcile()
    harness.apply({"replicas": 4}, rollback={"enable": True})
    harness.helm.state.cluster_down = True
    first = await harness.reconcile()
    assert (first.events, first.retry_after) == ([Reason.UPGRADE_FAILED], 10)
    harness.clock.advance(3)
    assert (await harness.reconcile()).retry_after == 7, "a resync before the retry is due waits the rest"
    harness.clock.advance(7)
    second = await harness.reconcile()
    assert (second.events, second.retry_after) == ([Reason.UPGRADE_FAILED], 20), "twice as long"
    assert harness.status.cluster_failures == 2
    harness.helm.state.cluster_down = False
    harness.clock.advance(20)
    assert await harness.reconcile() == Pass([Reason.UPGRADE_SUCCEEDED])
    status = harness.status
    assert (status.retry_at, status.cluster_failures, status.rollback_count) == (None, 0, 0)
    assert status.observed_generation == 2
    assert "rollback" not in harness.helm.operations()


async def test_a_failure_of_the_cluster_on_install_is_retried_by_upgrading(harness: Harness) -> None:
    harness.helm.state.cluster_down = True
    harness.apply()
    first = await harness.reconcile()
    assert (first.events, first.retry_after) == ([Reason.INSTALL_FAILED], 10)
    assert harness.messages(Reason.INSTALL_FAILED)[0].endswith(
        "the cluster caused this, not the configuration: trying again at 2026-03-01T12:00:10Z (attempt 2)"
    )
    harness.helm.state.cluster_down = False
    harness.clock.advance(10)
    assert await harness.reconcile() == Pass([Reason.UPGRADE_SUCCEEDED]), "helm keeps the failed install"
    assert harness.helm.operations() == ["install", "upgrade"]


async def test_a_change_while_a_retry_is_planned_goes_ahead_at_once(harness: Harness) -> None:
    harness.helm.state.cluster_down = True
    harness.apply()
    await harness.reconcile()
    harness.helm.state.cluster_down = False
    harness.apply(timeout=120)
    assert await harness.reconcile() == Pass([Reason.UPGRADE_SUCCEEDED])


@pytest.mark.parametrize("killed_in", ["install", "upgrade"])
async def test_a_deploy_helm_finished_before_a_crash_is_recorded_not_repeated(
    harness: Harness, killed_in: str
) -> None:
    """The digest label on the revision tells the next operator what it holds."""
    spec = {"test": {"enable": True}}
    if killed_in == "upgrade":
        harness.apply(**spec)
        await harness.reconcile()
    harness.apply({"replicas": 5}, **spec)
    harness.helm.state.killed_after = killed_in
    with pytest.raises(OperatorKilled):
        await harness.reconcile()
    assert harness.status.phase in ("Installing", "Upgrading"), "the outcome was never recorded"
    revisions = len(harness.revisions())
    assert await harness.reconcile() == Pass([Reason.ALREADY_APPLIED, Reason.TEST_SUCCEEDED])
    assert len(harness.revisions()) == revisions, "no second revision of the same chart and values"
    assert harness.helm.operations()[-1] == "test"
    assert harness.status.last_applied_digest is not None
    assert await harness.reconcile() == Pass([])


@pytest.mark.parametrize("failure", ["upgrade", "test"])
async def test_a_rollback_helm_finished_before_a_crash_is_recorded_not_repeated(
    harness: Harness, failure: str
) -> None:
    """A second rollback would go back from the rollback to the revision that failed."""
    spec: dict[str, Any] = {"rollback": {"enable": True}, "test": {"enable": failure == "test"}}
    harness.apply(GOOD, **spec)
    await harness.reconcile()
    harness.helm.state.killed_after = "rollback"
    harness.apply(BAD if failure == "upgrade" else TESTS_FAIL, **spec)
    with pytest.raises(OperatorKilled):
        await harness.reconcile()
    revisions = harness.revisions()
    assert revisions[-1] == (3, HelmStatus.DEPLOYED), "rolled back to 1 as revision 3, not recorded"
    assert (await harness.reconcile()).events[0] == Reason.ALREADY_APPLIED
    assert harness.revisions() == revisions, "no second rollback"
    assert (harness.status.phase, harness.status.rollback_count, harness.status.helm_revision) == (
        "RolledBack",
        1,
        3,
    )
    assert harness.helm.operations().count("rollback") == 1
    assert await harness.reconcile() == Pass([])


async def test_a_forced_upgrade_helm_finished_before_a_crash_is_recorded_not_repeated(
    harness: Harness,
) -> None:
    """The force token's label on the revision tells the next operator that the force was carried out."""
    harness.apply()
    await harness.reconcile()
    harness.annotate(requestedAt="f1", forceAt="f1")
    harness.helm.state.killed_after = "upgrade"
    with pytest.raises(OperatorKilled):
        await harness.reconcile()
    assert harness.revisions()[-1] == (2, HelmStatus.DEPLOYED)
    assert harness.status.last_handled_force_at is None, "never recorded"
    assert (await harness.reconcile()).events == [Reason.ALREADY_APPLIED]
    assert harness.revisions() == [(1, HelmStatus.SUPERSEDED), (2, HelmStatus.DEPLOYED)], "no second upgrade"
    assert (harness.status.last_handled_force_at, harness.status.helm_revision) == ("f1", 2)
    assert harness.helm.operations().count("upgrade") == 1
    assert await harness.reconcile() == Pass([])


async def test_a_forced_upgrade_that_failed_and_was_rolled_back_before_a_crash_is_not_forced_again(
    harness: Harness,
) -> None:
    """The rollback revision carries the labels of the one it went back to; the failed forced revision still
    says the force ran, so the restart echoes it instead of forcing (and failing, and rolling back) again."""
    spec: dict[str, Any] = {"rollback": {"enable": True}}
    harness.apply(GOOD, **spec)
    await harness.reconcile()
    harness.apply(BAD, **spec)
    harness.annotate(requestedAt="f1", forceAt="f1")
    harness.helm.state.killed_after = "rollback"
    with pytest.raises(OperatorKilled):
        await harness.reconcile()
    revisions = harness.revisions()
    assert revisions == [(1, HelmStatus.SUPERSEDED), (2, HelmStatus.FAILED), (3, HelmStatus.DEPLOYED)]
    assert harness.status.last_handled_force_at is None, "killed before the echo"
    assert (await harness.reconcile()).events[0] == Reason.ALREADY_APPLIED
    assert harness.revisions() == revisions, "no second forced upgrade, no second rollback"
    assert harness.helm.operations().count("upgrade") == 1
    assert (harness.status.last_handled_force_at, harness.status.phase) == ("f1", "RolledBack")


async def test_a_forced_upgrade_is_echoed_once_its_pass_is_done_with_the_reconcile_token(
    harness: Harness,
) -> None:
    """`reconcile --force` reads the echo as "done": it comes with the pass's final state, never with the deploy
    record before a test or rollback (a crash in between is covered by the revision's force label, above)."""
    harness.apply()
    await harness.reconcile()
    harness.annotate(requestedAt="f1", forceAt="f1")
    await harness.reconcile()
    echoed = [write for write in harness.kube.state.status_writes if write.get("lastHandledForceAt") == "f1"]
    assert echoed
    assert echoed[0].get("lastHandledReconcileAt") == "f1"


async def test_a_renamed_release_is_uninstalled_then_installed_under_its_new_name(harness: Harness) -> None:
    harness.apply()
    await harness.reconcile()
    harness.apply(releaseName="web-v2")
    assert await harness.reconcile() == Pass([Reason.UNINSTALLED, Reason.INSTALL_SUCCEEDED])
    assert (harness.revisions(), harness.revisions("web-v2")) == ([], [(1, HelmStatus.DEPLOYED)])
    assert (harness.status.release_namespace, harness.status.release_name) == (NAMESPACE, "web-v2")
    assert await harness.reconcile() == Pass([])


async def test_helm_errors_quote_no_value_that_came_from_a_secret(harness: Harness) -> None:
    harness.kube.state.secrets[NAMESPACE, "db"] = {"values.yaml": "password: hunter22"}
    harness.apply(BAD, valuesFrom=[{"secretKeyRef": {"name": "db"}}])
    assert await harness.reconcile() == Pass([Reason.INSTALL_FAILED])
    (message,) = harness.messages(Reason.INSTALL_FAILED)
    assert "('password', '***')" in message
    assert "hunter22" not in str(harness.kube.state.helmreleases), "not in the status either"


async def test_a_missing_values_secret_stops_the_pass_before_helm(harness: Harness) -> None:
    harness.apply(valuesFrom=[{"secretKeyRef": {"name": "db"}}])
    ran = await harness.reconcile()
    assert ran.events == [Reason.VALUES_ERROR]
    assert ran.error is not None
    assert (ran.error.temporary, ran.retry_after) == (True, 120)
    assert str(ran.error) == "Secret db key values.yaml in namespace apps does not exist"
    again = await harness.reconcile()
    assert (again.events, str(again.error)) == ([], str(ran.error)), "reported once while it lasts"
    assert harness.helm.operations() == []


async def test_a_chart_that_cannot_be_fetched_is_one_event_while_it_lasts(harness: Harness) -> None:
    charts = harness.reconciler.charts
    assert isinstance(charts, FakeCharts)
    harness.apply()
    charts.error = ChartNotFound(
        "helm repo update", "failed to fetch https://charts.example/index.yaml : 404"
    )
    failed = [await harness.reconcile() for _ in range(3)]
    assert [ran.events for ran in failed] == [[Reason.CHART_FETCH_FAILED], [], []], (
        "one Event, not one a retry"
    )
    assert {(ran.error.reason, ran.retry_after) for ran in failed if ran.error} == {
        (Reason.CHART_FETCH_FAILED, 120)
    }
    assert harness.condition(ConditionType.READY) == (ConditionStatus.FALSE, Reason.CHART_FETCH_FAILED)
    charts.error = RepositoryUnreachable("helm repo update", "dial tcp 127.0.0.1:1: connection refused")
    assert (await harness.reconcile()).events == [Reason.CHART_FETCH_FAILED], "another failure is told"
    charts.error = None
    assert (await harness.reconcile()).events == [Reason.INSTALL_SUCCEEDED]
    assert harness.condition(ConditionType.READY) == READY
    charts.error = ChartNotFound(
        "helm repo update", "failed to fetch https://charts.example/index.yaml : 404"
    )
    harness.apply({"replicas": 5})
    assert (await harness.reconcile()).events == [Reason.CHART_FETCH_FAILED], "and the same one again, later"
    assert harness.messages(Reason.CHART_FETCH_FAILED)[-1] == (
        "failed to fetch https://charts.example/index.yaml : 404; the release keeps chart 6.5.0"
    )
    assert harness.messages(Reason.CHART_FETCH_FAILED)[0].endswith(": 404"), "no release to keep before"


async def test_an_invalid_helmrelease_is_reported_once_and_not_retried(harness: Harness) -> None:
    harness.apply(timeout=0)
    ran = await harness.reconcile()
    assert ran.events == [Reason.INVALID_SPEC]
    assert ran.error is not None
    assert not ran.error.temporary
    assert harness.status.observed_generation == 1
    assert (await harness.reconcile()).events == []


async def test_two_passes_of_an_invalid_helmrelease_from_one_body_post_one_event(harness: Harness) -> None:
    """kopf runs the create handler and the resync timer side by side, both with the body as it was before
    either wrote a status: the hostile corpus saw each invalid object get two identical Warning Events."""
    harness.apply(values=nested_values(120))
    body = await harness.kube.get_helmrelease(NAMESPACE, NAME)
    results = await asyncio.gather(
        harness.reconciler.reconcile(copy.deepcopy(body), harness.index),
        harness.reconciler.reconcile(copy.deepcopy(body), harness.index),
        return_exceptions=True,
    )
    assert all(isinstance(result, ReconcileError) for result in results), results
    assert harness.reasons() == [Reason.VALUES_TOO_DEEP]


async def test_a_chart_fetch_that_keeps_failing_the_same_way_is_one_event(harness: Harness) -> None:
    harness.charts.error = HelmError("pull", 'chart "podinfo" matching 6.5.0 not found in source index')
    harness.apply()
    first, second = await harness.reconcile(), await harness.reconcile()
    assert (first.events, second.events) == ([Reason.CHART_FETCH_FAILED], [])
    assert second.error is not None  # still retried: the repository may get the chart
    harness.charts.error = HelmError("pull", "connection refused")  # failing differently is news
    assert (await harness.reconcile()).events == [Reason.CHART_FETCH_FAILED]
    harness.charts.error = None
    assert (await harness.reconcile()).events[-1] == Reason.INSTALL_SUCCEEDED


def nested_values(depth: int) -> dict[str, Any]:
    tree: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        tree = {"n": tree}
    return tree


async def test_helm_acts_as_the_service_account_the_helmrelease_names(harness: Harness) -> None:
    harness.kube.state.service_accounts.add((NAMESPACE, "deployer"))
    harness.apply(serviceAccountName="deployer", test={"enable": True, "cleanup": True})
    assert await harness.reconcile() == Pass([Reason.INSTALL_SUCCEEDED, Reason.TEST_SUCCEEDED])
    tenant = "ServiceAccount apps/deployer"
    assert {identity for _, _, identity in harness.helm.state.calls} == {tenant}
    assert harness.kube.state.deleted_pods == [(NAMESPACE, f"{RELEASE}-test", tenant)]


async def test_a_missing_service_account_stops_the_pass(harness: Harness) -> None:
    harness.apply(serviceAccountName="deployer")
    ran = await harness.reconcile()
    assert ran.events == [Reason.SERVICE_ACCOUNT_NOT_FOUND]
    assert str(ran.error) == (
        "ServiceAccount apps/deployer does not exist; create it or fix spec.serviceAccountName"
    )
    assert harness.helm.operations() == []


async def test_the_longest_pass_fits_in_max_steps(tmp_path: Path) -> None:
    """Every action the plan can chain in one pass, once: uninstall-previous, an adoption that fails and leaves the
    release pending, unlock, upgrade, a failing test, rollback; the seventh plan (the retry) goes to the next pass.

    With an index behind the pass (the chain depends on the operator's own view of the unlocked release).
    """
    harness = Harness(tmp_path, ReleaseIndex)
    rollback = {"enable": True, "retry": True}
    harness.apply(TESTS_FAIL, test={"enable": True}, rollback=rollback)
    body = harness.kube.state.helmreleases[NAMESPACE, NAME]
    body["status"] = {"releaseName": "web-old", "releaseNamespace": NAMESPACE}
    harness.helm.put(
        NAMESPACE, "web-old", StoredRevision(1, HelmStatus.DEPLOYED, owner_labels(NAMESPACE, NAME))
    )
    harness.helm.put(NAMESPACE, RELEASE, StoredRevision(1, HelmStatus.DEPLOYED, {}))
    harness.helm.state.leaves_pending = 1
    ran = await harness.reconcile()
    assert ran.events[:2] == [Reason.UNINSTALLED, Reason.ADOPT_FAILED]
    assert ran.events[2:] == [
        Reason.UNLOCKED,
        Reason.UPGRADE_SUCCEEDED,
        Reason.TEST_FAILED,
        Reason.ROLLBACK_SUCCEEDED,
    ]
    assert len(ran.events) + 1 <= MAX_STEPS
    assert ran.error is not None
    assert ran.error.reason == Reason.RETRY_AFTER_ROLLBACK


# --- Flux v2's requests (reconcile.fluxcd.io/*), spec.suspend, decisions in the log ---------------------------


async def test_a_requested_pass_echoes_its_token_once_done_and_a_token_is_handled_once(
    harness: Harness,
) -> None:
    harness.apply()
    await harness.reconcile()
    harness.annotate(requestedAt="2026-03-01T12:05:00Z")
    assert await harness.reconcile() == Pass([])
    assert harness.status.last_handled_reconcile_at == "2026-03-01T12:05:00Z"
    writes, operations = len(harness.kube.state.status_writes), harness.helm.operations()
    assert await harness.reconcile() == Pass([]), "the same token again asks for nothing"
    assert len(harness.kube.state.status_writes) == writes
    assert harness.helm.operations() == operations == ["install"]


async def test_a_requested_pass_that_fails_still_echoes_its_token(harness: Harness) -> None:
    harness.apply()
    await harness.reconcile()
    harness.apply(BAD)
    harness.annotate(requestedAt="t1")
    assert (await harness.reconcile()).events == [Reason.UPGRADE_FAILED]
    assert harness.status.last_handled_reconcile_at == "t1"
    assert harness.condition(ConditionType.READY) == (ConditionStatus.FALSE, Reason.UPGRADE_FAILED)


async def test_an_invalid_helmrelease_echoes_the_requested_token(harness: Harness) -> None:
    harness.apply(timeout=0)
    harness.annotate(requestedAt="t1")
    ran = await harness.reconcile()
    assert ran.error is not None
    assert not ran.error.temporary
    assert harness.status.last_handled_reconcile_at == "t1"


async def test_a_force_upgrades_once_after_retries_are_exhausted(harness: Harness) -> None:
    rollback = {"enable": True, "retry": True, "maxRetries": 1}
    harness.apply(rollback=rollback)
    await harness.reconcile()
    harness.apply(BAD, rollback=rollback)
    await harness.reconcile()  # fails, rolled back, retry planned
    assert (await harness.reconcile()).events[-1] == Reason.RETRIES_EXHAUSTED
    assert await harness.reconcile() == Pass([]), "exhausted: waits for a change"
    upgrades = harness.helm.operations().count("upgrade")
    harness.annotate(requestedAt="f1", forceAt="f1")
    ran = await harness.reconcile()
    assert ran.events[:2] == [Reason.UPGRADE_FAILED, Reason.ROLLBACK_SUCCEEDED], (
        "one upgrade, still bad values"
    )
    assert harness.helm.operations().count("upgrade") == upgrades + 1
    assert (harness.status.last_handled_reconcile_at, harness.status.last_handled_force_at) == ("f1", "f1")
    assert await harness.reconcile() == Pass([]), "the same force token again does nothing"
    assert harness.helm.operations().count("upgrade") == upgrades + 1


async def test_a_force_upgrades_an_unchanged_release_and_needs_the_same_token_as_requested_at(
    harness: Harness,
) -> None:
    harness.apply()
    await harness.reconcile()
    harness.annotate(requestedAt="a", forceAt="b")
    assert await harness.reconcile() == Pass([]), "forceAt without the same requestedAt is no force"
    assert harness.status.last_handled_force_at is None
    harness.annotate(requestedAt="b")
    assert await harness.reconcile() == Pass([Reason.UPGRADE_SUCCEEDED])
    assert harness.revisions()[-1] == (2, HelmStatus.DEPLOYED)
    assert harness.status.last_handled_force_at == "b"


async def test_a_reset_zeroes_the_counters_so_retries_start_over(harness: Harness) -> None:
    rollback = {"enable": True, "retry": True, "maxRetries": 1}
    harness.apply(rollback=rollback)
    await harness.reconcile()
    harness.apply(BAD, rollback=rollback)
    await harness.reconcile()
    await harness.reconcile()
    assert harness.condition(ConditionType.READY) == (ConditionStatus.FALSE, Reason.RETRIES_EXHAUSTED)
    assert harness.status.rollback_count == 2
    harness.annotate(requestedAt="r1", resetAt="r1")
    ran = await harness.reconcile()
    assert ran.events == FAILED_AND_ROLLED_BACK, "the counters zeroed: the upgrade is tried again"
    assert ran.error is not None
    assert ran.error.reason == Reason.RETRY_AFTER_ROLLBACK, "and retried after it"
    assert (harness.status.rollback_count, harness.status.last_handled_reset_at) == (1, "r1")
    assert (await harness.reconcile()).events[-1] == Reason.RETRIES_EXHAUSTED, "the retry budget, once more"
    assert await harness.reconcile() == Pass([]), "the same reset token again does nothing"


async def test_a_reset_of_a_failed_test_runs_the_test_again(harness: Harness) -> None:
    harness.apply(TESTS_FAIL, test={"enable": True})
    assert (await harness.reconcile()).events == [Reason.INSTALL_SUCCEEDED, Reason.TEST_FAILED]
    assert await harness.reconcile() == Pass([])
    harness.annotate(requestedAt="r1", resetAt="r1")
    assert await harness.reconcile() == Pass([Reason.TEST_FAILED])
    assert harness.helm.operations() == ["install", "test", "test"]


async def test_a_suspended_release_is_not_upgraded_when_values_change_and_resumes_at_once(
    harness: Harness,
) -> None:
    harness.helm.state.manifest = MANIFEST
    harness.apply()
    await harness.reconcile()
    harness.apply({"replicas": 7}, suspend=True)
    assert await harness.reconcile() == Pass([Reason.SUSPENDED])
    assert harness.helm.operations() == ["install"]
    assert harness.status.observed_generation == 2, "the pass for the change ran, and settled"
    ready = harness.status.condition(ConditionType.READY)
    assert ready is not None
    assert (ready.status, ready.reason) == (ConditionStatus.FALSE, Reason.SUSPENDED)
    assert "helmrelease resume" in ready.message
    assert "spec.suspend" in ready.message
    # No drift correction either: the resync does not even look.
    harness.kube.state.objects["ConfigMap", NAMESPACE, "web-config"] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "web-config"},
        "data": {"greeting": "edited"},
    }
    checked = harness.status.last_drift_check
    assert await harness.reconcile(check_drift=True) == Pass([]), "an Event once, not every resync"
    assert harness.helm.operations() == ["install"]
    assert harness.status.last_drift_check == checked
    harness.apply({"replicas": 7}, suspend=False)
    assert await harness.reconcile() == Pass([Reason.UPGRADE_SUCCEEDED])
    assert harness.helm.state.values[NAMESPACE, RELEASE, 2] == {"replicas": 7}
    assert harness.status.condition(ConditionType.SUSPENDED) is None
    assert harness.condition(ConditionType.READY) == (ConditionStatus.TRUE, Reason.UPGRADE_SUCCEEDED)


async def test_a_force_asked_while_suspended_waits_for_the_resume(harness: Harness) -> None:
    harness.apply()
    await harness.reconcile()
    harness.apply(suspend=True)
    harness.annotate(requestedAt="f1", forceAt="f1", resetAt="f1")
    assert await harness.reconcile() == Pass([Reason.SUSPENDED])
    assert harness.helm.operations() == ["install"]
    status = harness.status
    assert (status.last_handled_reconcile_at, status.last_handled_reset_at) == ("f1", "f1")
    assert status.last_handled_force_at is None, "not carried out, so not handled"
    harness.apply(suspend=False)
    assert await harness.reconcile() == Pass([Reason.UPGRADE_SUCCEEDED])
    assert harness.status.last_handled_force_at == "f1"


async def test_a_helmrelease_deleted_while_suspended_leaves_its_release(harness: Harness) -> None:
    harness.apply()
    await harness.reconcile()
    harness.apply(suspend=True)
    await harness.reconcile()
    assert await harness.finalize() == Pass([Reason.SUSPENDED])
    assert harness.helm.operations() == ["install"]
    assert harness.revisions() == [(1, HelmStatus.DEPLOYED)]
    assert "left installed" in harness.messages(Reason.SUSPENDED)[-1]


async def test_drift_in_thousands_of_fields_is_told_in_a_few_lines(harness: Harness) -> None:
    keys = [f"key{index}" for index in range(3000)]
    documents = [
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm{}\ndata:\n{}".format(
            number, "".join(f"  {key}: declared\n" for key in keys)
        )
        for number in range(8)
    ]
    harness.helm.state.manifest = "---\n".join(documents)
    harness.apply()
    await harness.reconcile()
    for number in range(8):
        harness.kube.state.objects["ConfigMap", NAMESPACE, f"cm{number}"] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm{number}"},
            "data": dict.fromkeys(keys, "edited"),
        }
    assert (await harness.reconcile(check_drift=True)).events == [
        Reason.DRIFT_DETECTED,
        Reason.UPGRADE_SUCCEEDED,
    ]
    (message,) = harness.messages(Reason.DRIFT_DETECTED)
    lines = message.splitlines()
    assert lines[0] == f"Drift in release {NAMESPACE}/{RELEASE}: 8 objects differ from the release manifest"
    assert lines[1] == "ConfigMap apps/cm0 changed at .data.key0, .data.key1, .data.key2 and 2997 more"
    assert lines[6:] == ["and 3 more objects", "upgrading the release to correct it"]
    assert len(message) <= 1024


async def test_each_decision_is_one_log_line_with_its_fields(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.apply()
    with caplog.at_level(logging.DEBUG, logger="helmrelease"):
        await harness.reconcile()
    told = [r for r in caplog.records if r.name.startswith("helmrelease") and r.levelno >= logging.INFO]
    decisions = [(r.action, r.reason, r.result, r.revision, r.chart) for r in told]  # type: ignore[attr-defined]
    assert decisions == [
        ("install", Reason.RELEASE_ABSENT, "succeeded", 1, "6.5.0"),
        ("nothing", Reason.IN_SYNC, "decided", 1, "6.5.0"),
    ], "no other line at INFO: the Events of these decisions are logged at debug"
    assert all(r.helmrelease == f"{NAMESPACE}/{NAME}" for r in told)  # type: ignore[attr-defined]
    assert all(isinstance(r.duration, float) and r.duration >= 0 for r in told)  # type: ignore[attr-defined]
    assert (
        told[0].getMessage().startswith(f"HelmRelease {NAMESPACE}/{NAME}: install ReleaseAbsent succeeded (")
    )


async def test_passes_that_wait_for_a_helm_worker_are_bounded_and_all_run(tmp_path: Path) -> None:
    """1000 HelmReleases created at once: only a few passes at a time fetch a chart and build values ahead of the
    Helm workers; the others wait holding only their object, and each gets its turn."""
    harness = Harness(tmp_path, ReleaseIndex, {"workers": 1})
    harness.apply()
    template, count = harness.body(), 5 * PASSES_PER_WORKER
    bodies = []
    for index in range(count):
        body = copy.deepcopy(template)
        body["metadata"].update(name=f"web{index}", uid=f"uid-{index}")
        harness.kube.state.helmreleases[NAMESPACE, f"web{index}"] = body
        bodies.append(body)
    harness.helm.state.hold = asyncio.Event()
    done: list[object] = []
    ahead: list[int] = []
    fetch = harness.charts.fetch

    async def counted(source: Any) -> Any:
        ahead.append(len(harness.charts.fetched) + 1 - len(done))  # passes with a chart, not yet finished
        return await fetch(source)

    harness.charts.fetch = counted  # type: ignore[method-assign]
    harness.index.sync()

    async def reconcile(body: dict[str, Any]) -> None:
        await harness.reconciler.reconcile(body, harness.index)
        done.append(body)

    tasks = [asyncio.create_task(reconcile(body)) for body in bodies]
    for _ in range(200):  # every pass has had its turns on the loop: those that could get ahead did
        await asyncio.sleep(0)
    assert len(harness.charts.fetched) == PASSES_PER_WORKER, "as many ahead as the bound, the rest waiting"
    harness.helm.state.hold.set()
    await asyncio.gather(*tasks)
    assert harness.helm.operations().count("install") == count
    assert max(ahead) == PASSES_PER_WORKER
