"""kopf wiring of the reconciler: parse the trigger, call the reconcile core, map its errors to kopf's. Nothing else.

Handlers are registered on a registry built by `build_registry`, not on kopf's global one, so tests and the CLI get
a fresh set each time. Dependencies (helm, the Kubernetes client, the chart fetcher) come from `memo`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

import kopf

from helmrelease.adapters import memory, watch_health
from helmrelease.adapters.kube import KubeError, ObjectRef
from helmrelease.api.constants import API_VERSION, GROUP, KIND, PLURAL, VERSION, Reason
from helmrelease.api.sharding import SHARD_LABEL, shard_finalizer
from helmrelease.handlers.bookkeeping import (
    DigestDiffBaseStorage,
    TolerantProgressStorage,
    unreadable_bookkeeping,
)
from helmrelease.reconcile.errors import ReconcileError
from helmrelease.reconcile.inputs import sources_of
from helmrelease.reconcile.releases import IndexedRelease, ReleaseIndexView, release_index_entry
from helmrelease.reconcile.requests import wants_a_pass
from helmrelease.reconcile.service import Reconciler
from helmrelease.reconcile.settings import OperatorSettings

ANNOTATIONS_PREFIX = "helmrelease.helm.fluxcd.io"
#: Unreadable annotations remembered as reported (a hostile tenant could garble them endlessly).
REPORTED_MAX: Final = 4096

log = logging.getLogger(__name__)


def _map(error: ReconcileError) -> kopf.TemporaryError | kopf.PermanentError:
    """The one place reconcile outcomes become kopf's retry semantics."""
    if error.temporary:
        return kopf.TemporaryError(str(error), delay=error.retry_after)
    return kopf.PermanentError(str(error))


def _not_helm(value: Any, **_: Any) -> bool:
    """A Secret's `owner` label (`value`, None when absent) is not Helm's, the label of its release storage."""
    return bool(value != "helm")


def build_registry(operator_settings: OperatorSettings, dependencies: Any) -> kopf.OperatorRegistry:
    """All handlers, bound to `settings`; `dependencies` is an async factory of the `Reconciler` (see cli.run)."""
    registry = kopf.OperatorRegistry()
    settings = operator_settings
    jitter = settings.resync_interval * 0.1
    # Every HelmRelease handler, timer and index serves this operator's shard only (api.sharding), by kopf's label
    # filters: an object relabelled away gets its resync timer stopped and this shard's finalizer removed (each
    # shard has its own, see api.sharding.shard_finalizer). Not by a label selector on the watch: an object that
    # leaves a selected watch arrives as DELETED with its old labels, and kopf would keep its timer running.
    shard: Mapping[str, Any] = {SHARD_LABEL: kopf.ABSENT if settings.shard is None else settings.shard}

    # A registry of our own has no login handler: kopf's, by the kubernetes client's rules (in a Pod its service
    # account, elsewhere KUBECONFIG or ~/.kube/config), as the adapters log in. A failure leaves kopf without
    # credentials, and kopf says so, as with its default registry.
    kopf.on.login(id="login_via_client", errors=kopf.ErrorsMode.IGNORED, registry=registry)(
        kopf.login_via_client
    )

    @kopf.on.startup(id="configure", registry=registry)
    async def configure(memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
        settings_: kopf.OperatorSettings = kwargs["settings"]
        settings_.persistence.finalizer = shard_finalizer(operator_settings.shard)
        # Digests, not the spec, in the diff-base annotation (annotations are capped at 256 KiB); unreadable
        # bookkeeping of either kind reads as absent (see handlers.bookkeeping).
        settings_.persistence.progress_storage = TolerantProgressStorage(prefix=ANNOTATIONS_PREFIX)
        settings_.persistence.diffbase_storage = DigestDiffBaseStorage(prefix=ANNOTATIONS_PREFIX)
        # Watches that stall silently are kopf's best-known pitfall: bound both sides. The server closes each watch
        # request well within the liveness bound, after a bookmark: even a quiet stream shows it is alive.
        renew = watch_health.server_timeout(settings.watch_stall_after)
        settings_.watching.server_timeout = renew
        settings_.watching.client_timeout = renew + 30
        settings_.watching.connect_timeout = 30
        # No kopf worker limit: with indexes, every object's worker waits until all objects are indexed, so a
        # limit below the object count deadlocks at startup. Helm concurrency is bounded by --workers instead.
        # Our own Events say what happened; kopf would add one per handler run (every resync) at INFO.
        settings_.posting.level = logging.WARNING
        memo.reconciler = await dependencies(operator_settings)
        memo.trimming = asyncio.create_task(memory.release_free_memory_periodically(), name="malloc_trim")
        logger.info("helmrelease operator ready: %s", memo.reconciler.describe())

    @kopf.on.cleanup(id="close", registry=registry)
    async def close(memo: kopf.Memo, **_: Any) -> None:
        trimming: asyncio.Task[None] | None = getattr(memo, "trimming", None)
        if trimming is not None:
            trimming.cancel()
        reconciler: Reconciler | None = getattr(memo, "reconciler", None)
        if reconciler is not None:
            await reconciler.close()

    # Helm's own release storage, indexed from the watch stream: observing hundreds of releases costs no helm process
    # and no API call per resync.
    @kopf.index("", "v1", "secrets", labels={"owner": "helm"}, id="helm_releases", registry=registry)
    async def helm_releases(
        namespace: str | None, labels: Mapping[str, str], **_: Any
    ) -> dict[tuple[str, str], IndexedRelease] | None:
        return release_index_entry(namespace or "", labels)

    # Which HelmReleases read which ConfigMaps and Secrets, so a change there reconciles exactly those.
    @kopf.index(GROUP, VERSION, PLURAL, id="values_sources", labels=shard, registry=registry)
    async def values_sources(
        namespace: str | None, name: str, spec: Mapping[str, Any], **_: Any
    ) -> dict[tuple[str, str, str], tuple[str, str]]:
        return dict.fromkeys(sources_of(namespace or "", spec), (namespace or "", name))

    # Unreadable bookkeeping annotations already reported, by object, annotation and content: once each.
    reported: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    async def _report_unreadable_bookkeeping(reconciler: Reconciler, body: kopf.Body) -> None:
        metadata = body.get("metadata") or {}
        for problem in unreadable_bookkeeping(metadata.get("annotations") or {}, ANNOTATIONS_PREFIX):
            key = (str(metadata.get("uid", "")), problem.annotation, problem.digest)
            if key in reported:
                continue
            reported[key] = None
            while len(reported) > REPORTED_MAX:
                reported.popitem(last=False)
            ref = ObjectRef(
                API_VERSION, KIND, metadata.get("namespace", ""), metadata.get("name", ""), key[0]
            )
            log.warning(
                "%s/%s %s: %s", ref.namespace, ref.name, Reason.UNREADABLE_ANNOTATION, problem.message
            )
            try:
                await reconciler.kube.post_event(
                    ref, "Warning", Reason.UNREADABLE_ANNOTATION, problem.message
                )
            except KubeError as error:
                log.warning("could not post Event for %s/%s: %s", ref.namespace, ref.name, error)

    async def _reconcile(
        memo: kopf.Memo, body: kopf.Body, helm_releases: kopf.Index[Any, Any], *, check_drift: bool
    ) -> None:
        reconciler: Reconciler = memo.reconciler
        await _report_unreadable_bookkeeping(reconciler, body)
        try:
            await reconciler.reconcile(body, ReleaseIndexView(helm_releases), check_drift=check_drift)
        except ReconcileError as error:
            raise _map(error) from None

    # Every HelmRelease event, the initial listing included: the per-object metrics follow the objects.
    @kopf.on.event(GROUP, VERSION, PLURAL, id="metrics", labels=shard, registry=registry)
    async def helmrelease_seen(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        reconciler: Reconciler = memo.reconciler
        reconciler.seen(body, deleted=type == "DELETED")

    @kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", labels=shard, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", labels=shard, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", id="reconcile", labels=shard, registry=registry)
    # A HelmRelease relabelled into this shard arrives with the old shard's diff base: its labels changed, its
    # spec did not. Any label change reconciles (a pass of an unchanged release runs no helm).
    @kopf.on.update(
        GROUP, VERSION, PLURAL, field="metadata.labels", id="reconcile", labels=shard, registry=registry
    )
    async def reconcile(memo: kopf.Memo, body: kopf.Body, **kwargs: Any) -> None:
        await _reconcile(memo, body, kwargs["helm_releases"], check_drift=False)

    # Flux v2's reconcile.fluxcd.io/* annotations: a change of them moves no generation, so the spec handler above
    # does not see it. Any other annotation change (kubectl's, a tool's) costs a look at the tokens. Not a `when`
    # filter: kopf evaluates it again before a retry, and by then the failed pass has echoed its tokens, so the
    # retry (a rollback's retry upgrade, say) would be dropped; a retry goes on whatever the tokens say.
    @kopf.on.update(
        GROUP, VERSION, PLURAL, field="metadata.annotations", id="requested", labels=shard, registry=registry
    )
    async def requested(memo: kopf.Memo, body: kopf.Body, retry: int, **kwargs: Any) -> None:
        if not wants_a_pass(body, retrying=retry > 0):
            return
        await _reconcile(memo, body, kwargs["helm_releases"], check_drift=settings.drift_detection)

    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=settings.resync_interval,
        initial_delay=settings.resync_interval,
        idle=settings.resync_interval / 2,
        id="resync",
        labels=shard,
        registry=registry,
    )
    async def resync(memo: kopf.Memo, body: kopf.Body, logger: kopf.Logger, **kwargs: Any) -> None:
        # Spread each object's resyncs apart (timers are not sharp: the next one counts from the end of this one),
        # so hundreds of releases seen at startup do not all resync in the same second.
        await asyncio.sleep(random.uniform(0, jitter))  # noqa: S311 - jitter, not crypto
        # kopf runs timers of existing objects only: what keeps the object's metrics from expiring as deleted.
        memo.reconciler.metrics.touch(body.metadata.namespace or "", body.metadata.name or "")
        try:
            await _reconcile(memo, body, kwargs["helm_releases"], check_drift=settings.drift_detection)
        except kopf.PermanentError as error:
            # Already in the status and an Event; the next resync looks again, no need to shout every interval.
            logger.debug("resync: %s", error)

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="uninstall", labels=shard, registry=registry)
    async def uninstall(memo: kopf.Memo, body: kopf.Body, **kwargs: Any) -> None:
        reconciler: Reconciler = memo.reconciler
        await _report_unreadable_bookkeeping(reconciler, body)
        try:
            await reconciler.finalize(body, ReleaseIndexView(kwargs["helm_releases"]))
        except ReconcileError as error:
            raise _map(error) from None

    async def _source_changed(
        kind: str,
        namespace: str | None,
        name: str | None,
        memo: kopf.Memo,
        values_sources: kopf.Index[Any, Any],
        helm_releases: kopf.Index[Any, Any],
        logger: kopf.Logger,
    ) -> None:
        if not namespace or not name or (namespace, kind, name) not in values_sources:
            return
        reconciler: Reconciler = memo.reconciler
        for hr_namespace, hr_name in set(values_sources[(namespace, kind, name)]):
            logger.info(
                "%s %s/%s changed: reconciling HelmRelease %s/%s",
                kind,
                namespace,
                name,
                hr_namespace,
                hr_name,
            )
            try:
                await reconciler.reconcile_by_name(hr_namespace, hr_name, ReleaseIndexView(helm_releases))
            except ReconcileError as error:
                logger.warning("HelmRelease %s/%s: %s", hr_namespace, hr_name, error)

    @kopf.on.event("", "v1", "configmaps", id="config_map_changed", registry=registry)
    async def config_map_changed(
        type: str, namespace: str | None, name: str, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any
    ) -> None:
        if type in ("MODIFIED", "ADDED", "DELETED"):
            await _source_changed(
                "ConfigMap", namespace, name, memo, kwargs["values_sources"], kwargs["helm_releases"], logger
            )

    # Not Helm's own storage (the helm_releases index reads those): by kopf's filter, so that the two writes of
    # every deploy's storage Secret cost kopf no handler run (and no log record) of this handler.
    @kopf.on.event("", "v1", "secrets", id="secret_changed", labels={"owner": _not_helm}, registry=registry)
    async def secret_changed(
        type: str, namespace: str | None, name: str, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any
    ) -> None:
        if type in ("MODIFIED", "ADDED", "DELETED"):
            await _source_changed(
                "Secret", namespace, name, memo, kwargs["values_sources"], kwargs["helm_releases"], logger
            )

    return registry
