"""In-memory stand-ins for Helm, the Kubernetes API, the chart fetcher and the release index, to drive the
production reconcile pass (`reconcile.service.Reconciler`) in unit tests.

`FakeHelm` keeps each release's revisions as Helm's storage would (the labels `helm --labels` sets included) and
fails as configured: a values predicate for the chart's own failures, `cluster_down` for the cluster's. `FakeKube`
keeps HelmReleases (applying status merge patches), Events, live objects and Helm's storage as seen through the
API. `ReleaseIndex` is the watch-fed index: it shows Helm's storage as of its last `sync()`, which a pass does not
wait for, so a pass decides on what its own actions reported, as in production.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helmrelease.adapters import helm as helm_adapter
from helmrelease.adapters.charts import ChartSource, FetchedChart, RepositoryChart
from helmrelease.adapters.helm import (
    DeployAction,
    DeployOptions,
    HelmMajor,
    HelmSettings,
    Release,
    Revision,
    RollbackOptions,
    TestHook,
    TestRun,
)
from helmrelease.adapters.kube import (
    ApiUnavailable,
    Conflict,
    NotFound,
    ObjectRef,
    StoredLease,
    StoredRelease,
)
from helmrelease.api.constants import HelmStatus
from helmrelease.reconcile.releases import IndexedRelease, latest, release_index_entry

START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
QUOTA = 'Error: UPGRADE FAILED: services "web" is forbidden: exceeded quota: q'


class OperatorKilled(Exception):
    """The operator process died right after helm returned: nothing after it runs."""


@dataclass
class Clock:
    """The reconciler's clock; time moves only when a test moves it."""

    now: dt.datetime = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@dataclass
class StoredRevision:
    number: int
    status: HelmStatus
    labels: dict[str, str]
    description: str = ""
    manifest: str = ""


def never(_: Mapping[str, Any]) -> bool:
    return False


@dataclass
class HelmState:
    """What all views of the fake helm share: the releases and what was run."""

    releases: dict[tuple[str, str], list[StoredRevision]] = field(default_factory=dict)
    #: While set and not yet set free, every deploy waits for it (a helm that takes its time).
    hold: asyncio.Event | None = None
    #: Deploys of these values fail as the chart's fault (the API server rejects an object): a failed revision.
    rejects: Callable[[Mapping[str, Any]], bool] = never
    #: Deploys of these values fail before Helm writes a revision (a template that does not render).
    unrenderable: Callable[[Mapping[str, Any]], bool] = never
    #: Tests of revisions deployed with these values fail.
    tests_fail: Callable[[Mapping[str, Any]], bool] = never
    #: Every deploy fails because of the cluster (a quota): a failed revision, and a cluster-side error.
    cluster_down: bool = False
    #: The next this many deploys leave the release pending, as a helm that was killed would, and fail.
    leaves_pending: int = 0
    #: After this operation (install, upgrade, test, rollback, uninstall) has done its work, the operator dies.
    killed_after: str | None = None
    #: The manifest each deployed revision holds.
    manifest: str = ""
    #: (operation, namespace/release, identity) of every mutating call, in order.
    calls: list[tuple[str, str, str | None]] = field(default_factory=list)
    #: `helm status` (`get metadata`) runs: each is a helm process of its own.
    status_reads: int = 0
    #: The values each revision was deployed with, by (namespace, release, revision).
    values: dict[tuple[str, str, int], Mapping[str, Any]] = field(default_factory=dict)


class FakeHelm:
    """The `HelmApi` of the reconcile pass over `HelmState`; `impersonating` and `redacting` are views of it."""

    major = HelmMajor.V4
    settings = HelmSettings(home=Path("/nonexistent/helm"), temp_root=Path("/nonexistent/tmp"))

    def __init__(
        self,
        state: HelmState | None = None,
        identity: str | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.state = state or HelmState()
        self.identity = identity
        self.redact = redact or (lambda text: text)

    # --- what tests look at -----------------------------------------------------------------------------------

    def revisions(self, namespace: str, name: str) -> list[StoredRevision]:
        return self.state.releases.get((namespace, name), [])

    def operations(self) -> list[str]:
        return [operation for operation, _, _ in self.state.calls]

    def put(self, namespace: str, name: str, *revisions: StoredRevision) -> None:
        self.state.releases[namespace, name] = list(revisions)

    # --- HelmApi ----------------------------------------------------------------------------------------------

    def impersonating(self, namespace: str, service_account: str) -> FakeHelm:
        return FakeHelm(self.state, f"ServiceAccount {namespace}/{service_account}", self.redact)

    def redacting(self, redact: Callable[[str], str]) -> FakeHelm:
        return FakeHelm(self.state, self.identity, redact)

    async def upgrade_install(
        self,
        release: str,
        namespace: str,
        chart: str | Path,
        values: Mapping[str, Any],
        options: DeployOptions,
        *,
        action: DeployAction,
    ) -> Release:
        state = self.state
        if state.hold is not None:
            await state.hold.wait()
        operation = (options.description or action.value).split(" ")[0]  # install, upgrade or adopt
        self._call(operation, namespace, release)
        labels = dict(options.labels)
        if state.unrenderable(values):
            raise helm_adapter.RenderFailed(action.value, "Error: template: app/templates/web.yaml:3: bad")
        if state.cluster_down:
            self._store(namespace, release, HelmStatus.FAILED, labels, values)
            raise helm_adapter.ClusterProblem(action.value, self.redact(QUOTA))
        if state.leaves_pending:
            state.leaves_pending -= 1
            self._store(namespace, release, HelmStatus.PENDING_UPGRADE, labels, values)
            raise helm_adapter.ReleaseLocked(action.value, "Error: UPGRADE FAILED: context canceled")
        if state.rejects(values):
            self._store(namespace, release, HelmStatus.FAILED, labels, values)
            detail = f"Error: UPGRADE FAILED: Deployment web is invalid: {sorted(values.items())}"
            raise helm_adapter.InvalidResource(action.value, self.redact(detail))
        stored = self._store(namespace, release, HelmStatus.DEPLOYED, labels, values)
        self._killed(operation)
        # `--output json` prints the release with its manifest.
        return dataclasses.replace(self._release(namespace, release, stored), manifest=stored.manifest)

    async def test(self, release: str, namespace: str, *, timeout_seconds: int = 300) -> TestRun:
        self._call("test", namespace, release)
        latest = self.revisions(namespace, release)[-1]
        passed = not self.state.tests_fail(self.state.values.get((namespace, release, latest.number), {}))
        self._killed("test")
        hooks = (TestHook("Pod", f"{release}-test", "Succeeded" if passed else "Failed"),)
        return TestRun(passed, "" if passed else f"pod {release}-test failed", hooks)

    async def rollback(self, release: str, namespace: str, options: RollbackOptions) -> None:
        self._call("rollback", namespace, release)
        revisions = self.revisions(namespace, release)
        good = [r for r in revisions[:-1] if r.status in (HelmStatus.DEPLOYED, HelmStatus.SUPERSEDED)]
        if not good:
            raise helm_adapter.ReleaseNotFound("rollback", "Error: no revision to roll back to")
        target = good[-1]
        values = self.state.values.get((namespace, release, target.number), {})
        self._store(
            namespace,
            release,
            HelmStatus.DEPLOYED,
            dict(target.labels),
            values,
            f"Rollback to {target.number}",
        )
        self._killed("rollback")

    async def uninstall(
        self, release: str, namespace: str, *, timeout_seconds: int = 300, keep_history: bool = False
    ) -> bool:
        self._call("uninstall", namespace, release)
        existed = self.state.releases.pop((namespace, release), None) is not None
        self._killed("uninstall")
        return existed

    async def status(self, release: str, namespace: str) -> Release:
        self.state.status_reads += 1
        revisions = self.revisions(namespace, release)
        if not revisions:
            raise helm_adapter.ReleaseNotFound("get", "Error: release: not found")
        return self._release(namespace, release, revisions[-1])

    async def history(self, release: str, namespace: str) -> list[Revision]:
        return [
            Revision(r.number, r.status.value, "podinfo", "1.0", r.description, "")
            for r in self.state.releases.get((namespace, release), [])
        ]

    # --- helpers ----------------------------------------------------------------------------------------------

    def _call(self, operation: str, namespace: str, release: str) -> None:
        self.state.calls.append((operation, f"{namespace}/{release}", self.identity))

    def _killed(self, operation: str) -> None:
        if self.state.killed_after == operation:
            self.state.killed_after = None
            raise OperatorKilled(operation)

    def _store(
        self,
        namespace: str,
        release: str,
        status: HelmStatus,
        labels: dict[str, str],
        values: Mapping[str, Any],
        description: str = "",
    ) -> StoredRevision:
        revisions = self.state.releases.setdefault((namespace, release), [])
        if status is HelmStatus.DEPLOYED:
            for revision in revisions:
                if revision.status is HelmStatus.DEPLOYED:
                    revision.status = HelmStatus.SUPERSEDED
        number = revisions[-1].number + 1 if revisions else 1
        stored = StoredRevision(number, status, labels, description, self.state.manifest)
        revisions.append(stored)
        self.state.values[namespace, release, number] = copy.deepcopy(dict(values))
        return stored

    def _release(self, namespace: str, name: str, revision: StoredRevision) -> Release:
        return Release(name, namespace, revision.number, revision.status.value, "podinfo", "6.5.0", "1.0")


class ReleaseIndex:
    """The watch-fed index of Helm's storage Secrets, as of the last `sync()` (`releases.ReleaseView`)."""

    def __init__(self, helm: FakeHelm) -> None:
        self.helm = helm
        self._seen: dict[tuple[str, str], list[IndexedRelease]] = {}

    def sync(self) -> None:
        self._seen = {}
        for (namespace, name), revisions in self.helm.state.releases.items():
            for revision in revisions:
                labels = {"name": name, "version": str(revision.number), "status": revision.status.value}
                entry = release_index_entry(namespace, {**revision.labels, **labels})
                assert entry is not None
                for key, indexed in entry.items():
                    self._seen.setdefault(key, []).append(indexed)

    def latest(self, namespace: str, name: str) -> IndexedRelease | None:
        return latest(self._seen.get((namespace, name), []))

    def revisions(self, namespace: str, name: str) -> Sequence[IndexedRelease]:
        return list(self._seen.get((namespace, name), []))


class LiveIndex(ReleaseIndex):
    """An index that has always caught up (the watch is faster than the pass)."""

    def latest(self, namespace: str, name: str) -> IndexedRelease | None:
        self.sync()
        return super().latest(namespace, name)

    def revisions(self, namespace: str, name: str) -> Sequence[IndexedRelease]:
        self.sync()
        return super().revisions(namespace, name)


@dataclass
class KubeState:
    helmreleases: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    namespaces: set[str] = field(default_factory=lambda: {"apps"})
    service_accounts: set[tuple[str, str]] = field(default_factory=set)
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    config_maps: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    #: Live objects by (kind, namespace, name).
    objects: dict[tuple[str, str | None, str], dict[str, Any]] = field(default_factory=dict)
    #: (HelmRelease name, type, reason, message) of every Event, in order.
    events: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: Every status patch, in order.
    status_writes: list[Mapping[str, Any]] = field(default_factory=list)
    deleted_pods: list[tuple[str, str, str | None]] = field(default_factory=list)
    annotated: list[tuple[str, str | None]] = field(default_factory=list)
    #: Reads of Helm's storage Secrets (each one a GET and a decoding).
    stored_reads: int = 0
    #: GETs of a HelmRelease, and of a Namespace.
    helmrelease_reads: int = 0
    namespace_reads: int = 0
    #: Status writes, numbered from 1 as `status_writes` counts them, that land but whose answer is lost (a read
    #: timeout): ApiUnavailable.
    lost_answers: set[int] = field(default_factory=set)
    #: Leases by (namespace, name), as the API server keeps them (resourceVersion checked on replace and delete).
    leases: dict[tuple[str, str], StoredLease] = field(default_factory=dict)
    #: Lease writes that fail with Conflict, one per write, while set (another writer came first).
    lease_conflicts: int = 0
    #: Lease writes fail with ApiUnavailable while set.
    leases_unavailable: bool = False
    #: Lists of Helm's storage answered before the API goes away for them (ApiUnavailable); None: always answered.
    storage_lists_left: int | None = None
    _versions: int = 0


class FakeKube:
    """The `KubeApi` of the reconcile pass over `KubeState`, with Helm's storage read from `helm`."""

    def __init__(self, helm: FakeHelm, state: KubeState | None = None, identity: str | None = None) -> None:
        self.helm = helm
        self.state = state or KubeState()
        self._identity = identity

    @property
    def identity(self) -> str | None:
        return self._identity

    async def close(self) -> None:
        return None

    def impersonating(self, namespace: str, service_account: str) -> FakeKube:
        return FakeKube(self.helm, self.state, f"ServiceAccount {namespace}/{service_account}")

    async def get_helmrelease(self, namespace: str, name: str) -> dict[str, Any]:
        if (namespace, name) not in self.state.helmreleases:
            raise NotFound(f"HelmRelease {namespace}/{name}: not found", 404)
        self.state.helmrelease_reads += 1
        return copy.deepcopy(self.state.helmreleases[namespace, name])

    async def patch_helmrelease_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        if (namespace, name) not in self.state.helmreleases:
            raise NotFound(f"HelmRelease {namespace}/{name}: not found", 404)
        self.state.status_writes.append(copy.deepcopy(dict(status)))
        body = self.state.helmreleases[namespace, name]
        merged = {**body.get("status", {}), **status}
        body["status"] = {key: value for key, value in merged.items() if value is not None}
        if len(self.state.status_writes) in self.state.lost_answers:
            raise ApiUnavailable(f"status of HelmRelease {namespace}/{name}: read timed out")

    async def post_event(self, ref: ObjectRef, event_type: str, reason: str, message: str) -> None:
        self.state.events.append((ref.name, event_type, reason, message))

    async def namespace_exists(self, namespace: str) -> bool:
        self.state.namespace_reads += 1
        return namespace in self.state.namespaces

    async def service_account_exists(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self.state.service_accounts

    async def config_map_data(self, namespace: str, name: str) -> dict[str, str]:
        return self._data(self.state.config_maps, "ConfigMap", namespace, name)

    async def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        return self._data(self.state.secrets, "Secret", namespace, name)

    async def stored_release(self, namespace: str, release: str, revision: int) -> StoredRelease | None:
        self.state.stored_reads += 1
        for stored in self.helm.revisions(namespace, release):
            if stored.number == revision:
                return StoredRelease(
                    release, namespace, revision, stored.status.value, "podinfo", "6.5.0", stored.manifest, {}
                )
        return None

    async def get_object(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        found = self.state.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def get_objects(self, refs: Sequence[ObjectRef]) -> list[dict[str, Any] | None]:
        return [
            await self.get_object(ref.api_version, ref.kind, ref.namespace or None, ref.name) for ref in refs
        ]

    async def annotate(self, objects: Iterable[ObjectRef], annotations: Mapping[str, str]) -> list[ObjectRef]:
        for ref in objects:
            self.state.annotated.append((ref.kind, ref.name))
            live = self.state.objects.get((ref.kind, ref.namespace, ref.name))
            if live is not None:
                live.setdefault("metadata", {}).setdefault("annotations", {}).update(annotations)
        return []

    async def delete_pod(self, namespace: str, name: str) -> None:
        self.state.deleted_pods.append((namespace, name, self._identity))

    async def release_storage_labels(self, namespace: str, release: str) -> list[dict[str, str]]:
        if self.state.storage_lists_left is not None:
            if not self.state.storage_lists_left:
                raise ApiUnavailable("Secrets: the API server is unavailable")
            self.state.storage_lists_left -= 1
        return [
            {
                **stored.labels,
                "owner": "helm",
                "name": release,
                "version": str(stored.number),
                "status": stored.status.value,
            }
            for stored in self.helm.revisions(namespace, release)
        ]

    async def read_lease(self, namespace: str, name: str) -> StoredLease | None:
        return self.state.leases.get((namespace, name))

    async def write_lease(
        self, namespace: str, name: str, holder: str, duration: float, *, replacing: str | None
    ) -> StoredLease:
        if self.state.leases_unavailable:
            raise ApiUnavailable(f"Lease {namespace}/{name}: unavailable", 503)
        current = self.state.leases.get((namespace, name))
        if self.state.lease_conflicts > 0:
            self.state.lease_conflicts -= 1
            raise Conflict(f"Lease {namespace}/{name}: conflict", 409)
        if replacing is None and current is not None:
            raise Conflict(f"Lease {namespace}/{name}: already exists", 409)
        if replacing is not None and current is None:
            raise NotFound(f"Lease {namespace}/{name}: not found", 404)
        if replacing is not None and current is not None and current.resource_version != replacing:
            raise Conflict(f"Lease {namespace}/{name}: the object has been modified", 409)
        self.state._versions += 1
        lease = StoredLease(
            name, namespace, holder, dt.datetime.now(dt.UTC), duration, str(self.state._versions)
        )
        self.state.leases[namespace, name] = lease
        return lease

    async def delete_lease(self, namespace: str, name: str, resource_version: str) -> None:
        current = self.state.leases.get((namespace, name))
        if current is None:
            return
        if current.resource_version != resource_version:
            raise Conflict(f"Lease {namespace}/{name}: precondition failed", 409)
        del self.state.leases[namespace, name]

    def _data(
        self, store: dict[tuple[str, str], dict[str, str]], kind: str, namespace: str, name: str
    ) -> dict[str, str]:
        if (namespace, name) not in store:
            raise NotFound(f"{kind} {namespace}/{name}: not found", 404)
        return dict(store[namespace, name])


class FakeCharts:
    """Fetches every repository chart into one directory; its content digest follows the version."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fetched: list[ChartSource] = []
        #: Raised by every fetch while set (a repository that is down, a chart that is not there).
        self.error: Exception | None = None

    async def fetch(self, source: ChartSource) -> FetchedChart:
        assert isinstance(source, RepositoryChart), "these tests use repository charts"
        self.fetched.append(source)
        if self.error is not None:
            raise self.error
        return FetchedChart(self.path, source.name, source.version, f"sha256:{source.version:0>64}")


class NoUrls:
    """A URL reader for HelmReleases that read no values from URLs."""

    async def read_text(self, url: str) -> str:
        raise AssertionError(f"no URL is read in these tests: {url}")

    async def close(self) -> None:
        return None
