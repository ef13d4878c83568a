"""The reconcile pass: observe, ask `plan.next_action`, act, record, repeat, until the plan settles.

Decisions live in `plan` and `conditions` (pure). A pass reads its inputs (`inputs`: chart, values), then loops:
`observe` says where the release stands, `plan` picks the one next action, `executor` runs it, `conditions` records
the outcome and `report` writes the status and the Event. One pass never runs the same action twice, never runs two
Helm operations on one release at once, and runs at most `settings.workers` Helm operations overall. Every outcome
reaches the user as a status condition and an Event before any error is raised to the handler, and every decision
is one log line (`report.Decision`).

Flux v2's requests (`requests`): a reset is applied before the pass decides, a force is planned until a deploy of
the pass ran, and the tokens are echoed in the status once the pass is done, whatever its outcome. A suspended
HelmRelease (`spec.suspend`) gets no pass at all: its status says so, and that is all.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, NoReturn

from prometheus_client import CollectorRegistry

from helmrelease.adapters import helm as helm_adapter
from helmrelease.adapters.charts import FetchedChart
from helmrelease.adapters.kube import ApiUnavailable, KubeError, NotFound, ObjectRef
from helmrelease.api.constants import API_VERSION, KIND, Action, ConditionStatus, ConditionType, Reason
from helmrelease.api.errors import SpecError
from helmrelease.api.ownership import Ownership
from helmrelease.api.resource import HelmRelease, parse_helmrelease
from helmrelease.api.sharding import in_shard
from helmrelease.api.spec import mask_urls
from helmrelease.api.status import HelmReleaseStatus
from helmrelease.reconcile import conditions
from helmrelease.reconcile.actions import deploys, terms
from helmrelease.reconcile.apis import ChartApi, HelmApi, KubeApi, acting_for
from helmrelease.reconcile.claims import HeldClaim, ReleaseClaims
from helmrelease.reconcile.digest import release_digest
from helmrelease.reconcile.drift import drift_summary
from helmrelease.reconcile.errors import ReconcileError
from helmrelease.reconcile.executor import ActionExecutor
from helmrelease.reconcile.inputs import Inputs, SourceError, UrlReader, chart_identity
from helmrelease.reconcile.masking import Masker
from helmrelease.reconcile.metrics import ActionResult, OperatorMetrics, PassResult
from helmrelease.reconcile.observe import ReleaseObserver, left_by, may_check_drift
from helmrelease.reconcile.plan import (
    Claim,
    Desired,
    ObservedRelease,
    Plan,
    Recorded,
    claimed_release,
    next_action,
    same_wait,
)
from helmrelease.reconcile.releases import ReleaseView, StoredReleaseView, force_carried_out, force_label
from helmrelease.reconcile.report import (
    NORMAL,
    RETRY_LATER,
    WARNING,
    Decision,
    Report,
    Reporter,
    Result,
    conditions_changed,
)
from helmrelease.reconcile.requests import Requests, pending_requests
from helmrelease.reconcile.settings import OperatorSettings
from helmrelease.reconcile.values import ValuesError

log = logging.getLogger(__name__)

#: Plans in one pass, at most. No action runs twice in a pass, so a pass ends by itself: the longest one the plan
#: allows acts six times (uninstall-previous → adopt, which fails and leaves the release pending → unlock →
#: upgrade → test, which fails → rollback), and its seventh plan, the retry upgrade, is left to the next pass; with
#: peering, taking a release's claim adds one plan (made again on the release read from the API), two for a rename
#: (the old release's claim for uninstall-previous, then the new one's).
MAX_STEPS: Final = 9
#: Retry delay (seconds) for problems that can clear by themselves.
RETRY_SOON: Final = 30.0
#: The API server could not be reached or answer: it is usually back within seconds (a restart, a failover).
RETRY_API: Final = 5.0
#: Seconds between checks for deletion while a helm operation runs.
DELETION_POLL: Final = 3.0
#: How long a namespace the API said exists is taken to exist without asking: a burst of installs into one
#: namespace asks once. One deleted meanwhile fails the install, and helm's error says why.
NAMESPACE_SEEN_FOR: Final = dt.timedelta(seconds=60)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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
class PassState(Report):
    """The state one reconcile pass carries between steps."""

    hr: HelmRelease
    #: What the last action of this pass left, until the watch-fed index catches up with it.
    after_action: ObservedRelease | None = None
    #: Masks the values that came from Secrets in helm's error text (built with the values).
    masker: Masker = field(default_factory=Masker)
    #: Flux v2's requests this pass is asked to handle; `force` goes once a deploy of the pass ran.
    requests: Requests = field(default_factory=Requests)
    #: The force token, once the forced deploy ran (then it is echoed).
    forced: str | None = None
    #: When the pass began (time.monotonic), for the duration of a settled decision.
    started: float = field(default_factory=time.monotonic)
    #: With peering: this replica's claims by release (namespace, name), each taken before the pass's first Helm
    #: action on that release (`plan.claimed_release`): the old release of a rename has its own.
    claims: dict[tuple[str, str], HeldClaim] = field(default_factory=dict)
    #: With peering: the claim of another replica this pass ended waiting for (it wrote no status: the holder's).
    waiting: Claim | None = None
    #: A Helm action of this pass ran (its outcome may wait for the pass's next status write).
    acted: bool = False

    @property
    def name(self) -> str:
        return f"{self.hr.metadata.namespace}/{self.hr.metadata.name}"


class Reconciler:
    """Runs reconcile passes for HelmReleases. One instance per operator, shared by every handler via memo."""

    def __init__(
        self,
        *,
        kube: KubeApi,
        helm: HelmApi,
        charts: ChartApi,
        urls: UrlReader,
        settings: OperatorSettings,
        clock: Callable[[], dt.datetime] = _now,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.kube = kube
        self.helm = helm
        self.charts = charts
        self.urls = urls
        self.settings = settings
        self.clock = clock
        self.inputs = Inputs(
            urls,
            state_dir=settings.state_dir,
            default_git_ref=settings.default_git_ref,
            git_ssh_key=settings.git_ssh_key,
            git_known_hosts=settings.git_known_hosts,
        )
        self.observer = ReleaseObserver(kube)
        self.executor = ActionExecutor(helm, kube)
        self.metrics = metrics if metrics is not None else OperatorMetrics.create(CollectorRegistry())
        self.metrics.workers.set(settings.workers)
        self.report = Reporter(kube, clock, written=self.metrics.status_written)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        #: Per HelmRelease (namespace, name): `status_key` of the status its last finished pass left in the API,
        #: `PASSED` while a pass runs (or after one that ended without knowing what it left); absent before the
        #: object's first pass in this process.
        self._known_status: dict[tuple[str, str], bytes] = {}
        self._object_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._workers = asyncio.Semaphore(settings.workers)
        #: Passes past their release lock at once (see `PASSES_PER_WORKER`).
        self._in_flight = asyncio.Semaphore(PASSES_PER_WORKER * settings.workers)
        #: With peering, replicas claim a release before running Helm on it (`claims`); standalone needs no claim.
        self.claims = (
            ReleaseClaims(kube, settings.claim_identity) if settings.claim_identity is not None else None
        )
        #: Per HelmRelease (namespace, name): the peer's claim it waits for, as last told in an Event
        #: (`plan.same_wait`): a wait writes no status, so no condition remembers that it was told.
        self._waits_told: dict[tuple[str, str], Claim] = {}
        #: When the API last said each namespace exists (`NAMESPACE_SEEN_FOR`); only existing ones are kept.
        self._namespaces_seen: dict[str, dt.datetime] = {}

    def describe(self) -> str:
        scope = ", ".join(self.settings.namespaces) or "all namespaces"
        return f"helm v{int(self.helm.major)} at {self.helm.settings.executable}, watching {scope}"

    async def close(self) -> None:
        await self.urls.close()
        await self.kube.close()

    # --- entry points -------------------------------------------------------------------------------------------

    def seen(self, body: Mapping[str, Any], *, deleted: bool) -> None:
        """A HelmRelease as the watch delivered it: its metrics series follow it, and go with it."""
        if deleted:
            metadata = body.get("metadata") or {}
            key = (str(metadata.get("namespace", "")), str(metadata.get("name", "")))
            self._known_status.pop(key, None)
            self._waits_told.pop(key, None)
            self.metrics.forget(*key)
        else:
            self.metrics.observe(body, default_git_ref=self.settings.default_git_ref)

    async def reconcile(
        self, body: Mapping[str, Any], releases: ReleaseView, *, check_drift: bool = False
    ) -> None:
        """Bring the release to the state the HelmRelease declares; raise ReconcileError when it is not there."""
        started = time.monotonic()
        ref = _ref(body)
        try:
            with self.metrics.passing(ref.namespace, ref.name):
                status = await self._reconcile(body, releases, check_drift=check_drift)
        except ReconcileError:
            self.metrics.pass_finished(PassResult.FAILURE, time.monotonic() - started)
            raise
        except Exception:
            self.metrics.pass_finished(PassResult.ERROR, time.monotonic() - started)
            raise
        if status is not None:
            ready = status.condition(ConditionType.READY)
            ended = ready is not None and ready.status is ConditionStatus.TRUE
            self.metrics.pass_finished(
                PassResult.SUCCESS if ended else PassResult.FAILURE, time.monotonic() - started
            )

    async def _reconcile(
        self, body: Mapping[str, Any], releases: ReleaseView, *, check_drift: bool
    ) -> HelmReleaseStatus | None:
        """One pass; the status it ended with, None when there was nothing to do (the object is going)."""
        with _api_errors():
            current = await self._start(body)
            if current.hr.deleting:
                return None
            async with self._release_lock(current.hr), self._in_flight:
                # Another pass (a resync, a values change) may have finished while this one waited for the lock:
                # the status in `body` is then stale, and deciding on it would repeat that pass's upgrade. Only
                # this operator writes the status, so a body carrying the status its last pass left is not stale
                # in that way, and needs no second read (a resync of an unchanged release makes none). Nor does
                # the first pass of an object in this process: nothing of ours wrote after the watch delivered it
                # (a fresh install, each object after a restart). Peers write too, so with claims it is read.
                key = (current.ref.namespace, current.ref.name)
                known = self._known_status.get(key)
                self._known_status[key] = PASSED
                first = known is None and self.claims is None
                if not first and not _is_known(known, current.hr.status):
                    try:
                        body = await self.kube.get_helmrelease(current.ref.namespace, current.ref.name)
                    except NotFound:
                        return None
                    current = await self._start(body)
                if not in_shard((body.get("metadata") or {}).get("labels"), self.settings.shard):
                    # Relabelled to another shard meanwhile: that shard's operator reconciles it now.
                    log.info("%s moved to another shard; not reconciled here", _name(body))
                    return None
                if current.hr.deleting:
                    return None
                try:
                    await self._run_pass(current, releases, check_drift=check_drift)
                except ReconcileError:
                    if current.waiting is None:
                        await self._end_pass(current)
                    elif current.acted:
                        # An action ran before the wait (a rename's uninstall-previous): its outcome is this
                        # pass's to write. No request is echoed (the wait handled none), nothing else is said.
                        await self.report.write(current)
                    self._known_status[key] = status_key(current.written)
                    raise
                except Exception:
                    # An API error (or a bug) after an action: what the action did is recorded if it can be.
                    with contextlib.suppress(KubeError):
                        await self.report.write(current)
                    raise
                finally:
                    await self._release_claims(current)
                await self._end_pass(current)
                # Reached only when every write of the pass was answered: a failed one (a timeout, say) may or
                # may not have landed, and the next pass reads the object afresh.
                self._known_status[key] = status_key(current.written)
                return current.status

    async def _end_pass(self, current: PassState) -> None:
        """The pass is done, whatever its outcome: echo the tokens it handled (a force only once it ran), and write
        what is not written yet (an action's outcome waits for the pass's next write, see `_act`)."""
        if current.requests:
            self._mark_handled(current)
        await self.report.write(current)

    @staticmethod
    def _mark_handled(current: PassState) -> None:
        requests = current.requests
        current.status = conditions.status_with_handled(
            current.status, reconcile=requests.reconcile, force=current.forced, reset=requests.reset
        )

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
        current = PassState(_ref(body), hr.status, hr.status, hr)
        desired = self._desired(hr, digest="", chart_revision="")
        recorded = Recorded.from_status(hr.status)
        if hr.spec.suspend:
            # As Flux v2 does: suspended means no Helm action, deletion included. Suspending before deleting is
            # how a HelmRelease is removed (or moved) without uninstalling what it installed.
            message = (
                f"The HelmRelease was deleted while suspended (spec.suspend: true): release {desired.release} is "
                "left installed; uninstall it with helm, or recreate the HelmRelease to manage it again"
            )
            await self.report.event(current, NORMAL, Reason.SUSPENDED, message, logged=True)
            self.report.decided(
                Decision(
                    current.name,
                    Action.NOTHING,
                    Reason.SUSPENDED,
                    Result.DECIDED,
                    time.monotonic() - current.started,
                    hr.status.helm_revision,
                    hr.status.revision,
                    message,
                )
            )
            return
        with _api_errors():
            async with self._release_lock(hr):
                try:
                    await self._finalize_release(current, desired, recorded, releases)
                finally:
                    await self._release_claims(current)

    async def _finalize_release(
        self, current: PassState, desired: Desired, recorded: Recorded, releases: ReleaseView
    ) -> None:
        """Uninstall what the HelmRelease being deleted made (under the release lock)."""
        hr = current.hr
        # A release left under an earlier releaseName or targetNamespace goes first, then the current one.
        previous = await self._observe_previous(hr, recorded, desired, releases)
        while True:
            observed = await self.observer.release(hr, hr.target_namespace, hr.release_name, releases)
            plan = next_action(
                desired, observed, recorded, now=self.clock(), previous=previous, deleting=True
            )
            old = recorded.previous_release(desired)
            target = claimed_release(plan.action, desired, recorded)
            if plan.action.runs_helm and target not in current.claims and self.claims is not None:
                taken = await self.claims.take(*target)
                if isinstance(taken, Claim):
                    plan = next_action(
                        desired,
                        observed,
                        recorded,
                        now=self.clock(),
                        previous=previous,
                        deleting=True,
                        claimed_by=taken,
                    )
                    await self._wait_for(current, taken, plan)
                    self._decided(current, desired, plan, observed, Result.DECIDED)
                    raise ReconcileError(
                        plan.reason, plan.message, temporary=True, retry_after=plan.retry_after or RETRY_SOON
                    )
                current.claims[target] = taken
            if plan.action is Action.UNINSTALL_PREVIOUS and old is not None:
                await self._uninstall_on_delete(current, *old)
                previous = None
                continue
            if plan.action is not Action.UNINSTALL:
                await self.report.event(current, NORMAL, plan.reason, plan.message, logged=True)
                self._decided(current, desired, plan, observed, Result.DECIDED)
                return
            await self._uninstall_on_delete(current, hr.target_namespace, hr.release_name)
            return

    async def _uninstall_on_delete(self, current: PassState, namespace: str, name: str) -> None:
        hr = current.hr
        missing = await self._missing_service_account(hr)
        if missing:
            message = f"{missing}: release {namespace}/{name} is not uninstalled until it exists"
            await self.report.event(current, WARNING, Reason.SERVICE_ACCOUNT_NOT_FOUND, message)
            raise ReconcileError(
                Reason.SERVICE_ACCOUNT_NOT_FOUND, message, temporary=True, retry_after=RETRY_LATER
            )
        masker = await self.inputs.secret_masker(hr, acting_for(self.kube, hr))
        started = time.monotonic()

        def decided(reason: Reason, result: Result, message: str) -> None:
            self.report.decided(
                Decision(
                    current.name,
                    Action.UNINSTALL,
                    reason,
                    result,
                    time.monotonic() - started,
                    None,
                    hr.status.revision,
                    message,
                )
            )

        try:
            async with self._worker():
                running = time.monotonic()  # helm's own time; `started` includes the wait for a worker
                try:
                    await self.executor.uninstall(hr, namespace, name, masker)
                except helm_adapter.HelmError:
                    self.metrics.helm_action(
                        Action.UNINSTALL, ActionResult.FAILURE, time.monotonic() - running
                    )
                    raise
                self.metrics.helm_action(Action.UNINSTALL, ActionResult.SUCCESS, time.monotonic() - running)
        except helm_adapter.HelmError as error:
            message = f"Uninstalling release {namespace}/{name} failed: {error.cause}"
            await self.report.event(current, WARNING, Reason.UNINSTALL_FAILED, message, logged=True)
            decided(Reason.UNINSTALL_FAILED, Result.FAILED, message)
            raise ReconcileError(Reason.UNINSTALL_FAILED, message, temporary=True) from error
        message = f"Uninstalled release {namespace}/{name}"
        await self.report.event(current, NORMAL, Reason.UNINSTALLED, message, logged=True)
        decided(Reason.UNINSTALLED, Result.SUCCEEDED, message)

    # --- one pass -----------------------------------------------------------------------------------------------

    async def _start(self, body: Mapping[str, Any]) -> PassState:
        """Parse the object; an invalid one is reported once and not retried until it changes."""
        ref = _ref(body)
        try:
            hr = parse_helmrelease(body)
        except SpecError as error:
            async with self._object_lock(ref):
                await self._report_invalid(ref, body, error)
        current = PassState(ref, hr.status, hr.status, hr)
        current.requests = pending_requests(hr.metadata.annotations, hr.status)
        tenancy = self._tenancy_problem(hr)
        if tenancy:
            current.requests = Requests(reconcile=current.requests.reconcile)
            self._mark_handled(current)
            raise await self.report.problem(
                current, Reason.INVALID_SPEC, tenancy, generation=hr.metadata.generation, temporary=False
            )
        return current

    async def _report_invalid(self, ref: ObjectRef, body: Mapping[str, Any], error: SpecError) -> NoReturn:
        """Report an object that does not parse, from its status as it is now (under the object's lock).

        Two passes of one object can start from the same body (the create handler and a resync timer, which kopf
        runs side by side); each would see no condition yet and post the Event. The one that waits here reads the
        status the first one wrote, finds nothing new to say, and posts nothing.
        """
        status = _status_of(body)
        with contextlib.suppress(KubeError):
            status = _status_of(await self.kube.get_helmrelease(ref.namespace, ref.name))
        # The requested pass is done: it found the object invalid (a reset or force waits for a valid one).
        requested = pending_requests(_annotations(body), status).reconcile
        stamped = conditions.status_with_handled(status, reconcile=requested, force=None, reset=None)
        raise await self.report.problem(
            Report(ref, stamped, status),
            error.reason,
            f"Invalid HelmRelease: {error}",
            generation=_generation(body),
            temporary=False,
        ) from None

    async def _run_pass(self, current: PassState, releases: ReleaseView, *, check_drift: bool) -> None:
        hr = current.hr
        if current.requests.reset is not None:
            # Before anything decides: the zeroed counters are what this pass (and the next) decide on.
            current.status = conditions.status_after_reset(current.status)
        if hr.spec.suspend:
            await self._suspended(current)
            return
        current.status = conditions.status_after_resume(current.status, self.clock())
        await self._require_target(current, releases)
        chart = await self._fetch_chart(current)
        values = await self._values(current, chart)
        try:
            digest = release_digest(hr, await chart_identity(hr, chart), values)
        except ValuesError as error:
            raise await self.report.problem(
                current, Reason.VALUES_ERROR, str(error), generation=None, temporary=False
            ) from None
        desired = self._desired(hr, digest=digest, chart_revision=chart.revision)

        done: set[Action] = set()
        drift_checked = False
        for _ in range(MAX_STEPS):
            recorded = Recorded.from_status(current.status)
            # Once claimed, a release is read from the API: the index may lag far behind under peering (a peer of
            # higher priority pauses our watches, not the pass that waited for this release's lock meanwhile).
            view = await self._view(current, releases, hr.target_namespace, hr.release_name)
            observed = await self.observer.release(
                hr, hr.target_namespace, hr.release_name, view, current.after_action
            )
            previous = await self._observe_previous(hr, recorded, desired, releases, current)
            # Drift is looked for once, before anything ran: what this pass deployed has not drifted yet.
            drift = None
            if check_drift and not done and not drift_checked:
                drift_checked = True
                drift = await self._drift(current, desired, observed)
            forced = current.requests.force is not None and current.forced is None
            force_applied = forced and _deployed_for(observed, current.requests.force)
            if force_applied or (forced and self._force_carried_out(hr, view, current.requests.force)):
                # Killed after the forced deploy finished (or failed and was rolled back): the force is done
                # (echoed with this pass), not repeated.
                current.forced, forced = current.requests.force, False
            plan = next_action(
                desired,
                observed,
                recorded,
                now=self.clock(),
                previous=previous,
                drifted=drift is not None,
                forced=forced,
                force_applied=force_applied,
            )
            if drift is not None:
                await self._tell_drift(current, drift, plan)
            if plan.action in done:
                # Never the same action twice in one pass: the next pass (a retry or the resync) decides again.
                await self.report.write(current)
                self._decided(current, desired, plan, observed, Result.DEFERRED)
                raise ReconcileError(plan.reason, plan.message, temporary=True, retry_after=RETRY_SOON)
            if plan.action is Action.RECORD and observed is not None:
                done.add(plan.action)
                await self._record(current, desired, plan, observed)
                continue
            if not plan.action.runs_helm:
                await self._settle(current, desired, plan, observed)
                return
            target = claimed_release(plan.action, desired, recorded)
            if target not in current.claims and self.claims is not None:
                taken = await self.claims.take(*target)
                if isinstance(taken, Claim):
                    # Another replica's pass runs Helm on this release (it was paused by peering mid-operation).
                    plan = next_action(
                        desired, observed, recorded, now=self.clock(), previous=previous, claimed_by=taken
                    )
                    await self._wait_for(current, taken, plan)
                    self._decided(current, desired, plan, observed, Result.DECIDED)
                    raise ReconcileError(
                        plan.reason, plan.message, temporary=True, retry_after=plan.retry_after or RETRY_SOON
                    )
                current.claims[target] = taken
                continue  # decide again on the release as the API has it now
            done.add(plan.action)
            if forced and deploys(plan.action):
                current.forced = current.requests.force
            await self._act(current, desired, plan, chart, values, observed, current.claims.get(target))
        # Not reached while MAX_STEPS covers the longest pass; should it be, the next pass goes on from here.
        await self.report.write(current)
        message = f"Release {desired.release} took {MAX_STEPS} steps in one pass; deciding again shortly"
        raise ReconcileError(Reason.PROGRESSING, message, temporary=True, retry_after=RETRY_SOON)

    @staticmethod
    def _force_carried_out(hr: HelmRelease, releases: ReleaseView, token: str | None) -> bool:
        if token is None:
            return False
        history = releases.revisions(hr.target_namespace, hr.release_name)
        return force_carried_out(history, (hr.metadata.namespace, hr.metadata.name), token)

    async def _settle(
        self, current: PassState, desired: Desired, plan: Plan, observed: ObservedRelease | None
    ) -> None:
        before = current.status
        current.status = conditions.status_after_decision(
            current.status, desired, plan, observed, self.clock()
        )
        warn = plan.action is Action.REFUSE or (plan.action is Action.WAIT_RETRY and plan.settled)
        if warn and conditions_changed(before, current.status):
            await self.report.event(current, WARNING, plan.reason, plan.message, logged=True)
        await self.report.write(current)
        self._decided(current, desired, plan, observed, Result.DECIDED)
        if plan.retry_after is not None:
            # A planned retry (a cluster-side failure): run again by ourselves then.
            raise ReconcileError(plan.reason, plan.message, temporary=True, retry_after=plan.retry_after)

    def _decided(
        self,
        current: PassState,
        desired: Desired,
        plan: Plan,
        observed: ObservedRelease | None,
        result: Result,
    ) -> None:
        self.report.decided(
            _decision(
                current, plan.action, plan.reason, result, current.started, observed, desired, plan.message
            )
        )

    async def _suspended(self, current: PassState) -> None:
        """spec.suspend: no Helm action and no drift check; the status says so (once), a force waits."""
        hr = current.hr
        # A force is not carried out while suspended: it stays pending, and runs when the release is resumed.
        current.requests = replace(current.requests, force=None)
        before = current.status
        current.status = conditions.status_when_suspended(
            current.status, generation=hr.metadata.generation, now=self.clock()
        )
        condition = current.status.condition(ConditionType.SUSPENDED)
        message = condition.message if condition is not None else "suspended"
        if conditions_changed(before, current.status):
            await self.report.event(current, NORMAL, Reason.SUSPENDED, message, logged=True)
        await self.report.write(current)
        self.report.decided(
            Decision(
                current.name,
                Action.NOTHING,
                Reason.SUSPENDED,
                Result.DECIDED,
                time.monotonic() - current.started,
                current.status.helm_revision,
                current.status.revision,
                message,
            )
        )

    async def _record(
        self, current: PassState, desired: Desired, plan: Plan, observed: ObservedRelease
    ) -> None:
        """Record a deploy Helm finished before the operator was stopped, as its own outcome would have been."""
        hr = current.hr
        current.status = conditions.status_after_record(current.status, desired, observed, self.clock())
        await self.executor.mark_resources(hr)
        await self.report.write(current)
        await self.report.event(current, NORMAL, plan.reason, plan.message, logged=True)
        self._decided(current, desired, plan, observed, Result.DECIDED)

    async def _act(
        self,
        current: PassState,
        desired: Desired,
        plan: Plan,
        chart: FetchedChart,
        values: Mapping[str, Any],
        observed: ObservedRelease | None,
        claim: HeldClaim | None,
    ) -> None:
        """Run one Helm action and record its outcome (status, then Event); cancelled if the object is deleted, or
        if this replica loses its `claim` on the release the action runs on (with peering)."""
        hr, action = current.hr, plan.action
        # Written only once helm has run this long (`_progress_shown`): most actions end sooner, and then their
        # outcome is the pass's one status write.
        current.status = conditions.status_before_action(current.status, desired, action, self.clock())
        # The decision's line comes with its outcome; this one says what runs meanwhile, for debugging.
        log.debug("HelmRelease %s: %s %s: %s", current.name, action, plan.reason, plan.message)
        started = time.monotonic()
        run = self.executor.run(
            action,
            hr,
            desired,
            chart=chart,
            values=values,
            observed=observed,
            previous=Recorded.from_status(current.status).previous_release(desired),
            masker=current.masker,
            force_request=current.forced if deploys(action) else None,
        )
        current.acted = True
        async with self._worker():
            running = time.monotonic()  # helm's own time; `started` includes the wait for a worker
            async with self._progress_shown(current):
                outcome = await self._unless_deleted(current.ref, run, claim)
        self.metrics.helm_action(action, _action_result(outcome), time.monotonic() - running)
        if outcome is None:
            reason = terms(action).failed
            message = (
                f"The HelmRelease is being deleted: {action.value} of release {hr.release_name} was cancelled"
            )
            lost = claim.lost if claim is not None else None
            if claim is not None and lost is not None:
                message = (
                    f"This replica lost its claim on release {claim.namespace}/{claim.name} ({lost}): "
                    f"{action.value} was cancelled, so that two replicas never run Helm on it at once; the next "
                    "pass recovers it"
                )
            await self.report.event(current, WARNING, reason, message, logged=True)
            self.report.decided(
                _decision(current, action, reason, Result.CANCELLED, started, observed, desired, message)
            )
            raise ReconcileError(reason, "cancelled by deletion", temporary=True, retry_after=1)
        current.after_action = left_by(action, desired, outcome) or current.after_action
        if outcome.manifest and outcome.helm_revision is not None and current.after_action is not None:
            self.observer.remember_manifest(
                hr.target_namespace,
                hr.release_name,
                outcome.helm_revision,
                current.after_action.digest_label,
                outcome.manifest,
            )
        current.status = conditions.status_after_action(
            current.status, desired, action, outcome, self.clock()
        )
        if outcome.succeeded and plan.reason is Reason.DRIFT_DETECTED:
            current.status = conditions.status_after_drift_corrected(
                current.status, release=desired.release, revision=outcome.helm_revision, now=self.clock()
            )
        if outcome.succeeded and deploys(action):
            # Before the write that records the deploy: killed in between, the restart records the deploy again
            # (AlreadyApplied) and marks them then; marked after it, they would stay unmarked for good.
            await self.executor.mark_resources(hr, outcome.manifest)
        if not outcome.succeeded:
            await self.report.write(current)
        # A success is written with the pass's next write: the settled status after it (Ready), the next action's
        # start, a problem, or the end of the pass (`_end_pass`, also when a later step fails). One status write
        # and one watch event less per deploy; killed before it, the restart records the release (AlreadyApplied).
        if outcome.succeeded and plan.reason is Reason.DRIFT_DETECTED:
            self.metrics.drift_corrected()
        told = _told(current, action, chart, outcome.succeeded)
        await self.report.event(
            current,
            NORMAL if outcome.succeeded else WARNING,
            terms(action).succeeded if outcome.succeeded else terms(action).failed,
            told,
            logged=True,
        )
        result = Result.SUCCEEDED if outcome.succeeded else Result.FAILED
        after = current.after_action or observed
        self.report.decided(_decision(current, action, plan.reason, result, started, after, desired, told))

    async def _unless_deleted(
        self,
        ref: ObjectRef,
        operation: Coroutine[Any, Any, conditions.Outcome],
        claim: HeldClaim | None = None,
    ) -> conditions.Outcome | None:
        """Run a helm operation, cancelling it (helm's process group goes with it) if the HelmRelease is deleted
        meanwhile, so a long `--wait` does not hold up the uninstall, or if this replica lost its `claim` on the
        release (a peer may take it). None when cancelled."""
        task = asyncio.ensure_future(operation)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=DELETION_POLL)
                if done:
                    return task.result()
                if (claim is not None and claim.lost is not None) or await self._being_deleted(ref):
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

    # --- what the pass reads before it decides -----------------------------------------------------------------

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

    async def _require_target(self, current: PassState, releases: ReleaseView) -> None:
        """The target namespace and the ServiceAccount to act as exist; else the pass stops, to retry later.

        A namespace that holds the release's storage Secret (as the watch-fed index has it) exists: the API is
        asked only about one that does not, so a resync of an installed release makes no call for it.
        """
        namespace = current.hr.target_namespace
        stored = releases.latest(namespace, current.hr.release_name) is not None
        if not stored and not await self._namespace_exists(namespace):
            raise await self.report.problem(
                current,
                Reason.TARGET_NAMESPACE_NOT_FOUND,
                f"Target namespace {namespace!r} does not exist; create it or fix spec.targetNamespace",
                generation=None,
                temporary=True,
            )
        missing = await self._missing_service_account(current.hr)
        if missing:
            raise await self.report.problem(
                current, Reason.SERVICE_ACCOUNT_NOT_FOUND, missing, generation=None, temporary=True
            )

    async def _namespace_exists(self, namespace: str) -> bool:
        """Whether `namespace` exists: from memory within `NAMESPACE_SEEN_FOR` of the API saying so."""
        now = self.clock()
        seen = self._namespaces_seen.get(namespace)
        if seen is not None and now - seen < NAMESPACE_SEEN_FOR:
            return True
        if not await self.kube.namespace_exists(namespace):
            self._namespaces_seen.pop(namespace, None)
            return False
        self._namespaces_seen[namespace] = now
        return True

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

    async def _fetch_chart(self, current: PassState) -> FetchedChart:
        hr = current.hr
        try:
            source = await self.inputs.chart_source(hr, acting_for(self.kube, hr))
            chart = await self.charts.fetch(source)
        except ApiUnavailable:
            raise  # not the chart's fault: the pass is retried soon
        except (helm_adapter.HelmError, KubeError) as error:
            message = mask_urls(error.cause if isinstance(error, helm_adapter.HelmError) else str(error))
            if current.status.revision and current.status.helm_revision:
                # Nothing is undone for a source that failed: say what keeps running meanwhile.
                message += f"; the release keeps chart {current.status.revision}"
            before = current.status
            current.status = conditions.status_after_chart_fetch(
                current.status, chart=hr.spec.chart.label, error=message, now=self.clock()
            )
            if conditions_changed(before, current.status):  # a retry that fails the same way says nothing new
                await self.report.event(current, WARNING, Reason.CHART_FETCH_FAILED, message)
            await self.report.write(current)
            raise ReconcileError(
                Reason.CHART_FETCH_FAILED, message, temporary=True, retry_after=RETRY_LATER
            ) from error
        current.status = conditions.status_after_chart_fetch(
            current.status, chart=hr.spec.chart.label, error=None, now=self.clock()
        )
        return chart

    async def _values(self, current: PassState, chart: FetchedChart) -> dict[str, Any]:
        """The values, read as the HelmRelease's ServiceAccount when it names one; the masker for helm's errors
        goes on `current`."""
        hr = current.hr
        try:
            values, current.masker = await self.inputs.values(hr, chart.path, acting_for(self.kube, hr))
        except (SourceError, ValuesError) as error:
            raise await self.report.problem(
                current, Reason.VALUES_ERROR, str(error), generation=None, temporary=True
            ) from None
        return values

    async def _observe_previous(
        self,
        hr: HelmRelease,
        recorded: Recorded,
        desired: Desired,
        releases: ReleaseView,
        current: PassState | None = None,
    ) -> ObservedRelease | None:
        """The release recorded under an earlier releaseName or targetNamespace, if there is one; read from the API
        once this pass claimed it, like the desired one."""
        old = recorded.previous_release(desired)
        if old is None:
            return None
        view = releases if current is None else await self._view(current, releases, *old)
        return await self.observer.release(hr, *old, view)

    async def _drift(
        self, current: PassState, desired: Desired, observed: ObservedRelease | None
    ) -> str | None:
        """What of the release's resources differs from its manifest (`drift.drift_summary`), recorded in the
        `Drifted` condition; None when nothing does or they could not be compared."""
        if observed is None or not may_check_drift(current.status, desired, observed):
            return None
        drifts = await self.observer.drift(current.hr, observed)
        if drifts is None:
            return None
        summary = drift_summary(desired.release, drifts)
        current.status = conditions.status_after_drift_check(
            current.status, self.clock(), release=desired.release, drift=summary
        )
        return summary

    async def _tell_drift(self, current: PassState, summary: str, plan: Plan) -> None:
        """The DriftDetected Event: what differs, and what the pass does about it."""
        if plan.reason is Reason.DRIFT_DETECTED:
            then = "upgrading the release to correct it"
        else:
            then = f"not corrected now: {plan.message}"
        message = conditions.trim_message(f"{summary}\n{then}")
        self.metrics.drift_detected()
        await self.report.event(current, WARNING, Reason.DRIFT_DETECTED, message)

    @contextlib.asynccontextmanager
    async def _worker(self) -> AsyncIterator[None]:
        """One of the `settings.workers` slots for a Helm operation; waiting for it and holding it are counted."""
        with self.metrics.waiting_for_worker():
            await self._workers.acquire()
        try:
            with self.metrics.holding_worker():
                yield
        finally:
            self._workers.release()

    @contextlib.asynccontextmanager
    async def _progress_shown(self, current: PassState) -> AsyncIterator[None]:
        """Write the in-progress status (Installing, Upgrading, ...) if the action in the block still runs after
        `settings.progress_after` seconds, and be done with that write when the block ends.

        A write before every action cost each deploy a status PATCH and a watch event to every watcher, for a
        state most actions leave within a second. A write that has begun is awaited, never cancelled: landing
        after the outcome's write, it would set the status back. It failing only costs the progress shown."""
        writing = False

        async def show() -> None:
            nonlocal writing
            await asyncio.sleep(self.settings.progress_after)
            writing = True
            await self.report.write(current)

        shown = asyncio.create_task(show(), name=f"progress of {current.name}")
        try:
            yield
        finally:
            if not writing:
                shown.cancel()
            try:
                await asyncio.wait({shown})
            except asyncio.CancelledError:
                shown.cancel()
                raise
            if not shown.cancelled() and (error := shown.exception()) is not None:
                if not isinstance(error, KubeError):
                    raise error
                log.warning("HelmRelease %s: could not show the action in progress: %s", current.name, error)

    async def _view(
        self, current: PassState, releases: ReleaseView, namespace: str, name: str
    ) -> ReleaseView:
        """Where the pass reads release `namespace/name` from: the index, or once the pass claimed that release,
        Helm's storage as it is now (one list call)."""
        if (namespace, name) not in current.claims:
            return releases
        labels = await self.kube.release_storage_labels(namespace, name)
        return StoredReleaseView(namespace, labels)

    async def _wait_for(self, current: PassState, claim: Claim, plan: Plan) -> None:
        """The pass waits for another replica's `claim`: a Normal Event says so once per wait (not on each retry),
        and no status is written, since the holder writes it meanwhile."""
        current.waiting = claim
        key = (current.ref.namespace, current.ref.name)
        if not same_wait(self._waits_told.get(key), claim):
            await self.report.event(current, NORMAL, plan.reason, plan.message, logged=True)
        self._waits_told[key] = claim

    async def _release_claims(self, current: PassState) -> None:
        """The pass is over: let its claims go, so a peer waits no longer than needed; a pass that did not end
        waiting ended any wait told of."""
        if current.waiting is None:
            self._waits_told.pop((current.ref.namespace, current.ref.name), None)
        claims, current.claims = current.claims, {}
        if self.claims is not None:
            for claim in claims.values():
                await self.claims.release(claim)

    @contextlib.asynccontextmanager
    async def _object_lock(self, ref: ObjectRef) -> AsyncIterator[None]:
        """One HelmRelease object at a time, for what happens before its release name is known."""
        lock = self._object_locks.setdefault((ref.namespace, ref.name), asyncio.Lock())
        async with lock:
            yield

    @contextlib.asynccontextmanager
    async def _release_lock(self, hr: HelmRelease) -> AsyncIterator[None]:
        key = (hr.target_namespace, hr.release_name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            yield


#: Passes that may fetch charts, build values and wait for a Helm worker at once, per worker: enough to keep every
#: worker busy with the next pass ready, few enough that 1000 HelmReleases created at once do not each hold their
#: chart, values and decision in memory until a worker is free (what the reconcile workers of controller-runtime
#: bound too). The others wait after parsing, holding only their object.
PASSES_PER_WORKER = 4

#: `_known_status` of an object a pass of this process has started on, with no status known to be its last.
PASSED = b""


def status_key(status: HelmReleaseStatus) -> bytes:
    """A short digest of a status, to recognise it again without keeping it (16 bytes per HelmRelease)."""
    return hashlib.blake2b(status.model_dump_json().encode(), digest_size=16).digest()


def _is_known(known: bytes | None, status: HelmReleaseStatus) -> bool:
    """Whether `status` (as a pass found it) is the one the last finished pass of the object left."""
    return known is not None and known == status_key(status)


def _deployed_for(observed: ObservedRelease | None, force: str | None) -> bool:
    """Whether the release's latest revision is ours and a finished deploy carrying out force request `force`."""
    return (
        observed is not None
        and force is not None
        and observed.ownership is Ownership.OURS
        and not observed.status.is_pending
        and observed.force_label == force_label(force)
    )


def _action_result(outcome: conditions.Outcome | None) -> ActionResult:
    if outcome is None:
        return ActionResult.CANCELLED
    return ActionResult.SUCCESS if outcome.succeeded else ActionResult.FAILURE


def _told(current: PassState, action: Action, chart: FetchedChart, succeeded: bool) -> str:
    """What an action's Event says: for a deploy that worked, which chart it deployed; otherwise the sentence of
    the condition its outcome set, which names the action once ("Upgrading ... failed: <helm's cause>")."""
    name = f"{current.hr.target_namespace}/{current.hr.release_name}"
    deployed = {
        Action.INSTALL: f"Installed release {name} from chart {chart.name} {chart.revision}",
        Action.UPGRADE: f"Upgraded release {name} to chart {chart.name} {chart.revision}",
        Action.ADOPT: f"Adopted release {name} and upgraded it to chart {chart.name} {chart.revision}",
    }
    if succeeded and action in deployed:
        return deployed[action]
    condition = current.status.condition(terms(action).condition)
    if condition is not None:
        return condition.message
    return f"{terms(action).verb} release {name} {'succeeded' if succeeded else 'failed'}"


def _decision(
    current: PassState,
    action: Action,
    reason: str,
    result: Result,
    started: float,
    release: ObservedRelease | None,
    desired: Desired,
    message: str,
) -> Decision:
    return Decision(
        helmrelease=current.name,
        action=action,
        reason=reason,
        result=result,
        duration=time.monotonic() - started,
        revision=release.revision if release is not None and release.revision > 0 else None,
        chart=desired.chart_revision or None,
        message=message,
    )


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


def _annotations(body: Mapping[str, Any]) -> dict[str, str]:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return (
        {str(k): v for k, v in annotations.items() if isinstance(v, str)}
        if isinstance(annotations, Mapping)
        else {}
    )


def _generation(body: Mapping[str, Any]) -> int | None:
    generation = (body.get("metadata") or {}).get("generation")
    return int(generation) if isinstance(generation, int) else None


def _status_of(body: Mapping[str, Any]) -> HelmReleaseStatus:
    try:
        return HelmReleaseStatus.model_validate(body.get("status") or {})
    except ValueError:
        return HelmReleaseStatus()
