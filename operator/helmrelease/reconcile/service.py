"""The reconcile pass: observe, ask `plan.next_action`, act through the adapters, record, repeat.

Decisions live in `plan` and `conditions` (pure); this module only gathers their inputs (chart, values, the release
as Helm stores it, drift) and carries out the one action they choose. One pass never runs the same action twice,
never runs two Helm operations on one release at once, and runs at most `settings.workers` Helm operations overall.
Every outcome reaches the user as a status condition and an Event before any error is raised to the handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import aiohttp
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from helmrelease.adapters import helm as helm_adapter
from helmrelease.adapters.charts import ChartFetcher, FetchedChart
from helmrelease.adapters.kube import ApiUnavailable, Forbidden, KubeClient, KubeError, NotFound, ObjectRef
from helmrelease.api.constants import API_VERSION, KIND, Action, HelmStatus, Reason
from helmrelease.api.errors import SpecError
from helmrelease.api.ownership import ANTECEDENT_ANNOTATION, Ownership, ownership_of
from helmrelease.api.resource import HelmRelease, parse_helmrelease
from helmrelease.api.spec import GitChartSource, SecretKeySelector, mask_urls, too_deep_message
from helmrelease.api.status import HelmReleaseStatus
from helmrelease.reconcile import conditions
from helmrelease.reconcile.digest import ChartIdentity, release_digest
from helmrelease.reconcile.drift import Drift, find_drift, parse_manifest
from helmrelease.reconcile.errors import ReconcileError
from helmrelease.reconcile.inputs import Inputs, MissingSource, SourceError, directory_digest
from helmrelease.reconcile.masking import Masker, masker_for
from helmrelease.reconcile.plan import Desired, ObservedRelease, Plan, Recorded, next_action
from helmrelease.reconcile.releases import IndexedRelease, ReleaseView, digest_label, owner_labels
from helmrelease.reconcile.settings import OperatorSettings
from helmrelease.reconcile.values import ValuesError, ValuesLayer, compose_values

log = logging.getLogger(__name__)

#: Actions in one pass, at most: e.g. unlock → upgrade → test → rollback → upgrade (retry) → test.
MAX_STEPS: Final = 8
#: Retry delays (seconds) for problems that can clear by themselves.
RETRY_SOON: Final = 30.0
RETRY_LATER: Final = 120.0
#: The API server could not be reached or answer: it is usually back within seconds (a restart, a failover).
RETRY_API: Final = 5.0
#: Seconds between checks for deletion while a helm operation runs.
DELETION_POLL: Final = 3.0

_HELM_STATUSES = {status.value: status for status in HelmStatus}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _observed(entry: IndexedRelease, ownership: Ownership, owner: str | None) -> ObservedRelease:
    return ObservedRelease(
        revision=entry.revision,
        status=_HELM_STATUSES.get(entry.status, HelmStatus.UNKNOWN),
        ownership=ownership,
        owner=owner,
        digest_label=entry.digest_label,
    )


@contextlib.contextmanager
def _api_errors() -> Iterator[None]:
    """The one place an API failure becomes the handler's retry: an unreachable API server (`ApiUnavailable`: one
    log line from kopf, no traceback) is tried again in a few seconds, anything else a little later."""
    try:
        yield
    except ApiUnavailable as error:
        raise ReconcileError("ApiUnavailable", str(error), temporary=True, retry_after=RETRY_API) from None
    except KubeError as error:
        raise ReconcileError("ApiError", str(error), temporary=True, retry_after=RETRY_SOON) from None


@dataclass
class _Report:
    """Where a pass reports to: the object, the status being built and the status last written."""

    ref: ObjectRef
    status: HelmReleaseStatus
    written: HelmReleaseStatus


@dataclass
class _Pass(_Report):
    """The state one reconcile pass carries between steps."""

    hr: HelmRelease
    #: What the last action of this pass left, until the watch-fed index catches up with it.
    after_action: ObservedRelease | None = None
    #: Masks the values that came from Secrets in helm's error text (built with the values).
    masker: Masker = field(default_factory=Masker)


class Reconciler:
    """Runs reconcile passes for HelmReleases. One instance per operator, shared by every handler via memo."""

    def __init__(
        self,
        *,
        kube: KubeClient,
        helm: helm_adapter.HelmCommand,
        charts: ChartFetcher,
        http: aiohttp.ClientSession,
        settings: OperatorSettings,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self.kube = kube
        self.helm = helm
        self.charts = charts
        self.http = http
        self.settings = settings
        self.inputs = Inputs(
            http,
            state_dir=settings.state_dir,
            default_git_ref=settings.default_git_ref,
            git_ssh_key=settings.git_ssh_key,
        )
        self.clock = clock
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._workers = asyncio.Semaphore(settings.workers)
        self._yaml = YAML(typ="safe", pure=True)

    def describe(self) -> str:
        scope = ", ".join(self.settings.namespaces) or "all namespaces"
        return f"helm v{int(self.helm.major)} at {self.helm.settings.executable}, watching {scope}"

    async def close(self) -> None:
        await self.http.close()

    # --- entry points -------------------------------------------------------------------------------------------

    async def reconcile(
        self, body: Mapping[str, Any], releases: ReleaseView, *, check_drift: bool = False
    ) -> None:
        """Bring the release to the state the HelmRelease declares; raise ReconcileError when it is not there."""
        with _api_errors():
            current = await self._start(body)
            if current.hr.deleting:
                return
            async with self._release_lock(current.hr):
                # Another pass (a resync, a values change) may have finished while this one waited for the lock:
                # the status in `body` is then stale, and deciding on it would repeat that pass's upgrade.
                try:
                    fresh = await self.kube.get_helmrelease(current.ref.namespace, current.ref.name)
                except NotFound:
                    return
                current = await self._start(fresh)
                if current.hr.deleting:
                    return
                await self._run_pass(current, releases, check_drift=check_drift, deleting=False)

    async def reconcile_by_name(self, namespace: str, name: str, releases: ReleaseView) -> None:
        """Reconcile after something it depends on changed (a values ConfigMap or Secret)."""
        with _api_errors():
            try:
                body = await self.kube.get_helmrelease(namespace, name)
            except NotFound:
                return
        await self.reconcile(body, releases)

    async def finalize(self, body: Mapping[str, Any], releases: ReleaseView) -> None:
        """The HelmRelease is being deleted: uninstall its release if, and only if, it is ours."""
        try:
            hr = parse_helmrelease(body)
        except SpecError:
            # Nothing valid was ever installed from an object that does not parse, so nothing of ours exists.
            log.info("HelmRelease %s is invalid; nothing to uninstall", _name(body))
            return
        current = _Pass(_ref(body), hr.status, hr.status, hr)
        desired = self._desired(hr, digest="", chart_revision="")
        recorded = Recorded.from_status(hr.status)
        with _api_errors():
            async with self._release_lock(hr):
                # A release left under an earlier releaseName or targetNamespace goes first, then the current one.
                previous = await self._observe_previous(current, recorded, desired, releases)
                while True:
                    plan = next_action(
                        desired,
                        await self._observe(current, releases),
                        recorded,
                        now=self.clock(),
                        previous=previous,
                        deleting=True,
                    )
                    old = recorded.previous_release(desired)
                    if plan.action is Action.UNINSTALL_PREVIOUS and old is not None:
                        await self._uninstall_on_delete(current, *old)
                        previous = None
                        continue
                    if plan.action is not Action.UNINSTALL:
                        await self._event(current, "Normal", plan.reason, plan.message)
                        return
                    await self._uninstall_on_delete(current, hr.target_namespace, hr.release_name)
                    return

    async def _uninstall_on_delete(self, current: _Pass, namespace: str, name: str) -> None:
        hr = current.hr
        missing = await self._missing_service_account(hr)
        if missing:
            message = f"{missing}: release {namespace}/{name} is not uninstalled until it exists"
            await self._event(current, "Warning", Reason.SERVICE_ACCOUNT_NOT_FOUND, message)
            raise ReconcileError(
                Reason.SERVICE_ACCOUNT_NOT_FOUND, message, temporary=True, retry_after=RETRY_LATER
            )
        helm = self._helm_for(hr, await self._current_masker(hr))
        try:
            async with self._workers:
                await helm.uninstall(name, namespace, timeout_seconds=hr.spec.timeout)
        except helm_adapter.HelmError as error:
            message = f"Uninstalling release {namespace}/{name} failed: {error.cause}"
            await self._event(current, "Warning", Reason.UNINSTALL_FAILED, message)
            raise ReconcileError(Reason.UNINSTALL_FAILED, message, temporary=True) from error
        await self._event(current, "Normal", Reason.UNINSTALLED, f"Uninstalled release {namespace}/{name}")

    # --- one pass -----------------------------------------------------------------------------------------------

    async def _start(self, body: Mapping[str, Any]) -> _Pass:
        """Parse the object; an invalid one is reported once and not retried until it changes."""
        ref = _ref(body)
        previous = _status_of(body)
        try:
            hr = parse_helmrelease(body)
        except SpecError as error:
            await self._problem(
                _Report(ref, previous, previous),
                error.reason,
                f"Invalid HelmRelease: {error}",
                generation=_generation(body),
                temporary=False,
            )
        current = _Pass(ref, hr.status, hr.status, hr)
        tenancy = self._tenancy_problem(hr)
        if tenancy:
            await self._problem(
                current, Reason.INVALID_SPEC, tenancy, generation=hr.metadata.generation, temporary=False
            )
        return current

    async def _run_pass(
        self, current: _Pass, releases: ReleaseView, *, check_drift: bool, deleting: bool
    ) -> None:
        hr = current.hr
        if not await self._target_namespace_exists(current):
            return
        await self._require_service_account(current)
        chart = await self._fetch_chart(current)
        values = await self._values(current, chart)
        if isinstance(hr.spec.chart, GitChartSource):
            # The chart's own files, not the commit: a commit elsewhere in the repository changes nothing.
            content = await asyncio.to_thread(directory_digest, chart.path)
            identity = ChartIdentity.of_git(hr.spec.chart, chart.revision, content)
        else:
            identity = ChartIdentity.of_repository(hr.spec.chart, chart.source_digest)
        try:
            digest = release_digest(hr, identity, values)
        except ValuesError as error:
            await self._problem(current, Reason.VALUES_ERROR, str(error), generation=None, temporary=False)
        desired = self._desired(hr, digest=digest, chart_revision=chart.revision)

        done: set[Action] = set()
        for _ in range(MAX_STEPS):
            recorded = Recorded.from_status(current.status)
            observed = await self._observe(current, releases)
            previous = await self._observe_previous(current, recorded, desired, releases)
            drifted = False
            if (
                check_drift
                and not done
                and observed is not None
                and self._may_check_drift(current, desired, observed)
            ):
                drifted = await self._check_drift(current, observed)
            plan = next_action(
                desired,
                observed,
                recorded,
                now=self.clock(),
                previous=previous,
                drifted=drifted,
                deleting=deleting,
            )
            if plan.action in done:
                # Never the same action twice in one pass: the next pass (a retry or the resync) decides again.
                await self._write(current)
                raise ReconcileError(plan.reason, plan.message, temporary=True, retry_after=RETRY_SOON)
            if plan.action is Action.RECORD and observed is not None:
                done.add(plan.action)
                await self._record(current, desired, plan, observed)
                continue
            if not plan.action.runs_helm:
                await self._settle(current, desired, plan, observed)
                return
            done.add(plan.action)
            await self._act(current, desired, plan, chart, values, observed)
        await self._write(current)

    async def _settle(
        self, current: _Pass, desired: Desired, plan: Plan, observed: ObservedRelease | None
    ) -> None:
        before = current.status
        current.status = conditions.status_after_decision(
            current.status, desired, plan, observed, self.clock()
        )
        warn = plan.action is Action.REFUSE or (plan.action is Action.WAIT_RETRY and plan.settled)
        if warn and _conditions_changed(before, current.status):
            await self._event(current, "Warning", plan.reason, plan.message)
        await self._write(current)
        if plan.retry_after is not None:
            # A planned retry (a cluster-side failure) or a running operation: run again by ourselves then.
            raise ReconcileError(plan.reason, plan.message, temporary=True, retry_after=plan.retry_after)

    async def _record(self, current: _Pass, desired: Desired, plan: Plan, observed: ObservedRelease) -> None:
        """Record a deploy Helm finished before the operator was stopped, as its own outcome would have been."""
        hr = current.hr
        log.info(
            "%s/%s: %s (%s) %s",
            hr.metadata.namespace,
            hr.metadata.name,
            plan.action,
            plan.reason,
            plan.message,
        )
        current.status = conditions.status_after_record(current.status, desired, observed, self.clock())
        await self._write(current)
        await self._mark_resources(hr)
        await self._event(current, "Normal", plan.reason, plan.message)

    # --- inputs -------------------------------------------------------------------------------------------------

    def _desired(self, hr: HelmRelease, *, digest: str, chart_revision: str) -> Desired:
        return Desired.of(
            hr, digest=digest, chart_revision=chart_revision, adopt_unmarked=self.settings.adopt_unmarked
        )

    def _tenancy_problem(self, hr: HelmRelease) -> str | None:
        if not self.settings.require_service_account:
            return None
        if not hr.spec.service_account_name:
            return (
                "spec.serviceAccountName is required by this operator (multi-tenancy): name a ServiceAccount of "
                f"namespace {hr.metadata.namespace} for Helm to act as"
            )
        if hr.target_namespace != hr.metadata.namespace:
            return (
                f"spec.targetNamespace {hr.target_namespace!r} is not allowed: with multi-tenancy a HelmRelease "
                f"installs into its own namespace ({hr.metadata.namespace})"
            )
        return None

    async def _target_namespace_exists(self, current: _Pass) -> bool:
        namespace = current.hr.target_namespace
        exists = await self.kube.namespace_exists(namespace)
        if not exists:
            await self._problem(
                current,
                Reason.TARGET_NAMESPACE_NOT_FOUND,
                f"Target namespace {namespace!r} does not exist; create it or fix spec.targetNamespace",
                generation=None,
                temporary=True,
            )
        return exists

    async def _missing_service_account(self, hr: HelmRelease) -> str | None:
        """Why the HelmRelease's ServiceAccount cannot be acted as: it does not exist. None when it does (or none is
        named). Impersonating a missing account would still carry the `system:serviceaccounts` groups."""
        account = hr.spec.service_account_name
        if not account:
            return None
        namespace = hr.metadata.namespace
        try:
            exists = await self.kube.service_account_exists(namespace, account)
        except KubeError as error:
            raise ReconcileError("ApiError", str(error), temporary=True, retry_after=RETRY_SOON) from error
        if exists:
            return None
        return (
            f"ServiceAccount {namespace}/{account} does not exist; create it or fix spec.serviceAccountName"
        )

    async def _require_service_account(self, current: _Pass) -> None:
        missing = await self._missing_service_account(current.hr)
        if missing:
            await self._problem(
                current, Reason.SERVICE_ACCOUNT_NOT_FOUND, missing, generation=None, temporary=True
            )

    async def _fetch_chart(self, current: _Pass) -> FetchedChart:
        hr = current.hr
        try:
            source = await self.inputs.chart_source(hr, self._kube_for(hr))
            chart = await self.charts.fetch(source)
        except ApiUnavailable:
            raise  # not the chart's fault: the pass is retried soon
        except (helm_adapter.HelmError, KubeError) as error:
            message = mask_urls(error.cause if isinstance(error, helm_adapter.HelmError) else str(error))
            current.status = conditions.status_after_chart_fetch(
                current.status, chart=_chart_label(hr), error=message, now=self.clock()
            )
            await self._event(current, "Warning", Reason.CHART_FETCH_FAILED, message)
            await self._write(current)
            raise ReconcileError(
                Reason.CHART_FETCH_FAILED, message, temporary=True, retry_after=RETRY_LATER
            ) from error
        current.status = conditions.status_after_chart_fetch(
            current.status, chart=_chart_label(hr), error=None, now=self.clock()
        )
        return chart

    async def _values(self, current: _Pass, chart: FetchedChart) -> dict[str, Any]:
        """valueFileSecrets, valuesFrom in order, then spec.values. Secret contents never reach logs or status:
        read as the HelmRelease's ServiceAccount when it names one, and masked in helm's errors (`current.masker`)."""
        hr = current.hr
        kube = self._kube_for(hr)
        layers: list[ValuesLayer] = []
        secret_values: list[object] = []
        for source in hr.spec.values_sources:
            try:
                text = await self.inputs.read_values_source(hr, source, chart.path, kube)
            except SourceError as unread:
                if source.optional and isinstance(unread, MissingSource):
                    continue
                await self._problem(
                    current, Reason.VALUES_ERROR, str(unread), generation=None, temporary=True
                )
            try:
                layers.append(ValuesLayer(source.label, self._yaml.load(text)))
                if isinstance(source, SecretKeySelector):
                    secret_values.append(layers[-1].values)
            except (YAMLError, RecursionError) as error:
                # ruamel's composer recurses: YAML nested ~1000 deep exhausts the stack, like too-deep JSON.
                deep = isinstance(error, RecursionError)
                problem = too_deep_message() if deep else getattr(error, "problem", None) or "not valid YAML"
                await self._problem(
                    current,
                    Reason.VALUES_ERROR,
                    f"{source.label}: {problem}",
                    generation=None,
                    temporary=True,
                )
        current.masker = masker_for(secret_values)
        try:
            return compose_values(layers, hr.spec.values)
        except ValuesError as error:
            await self._problem(current, Reason.VALUES_ERROR, str(error), generation=None, temporary=True)
            raise

    async def _current_masker(self, hr: HelmRelease) -> Masker:
        """For helm outside a pass (the uninstall): the Secret-sourced values as they are now, as far as they can
        still be read (a pre-delete hook the API server rejects would quote them too)."""
        kube = self._kube_for(hr)
        values: list[object] = []
        for source in hr.spec.values_sources:
            if isinstance(source, SecretKeySelector):
                with contextlib.suppress(SourceError, YAMLError, RecursionError):
                    values.append(self._yaml.load(await self.inputs.read_object_source(hr, source, kube)))
        return masker_for(values)

    async def _observe(self, current: _Pass, releases: ReleaseView) -> ObservedRelease | None:
        """The release as Helm stores it, from the watch-fed index; no helm process, no API call when ours."""
        hr = current.hr
        return await self._observe_release(
            hr, hr.target_namespace, hr.release_name, releases, current.after_action
        )

    async def _observe_previous(
        self, current: _Pass, recorded: Recorded, desired: Desired, releases: ReleaseView
    ) -> ObservedRelease | None:
        """The release recorded under an earlier releaseName or targetNamespace, if there is one."""
        old = recorded.previous_release(desired)
        if old is None:
            return None
        return await self._observe_release(current.hr, *old, releases)

    async def _observe_release(
        self,
        hr: HelmRelease,
        namespace: str,
        name: str,
        releases: ReleaseView,
        after: ObservedRelease | None = None,
    ) -> ObservedRelease | None:
        entry = releases.latest(namespace, name)
        if after is not None and (entry is None or entry.revision < after.revision):
            return after  # the index has not seen our last action yet
        if entry is None:
            return after if after is not None and after.status is not HelmStatus.UNINSTALLED else None
        if entry.owner is not None:
            ours = (entry.owner_namespace, entry.owner_name) == (hr.metadata.namespace, hr.metadata.name)
            owner = f"{entry.owner_namespace}:helmrelease/{entry.owner_name}"
            return _observed(entry, Ownership.OURS if ours else Ownership.OTHER, owner)
        # No owner labels: installed by hand, by another tool, or by the Flux v1 Helm Operator, which marked the
        # release's resources with the antecedent annotation. Look at them (rare: once, before adoption).
        antecedent = await self._antecedent(hr, namespace, name, entry.revision)
        ownership = ownership_of(antecedent, namespace=hr.metadata.namespace, name=hr.metadata.name)
        return _observed(entry, ownership, antecedent)

    async def _antecedent(self, hr: HelmRelease, namespace: str, release: str, revision: int) -> str | None:
        """Flux v1's owner mark on the release's objects. The stored manifest names them, and whoever may write
        Helm's storage may write it: read them as the HelmRelease's ServiceAccount, skipping what it may not read."""
        stored = await self.kube.stored_release(namespace, release, revision)
        if stored is None:
            return None
        kube = self._kube_for(hr)
        for obj in parse_manifest(stored.manifest, namespace)[:5]:
            try:
                live = await kube.get_object(obj.api_version, obj.kind, obj.namespace, obj.name)
            except Forbidden:
                continue
            annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
            if annotations.get(ANTECEDENT_ANNOTATION):
                return str(annotations[ANTECEDENT_ANNOTATION])
        return None

    def _may_check_drift(self, current: _Pass, desired: Desired, observed: ObservedRelease) -> bool:
        recorded = current.status
        return (
            observed.ownership is Ownership.OURS
            and observed.status is HelmStatus.DEPLOYED
            and recorded.last_applied_digest == desired.digest
            and recorded.helm_revision == observed.revision
        )

    async def _check_drift(self, current: _Pass, observed: ObservedRelease) -> bool:
        hr = current.hr
        try:
            stored = await self.kube.stored_release(hr.target_namespace, hr.release_name, observed.revision)
            if stored is None:
                return False
            drifts: list[Drift] = []
            # The manifest is tenant-writable: compare only what the HelmRelease's account may read.
            kube = self._kube_for(hr)
            for obj in parse_manifest(stored.manifest, hr.target_namespace):
                live = await kube.get_object(obj.api_version, obj.kind, obj.namespace, obj.name)
                drift = find_drift(obj, live)
                if drift is not None:
                    drifts.append(drift)
        except KubeError as error:
            log.warning("drift check of %s/%s failed: %s", hr.target_namespace, hr.release_name, error)
            return False
        current.status = current.status.model_copy(update={"last_drift_check": self.clock()})
        if drifts:
            summary = "; ".join(drift.describe() for drift in drifts[:5])
            more = f" (and {len(drifts) - 5} more)" if len(drifts) > 5 else ""
            await self._event(
                current,
                "Warning",
                Reason.DRIFT_DETECTED,
                f"Drift in release {hr.release_name}: {summary}{more}; correcting it",
            )
        return bool(drifts)

    # --- actions ------------------------------------------------------------------------------------------------

    async def _act(
        self,
        current: _Pass,
        desired: Desired,
        plan: Plan,
        chart: FetchedChart,
        values: Mapping[str, Any],
        observed: ObservedRelease | None,
    ) -> None:
        hr = current.hr
        action = plan.action
        current.status = conditions.status_before_action(current.status, desired, action, self.clock())
        await self._write(current)
        log.info(
            "%s/%s: %s (%s) %s", hr.metadata.namespace, hr.metadata.name, action, plan.reason, plan.message
        )
        helm = self._helm_for(hr, current.masker)
        previous = Recorded.from_status(current.status).previous_release(desired)
        async with self._workers:
            outcome = await self._unless_deleted(
                current, self._run_helm(helm, hr, desired, action, chart, values, observed, previous)
            )
        if outcome is None:
            await self._event(
                current,
                "Warning",
                _failure_reason(action),
                f"The HelmRelease is being deleted: {action.value} of release {hr.release_name} "
                "was cancelled",
            )
            raise ReconcileError(
                _failure_reason(action), "cancelled by deletion", temporary=True, retry_after=1
            )
        if outcome.helm_revision is not None and outcome.release_status is not None:
            made = action in (Action.INSTALL, Action.UPGRADE, Action.ADOPT) and outcome.succeeded
            current.after_action = ObservedRelease(
                outcome.helm_revision,
                outcome.release_status,
                Ownership.OURS,
                digest_label=digest_label(desired.digest) if made else None,
            )
        elif action in (Action.UNLOCK, Action.UNINSTALL) and outcome.succeeded:
            current.after_action = ObservedRelease(0, HelmStatus.UNINSTALLED, Ownership.OURS)
        recorded_action = Action.UPGRADE if action is Action.ADOPT else action
        current.status = conditions.status_after_action(
            current.status, desired, recorded_action, outcome, self.clock()
        )
        await self._write(current)
        if outcome.succeeded:
            if action in (Action.INSTALL, Action.UPGRADE, Action.ADOPT):
                await self._mark_resources(hr)
            await self._event(current, "Normal", _success_reason(action), _told(current, action, chart, True))
        else:
            await self._event(
                current, "Warning", _failure_reason(action), _told(current, action, chart, False)
            )

    async def _run_helm(
        self,
        helm: helm_adapter.HelmCommand,
        hr: HelmRelease,
        desired: Desired,
        action: Action,
        chart: FetchedChart,
        values: Mapping[str, Any],
        observed: ObservedRelease | None,
        previous: tuple[str, str] | None,
    ) -> conditions.Outcome:
        name, namespace, spec = hr.release_name, hr.target_namespace, hr.spec
        try:
            match action:
                case Action.INSTALL | Action.UPGRADE | Action.ADOPT:
                    options = helm_adapter.DeployOptions(
                        timeout=spec.timeout,
                        wait=spec.wait_enabled,
                        force=spec.force_upgrade and action is not Action.INSTALL,
                        skip_crds=spec.skip_crds,
                        disable_openapi_validation=spec.disable_openapi_validation,
                        reset_values=not spec.reuse_values,
                        max_history=spec.max_history,
                        description=f"{action.value} by HelmRelease {hr.metadata.namespace}/{hr.metadata.name}",
                        force_conflicts=True,
                        # The digest too: a restart after helm returned knows what this revision holds.
                        labels=owner_labels(hr.metadata.namespace, hr.metadata.name, desired.digest),
                    )
                    deploy = (
                        helm_adapter.DeployAction.INSTALL
                        if action is Action.INSTALL
                        else helm_adapter.DeployAction.UPGRADE
                    )
                    release = await helm.upgrade_install(
                        name, namespace, chart.path, values, options, action=deploy
                    )
                    return conditions.Outcome(
                        True, helm_revision=release.revision, release_status=_helm_status(release.status)
                    )
                case Action.TEST:
                    run = await helm.test(name, namespace, timeout_seconds=spec.test.timeout)
                    if spec.test.cleanup:
                        await self._cleanup_test_pods(hr, run.hooks)
                    state = await self._status_after(helm, hr)
                    return conditions.Outcome(
                        run.passed, error=run.detail, helm_revision=state[0], release_status=state[1]
                    )
                case Action.ROLLBACK:
                    await helm.rollback(
                        name,
                        namespace,
                        helm_adapter.RollbackOptions(
                            timeout=spec.rollback.timeout,
                            force=spec.rollback.force,
                            recreate=spec.rollback.recreate,
                            disable_hooks=spec.rollback.disable_hooks,
                            wait=spec.rollback.wait,
                            max_history=spec.max_history,
                        ),
                    )
                    return await self._rollback_outcome(helm, hr)
                case Action.UNLOCK:
                    return await self._unlock(helm, hr, observed)
                case Action.UNINSTALL:
                    await helm.uninstall(name, namespace, timeout_seconds=spec.timeout)
                    return conditions.Outcome(True)
                case Action.UNINSTALL_PREVIOUS if previous is not None:
                    await helm.uninstall(previous[1], previous[0], timeout_seconds=spec.timeout)
                    return conditions.Outcome(True)
        except helm_adapter.HelmError as error:
            state = await self._status_after(helm, hr)
            cause = error.cause
            if isinstance(error, helm_adapter.Timeout):
                cause = f"{cause}; {conditions.timeout_note(action, spec)}"
            return conditions.Outcome(
                False,
                error=cause,
                helm_revision=state[0],
                release_status=state[1],
                cluster_side=error.cluster_side,
            )
        raise AssertionError(f"{action} is not a helm action")

    async def _rollback_outcome(self, helm: helm_adapter.HelmCommand, hr: HelmRelease) -> conditions.Outcome:
        """Where a rollback left the release, from `helm history`: its newest revision is the rollback, and its
        description names the revision rolled back to ("Rollback to 1"), which a message must not guess."""
        try:
            history = await helm.history(hr.release_name, hr.target_namespace)
        except helm_adapter.HelmError as error:
            log.warning("helm history %s/%s failed: %s", hr.target_namespace, hr.release_name, error)
            revision, status = await self._status_after(helm, hr)
            return conditions.Outcome(True, helm_revision=revision, release_status=status)
        latest = max(history, key=lambda entry: entry.revision, default=None)
        if latest is None:
            return conditions.Outcome(True)
        return conditions.Outcome(
            True,
            helm_revision=latest.revision,
            release_status=_helm_status(latest.status),
            rolled_back_to=latest.rollback_target,
        )

    async def _unless_deleted(
        self, current: _Pass, operation: Coroutine[Any, Any, conditions.Outcome]
    ) -> conditions.Outcome | None:
        """Run a helm operation, cancelling it (helm's process group goes with it) if the HelmRelease is deleted
        meanwhile, so a long `--wait` does not hold up the uninstall. None when cancelled."""
        task = asyncio.ensure_future(operation)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=DELETION_POLL)
                if done:
                    return task.result()
                if await self._being_deleted(current.ref):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    return None
        finally:
            if not task.done():  # we were cancelled ourselves (operator shutdown): take helm down with us
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _being_deleted(self, ref: ObjectRef) -> bool:
        try:
            body = await self.kube.get_helmrelease(ref.namespace, ref.name)
        except NotFound:
            return True
        except KubeError:
            return False
        return bool((body.get("metadata") or {}).get("deletionTimestamp"))

    async def _unlock(
        self, helm: helm_adapter.HelmCommand, hr: HelmRelease, observed: ObservedRelease | None
    ) -> conditions.Outcome:
        """Recover a release left pending-* by a process that died (pyhelm3's recovery, in our loop).

        pending-install has nothing to go back to: uninstall it (the next step installs afresh). pending-upgrade and
        pending-rollback go back to the previous revision, which Helm keeps.
        """
        name, namespace = hr.release_name, hr.target_namespace
        status = observed.status if observed else HelmStatus.UNKNOWN
        if status in (HelmStatus.PENDING_INSTALL, HelmStatus.UNINSTALLING) or (
            observed and observed.revision <= 1
        ):
            await helm.uninstall(name, namespace, timeout_seconds=hr.spec.timeout)
            return conditions.Outcome(True, release_status=HelmStatus.UNINSTALLED)
        await helm.rollback(
            name,
            namespace,
            helm_adapter.RollbackOptions(timeout=hr.spec.timeout, max_history=hr.spec.max_history),
        )
        revision, release_status = await self._status_after(helm, hr)
        return conditions.Outcome(True, helm_revision=revision, release_status=release_status)

    async def _status_after(
        self, helm: helm_adapter.HelmCommand, hr: HelmRelease
    ) -> tuple[int | None, HelmStatus | None]:
        """Where the release stands after an action, from helm itself (failures are rare; accuracy matters)."""
        try:
            release = await helm.status(hr.release_name, hr.target_namespace)
        except helm_adapter.ReleaseNotFound:
            return None, None
        except helm_adapter.HelmError as error:
            log.warning("helm status %s/%s failed: %s", hr.target_namespace, hr.release_name, error)
            return None, None
        return release.revision, _helm_status(release.status)

    async def _cleanup_test_pods(self, hr: HelmRelease, hooks: Any) -> None:
        """Delete the test Pods helm names; as the HelmRelease's ServiceAccount, since Helm's storage names them."""
        kube = self._kube_for(hr)
        for hook in hooks:
            if hook.kind != "Pod":
                continue
            try:
                await kube.delete_pod(hr.target_namespace, hook.name)
            except KubeError as error:
                log.warning(
                    "could not delete test Pod of %s/%s: %s", hr.target_namespace, hr.release_name, error
                )

    async def _mark_resources(self, hr: HelmRelease) -> None:
        """Annotate the release's resources with the antecedent, as Flux v1 did (its users' tooling reads it).

        The list comes from Helm's stored release, which whoever may write Secrets in the release's namespace may
        edit: the writes are made as the HelmRelease's ServiceAccount, and one it may not make is only a warning.
        """
        kube = self._kube_for(hr)
        refused: list[str] = []
        try:
            latest = await self._helm_for(hr).status(hr.release_name, hr.target_namespace)
            stored = await self.kube.stored_release(hr.target_namespace, hr.release_name, latest.revision)
            if stored is None:
                return
            for obj in parse_manifest(stored.manifest, hr.target_namespace):
                ref = ObjectRef(obj.api_version, obj.kind, obj.namespace or hr.target_namespace, obj.name)
                try:
                    await kube.annotate([ref], {ANTECEDENT_ANNOTATION: hr.antecedent})
                except Forbidden:
                    refused.append(obj.label)
        except (KubeError, helm_adapter.HelmError) as error:
            log.warning(
                "could not annotate resources of %s/%s: %s", hr.target_namespace, hr.release_name, error
            )
        if refused:
            log.warning(
                "did not annotate %s of release %s/%s: forbidden for %s",
                ", ".join(refused),
                hr.target_namespace,
                hr.release_name,
                kube.identity or "the operator",
            )

    def _helm_for(self, hr: HelmRelease, masker: Masker | None = None) -> helm_adapter.HelmCommand:
        """Helm as the HelmRelease's ServiceAccount (when it names one), masking `masker`'s values in its errors."""
        account = hr.spec.service_account_name
        helm = self.helm.impersonating(hr.metadata.namespace, account) if account else self.helm
        return helm.redacting(masker) if masker is not None else helm

    def _kube_for(self, hr: HelmRelease) -> KubeClient:
        """Who reads and writes on the HelmRelease's behalf: its ServiceAccount, impersonated, when it names one
        (always, with --require-service-account); the operator itself otherwise."""
        account = hr.spec.service_account_name
        return self.kube.impersonating(hr.metadata.namespace, account) if account else self.kube

    # --- reporting ----------------------------------------------------------------------------------------------

    async def _problem(
        self, current: _Report, reason: Reason, message: str, *, generation: int | None, temporary: bool
    ) -> NoReturn:
        """Report a problem that stops the pass before Helm runs, then raise it to the handler."""
        before = current.status
        current.status = conditions.status_after_problem(
            current.status, reason=reason, message=message, generation=generation, now=self.clock()
        )
        if _conditions_changed(before, current.status):
            await self._event(current, "Warning", reason, message)
        await self._write(current)
        raise ReconcileError(reason, message, temporary=temporary, retry_after=RETRY_LATER)

    async def _write(self, current: _Report) -> None:
        """Patch the status if it changed; other API failures reach the entry point's `_api_errors`."""
        if current.status == current.written:
            return
        try:
            await self.kube.patch_helmrelease_status(
                current.ref.namespace, current.ref.name, current.status.as_patch()
            )
        except NotFound:
            return  # deleted meanwhile
        current.written = current.status

    async def _event(self, current: _Report, event_type: str, reason: str, message: str) -> None:
        log.log(
            logging.WARNING if event_type == "Warning" else logging.INFO,
            "%s/%s %s: %s",
            current.ref.namespace,
            current.ref.name,
            reason,
            message,
        )
        try:
            await self.kube.post_event(current.ref, event_type, str(reason), message)
        except KubeError as error:
            log.warning(
                "could not post Event %s for %s/%s: %s",
                reason,
                current.ref.namespace,
                current.ref.name,
                error,
            )

    @contextlib.asynccontextmanager
    async def _release_lock(self, hr: HelmRelease) -> AsyncIterator[None]:
        key = (hr.target_namespace, hr.release_name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            yield


def _conditions_changed(before: HelmReleaseStatus, after: HelmReleaseStatus) -> bool:
    """Whether a condition says something new: a repeated decision is not worth another Event."""

    def said(status: HelmReleaseStatus) -> set[tuple[str, str, str, str]]:
        return {(c.type, c.status, c.reason, c.message) for c in status.conditions}

    return said(before) != said(after)


def _helm_status(text: str) -> HelmStatus:
    return _HELM_STATUSES.get(text, HelmStatus.UNKNOWN)


def _told(current: _Pass, action: Action, chart: FetchedChart, succeeded: bool) -> str:
    """What an action's Event says: the sentence of the condition its outcome set, which names the action once
    ("Upgrading ... failed: <helm's cause>"), or for a deploy that worked, which chart it deployed."""
    fallback = _success_message(current.hr, action, chart)
    if succeeded and action in (Action.INSTALL, Action.UPGRADE, Action.ADOPT):
        return fallback
    condition = current.status.condition(conditions.condition_of(action))
    return condition.message if condition is not None else fallback


def _success_reason(action: Action) -> Reason:
    return {
        Action.INSTALL: Reason.INSTALL_SUCCEEDED,
        Action.UPGRADE: Reason.UPGRADE_SUCCEEDED,
        Action.ADOPT: Reason.ADOPTED,
        Action.TEST: Reason.TEST_SUCCEEDED,
        Action.ROLLBACK: Reason.ROLLBACK_SUCCEEDED,
        Action.UNLOCK: Reason.UNLOCKED,
        Action.UNINSTALL: Reason.UNINSTALLED,
        Action.UNINSTALL_PREVIOUS: Reason.UNINSTALLED,
    }[action]


def _failure_reason(action: Action) -> Reason:
    return {
        Action.INSTALL: Reason.INSTALL_FAILED,
        Action.UPGRADE: Reason.UPGRADE_FAILED,
        Action.ADOPT: Reason.ADOPT_FAILED,
        Action.TEST: Reason.TEST_FAILED,
        Action.ROLLBACK: Reason.ROLLBACK_FAILED,
        Action.UNLOCK: Reason.UNLOCK_FAILED,
        Action.UNINSTALL: Reason.UNINSTALL_FAILED,
        Action.UNINSTALL_PREVIOUS: Reason.UNINSTALL_FAILED,
    }[action]


def _success_message(hr: HelmRelease, action: Action, chart: FetchedChart) -> str:
    name = f"{hr.target_namespace}/{hr.release_name}"
    return {
        Action.INSTALL: f"Installed release {name} from chart {chart.name} {chart.revision}",
        Action.UPGRADE: f"Upgraded release {name} to chart {chart.name} {chart.revision}",
        Action.ADOPT: f"Adopted release {name} and upgraded it to chart {chart.name} {chart.revision}",
        Action.TEST: f"Tests of release {name} passed",
        Action.ROLLBACK: f"Rolled back release {name} to its previous revision",
        Action.UNLOCK: f"Recovered release {name} from a pending state left by an interrupted operation",
        Action.UNINSTALL: f"Uninstalled release {name}",
        Action.UNINSTALL_PREVIOUS: f"Uninstalled the release this HelmRelease made before {name}",
    }[action]


def _chart_label(hr: HelmRelease) -> str:
    """The chart as messages name it; credentials in its URL are masked (api.spec.display_url)."""
    return hr.spec.chart.label


def _ref(body: Mapping[str, Any]) -> ObjectRef:
    metadata = body.get("metadata") or {}
    return ObjectRef(
        API_VERSION,
        KIND,
        str(metadata.get("namespace", "")),
        str(metadata.get("name", "")),
        str(metadata.get("uid", "")),
    )


def _name(body: Mapping[str, Any]) -> str:
    ref = _ref(body)
    return f"{ref.namespace}/{ref.name}"


def _generation(body: Mapping[str, Any]) -> int | None:
    generation = (body.get("metadata") or {}).get("generation")
    return int(generation) if isinstance(generation, int) else None


def _status_of(body: Mapping[str, Any]) -> HelmReleaseStatus:
    try:
        return HelmReleaseStatus.model_validate(body.get("status") or {})
    except ValueError:
        return HelmReleaseStatus()
