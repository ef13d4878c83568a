"""Prometheus metrics of the reconciler, on a CollectorRegistry the caller owns (never the global one).

Per HelmRelease, what its object says now, as Flux's ``gotk_reconcile_condition`` did before Flux v2.1 dropped it:

- ``helmrelease_condition{namespace,name,type,status}``: for each condition the status holds, 1 for its current
  status and 0 for the two others, so ``helmrelease_condition{type="Ready",status="False"} == 1`` is an alert.
- ``helmrelease_info{namespace,name,release,chart,version,revision}``: always 1; which Helm release the object
  makes, from which chart and version (the spec's), and the revision deployed (``status.revision``: chart
  version or git commit).

These are kept as one `ReleaseSeries` per object, fed by the watch (`observe`, `forget`) and by the reconciler's
own status writes (`status_written`, so a long Helm action shows as it happens), and produced at scrape time by
a collector: a deleted object's series go with its entry. Cardinality is bounded by the number of objects: label
values are names and versions, never values or messages; only the known condition types and statuses are
exported; and every value a tenant wrote is capped (`label_value`).

Per operator: reconcile pass durations by result, Helm action durations and results by action, drift detections
and corrections, and Helm operations waiting for (and holding) one of the ``--workers`` slots.
"""

from __future__ import annotations

import collections
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from helmrelease.api.constants import Action, ConditionStatus, ConditionType
from helmrelease.api.errors import SpecError
from helmrelease.api.resource import parse_helmrelease
from helmrelease.api.spec import GitChartSource
from helmrelease.api.status import HelmReleaseStatus

#: Longest label value exported; a longer one keeps a prefix and a digest of the whole (see `label_value`).
LABEL_VALUE_MAX: Final = 128
_DIGEST_LENGTH: Final = 12
#: Spec fields that cannot change what `helmrelease_info` says; not parsed, so bad values do not blank it.
_UNREAD_SPEC_FIELDS: Final = frozenset({"values", "valuesFrom", "valueFileSecrets"})

_PASS_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
_ACTION_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class PassResult(StrEnum):
    """How a reconcile pass ended, as the ``result`` label."""

    SUCCESS = "success"  # the pass ended with Ready=True
    FAILURE = (
        "failure"  # Ready is False or Unknown, or a problem (in the status and an Event) stopped the pass
    )
    ERROR = "error"  # an unexpected exception: a bug, logged with its traceback by kopf


class ActionResult(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"  # the HelmRelease was deleted while Helm ran


#: The ``action`` label: an adoption is an upgrade (and recorded as one), and removing the release left under an
#: earlier name is an uninstall.
ACTION_LABELS: Final[Mapping[Action, str]] = {
    Action.INSTALL: "install",
    Action.UPGRADE: "upgrade",
    Action.ADOPT: "upgrade",
    Action.TEST: "test",
    Action.ROLLBACK: "rollback",
    Action.UNINSTALL: "uninstall",
    Action.UNINSTALL_PREVIOUS: "uninstall",
    Action.UNLOCK: "unlock",
}


def label_value(value: str) -> str:
    """A tenant's string as a label value: encodable as UTF-8 and at most `LABEL_VALUE_MAX` characters.

    A longer value keeps its prefix and ends in ``~`` and a digest of the whole, so two values never share a series
    and a hostile one cannot grow the exposition. A lone surrogate (JSON allows ``\\ud800``) becomes ``?``: it would
    otherwise break the encoding of every scrape.
    """
    clean = value.encode("utf-8", "replace").decode("utf-8")
    if len(clean) <= LABEL_VALUE_MAX:
        return clean
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_LENGTH]
    return f"{clean[: LABEL_VALUE_MAX - _DIGEST_LENGTH - 1]}~{digest}"


@dataclass(frozen=True)
class ReleaseInfo:
    """The labels of ``helmrelease_info`` besides the object's namespace and name (empty: not known)."""

    release: str = ""
    chart: str = ""
    version: str = ""
    revision: str = ""


@dataclass(frozen=True)
class ReleaseSeries:
    """Everything exported about one HelmRelease, labels already capped."""

    info: ReleaseInfo
    #: (type, current status) of each known condition, in `ConditionType` order.
    conditions: tuple[tuple[ConditionType, ConditionStatus], ...]


def readable_status(body: Mapping[str, Any]) -> HelmReleaseStatus:
    """The object's status, or an empty one when it does not parse (edited by hand)."""
    try:
        return HelmReleaseStatus.model_validate(body.get("status") or {})
    except ValueError:
        return HelmReleaseStatus()


def release_info(body: Mapping[str, Any], *, default_git_ref: str) -> ReleaseInfo:
    """What ``helmrelease_info`` says of an object; an unusable spec leaves release, chart and version empty."""
    revision = readable_status(body).revision or ""
    return replace(spec_info(body, default_git_ref=default_git_ref), revision=label_value(revision))


def spec_info(body: Mapping[str, Any], *, default_git_ref: str) -> ReleaseInfo:
    """The part of `release_info` the spec decides (the revision left empty)."""
    spec = body.get("spec")
    if isinstance(spec, Mapping):
        spec = {key: value for key, value in spec.items() if key not in _UNREAD_SPEC_FIELDS}
    try:
        hr = parse_helmrelease({"metadata": body.get("metadata"), "spec": spec})
    except SpecError:
        return ReleaseInfo()
    chart = hr.spec.chart
    if isinstance(chart, GitChartSource):
        name, version = chart.path, chart.ref_or(default_git_ref)
    else:
        name, version = chart.name, chart.version
    return ReleaseInfo(*(label_value(value) for value in (hr.release_name, name, version)))


def spec_identity(body: Mapping[str, Any]) -> tuple[str, int] | None:
    """(uid, generation): the API server moves the generation with every change of the spec (never with one of
    the status or the metadata), so two bodies with the same identity have the same `spec_info`. None when the
    body lacks either."""
    metadata = body.get("metadata") or {}
    uid, generation = metadata.get("uid"), metadata.get("generation")
    if not isinstance(uid, str) or not uid or not isinstance(generation, int):
        return None
    return uid, generation


def condition_states(status: HelmReleaseStatus) -> tuple[tuple[ConditionType, ConditionStatus], ...]:
    """The current status of each known condition type the status holds (the first entry of a type wins)."""
    found: dict[str, ConditionStatus] = {}
    for condition in status.conditions:
        found.setdefault(condition.type, condition.status)
    return tuple((kind, found[kind]) for kind in ConditionType if kind in found)


def condition_samples(
    conditions: Iterable[tuple[ConditionType, ConditionStatus]],
) -> list[tuple[str, str, float]]:
    """(type, status, value) of ``helmrelease_condition``: every status of each condition, 1 for the current."""
    return [
        (kind.value, status.value, 1.0 if status is current else 0.0)
        for kind, current in conditions
        for status in ConditionStatus
    ]


def _key(namespace: str, name: str) -> tuple[str, str]:
    return (label_value(namespace), label_value(name))


class ReleaseCollector(Collector):
    """The per-object series, built from the entries at each scrape (a forgotten object has none).

    Deletion is learnt from the watch's DELETED event, which kopf does not replay after a relist: an object deleted
    while the watch was down would keep its series. So with `stale_after`, an entry not refreshed for that long (by
    a watch event, a status write, or the start or end of a pass: the resync touches every live object each
    interval) and with no pass running is not exported, and is dropped by the next `sweep`. A paused kopf peer
    (no events, no timers) stops exporting after that time too.

    A scrape runs in the HTTP server's thread while the event loop changes entries: it copies the mapping in one
    step (atomic under the GIL), reads only frozen entries, and changes nothing.
    """

    def __init__(self, stale_after: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.releases: dict[tuple[str, str], ReleaseSeries] = {}
        #: `spec_info` by object, with the `spec_identity` it was read at: a watch event of a status write (every
        #: resync has one) parses no spec.
        self.spec_infos: dict[tuple[str, str], tuple[tuple[str, int], ReleaseInfo]] = {}
        self.stale_after = stale_after
        self.clock = clock
        self._refreshed: dict[tuple[str, str], float] = {}
        self._passes: collections.Counter[tuple[str, str]] = collections.Counter()
        self._swept = clock()

    def refresh(self, key: tuple[str, str]) -> None:
        """A sign of life of an object with series (others have nothing to keep)."""
        if key in self.releases:
            self._refreshed[key] = self.clock()
        self.sweep()

    def remove(self, key: tuple[str, str]) -> None:
        self.releases.pop(key, None)
        self.spec_infos.pop(key, None)
        self._refreshed.pop(key, None)

    @contextmanager
    def passing(self, key: tuple[str, str]) -> Iterator[None]:
        """A pass on the object runs: it is alive however long that takes."""
        self._passes[key] += 1
        self.refresh(key)
        try:
            yield
        finally:
            self._passes[key] -= 1
            if not self._passes[key]:
                del self._passes[key]
            self.refresh(key)

    def live(self, key: tuple[str, str], now: float) -> bool:
        if self.stale_after is None or key in self._passes:
            return True
        return now - self._refreshed.get(key, now) <= self.stale_after

    def sweep(self) -> None:
        """Drop stale entries, at most four times per `stale_after` (it walks every entry)."""
        if self.stale_after is None:
            return
        now = self.clock()
        if now - self._swept < self.stale_after / 4:
            return
        self._swept = now
        for key in [key for key in self.releases if not self.live(key, now)]:
            self.remove(key)

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        condition, info = self._families()
        now = self.clock()
        for (namespace, name), series in list(self.releases.items()):
            if not self.live((namespace, name), now):
                continue
            for kind, status, value in condition_samples(series.conditions):
                condition.add_metric([namespace, name, kind, status], value)
            labels = series.info
            info.add_metric(
                [namespace, name, labels.release, labels.chart, labels.version, labels.revision], 1.0
            )
        return [condition, info]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "helmrelease_condition",
                "Status of each condition of a HelmRelease: 1 for its current status, 0 for the others.",
                labels=["namespace", "name", "type", "status"],
            ),
            GaugeMetricFamily(
                "helmrelease_info",
                "A HelmRelease's Helm release, chart, chart version (spec) and deployed revision (status).",
                labels=["namespace", "name", "release", "chart", "version", "revision"],
            ),
        ]


@dataclass(frozen=True)
class OperatorMetrics:
    """The reconciler's metrics; its methods are what the reconcile layer records."""

    releases: ReleaseCollector
    pass_seconds: Histogram
    action_seconds: Histogram
    actions: Counter
    drift_detections: Counter
    drift_corrections: Counter
    waiting: Gauge
    running: Gauge
    workers: Gauge

    @classmethod
    def create(
        cls,
        registry: CollectorRegistry,
        namespace: str = "helmrelease",
        *,
        stale_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> OperatorMetrics:
        """`stale_after`: seconds after which an object nothing refreshed loses its series (see `ReleaseCollector`)."""
        releases = ReleaseCollector(stale_after, clock)
        registry.register(releases)
        metrics = cls(
            releases=releases,
            pass_seconds=Histogram(
                "reconcile_duration_seconds",
                "Duration of one reconcile pass of a HelmRelease (waiting for a worker and Helm included).",
                ["result"],
                namespace=namespace,
                registry=registry,
                buckets=_PASS_BUCKETS,
            ),
            action_seconds=Histogram(
                "helm_action_duration_seconds",
                "Duration of one Helm action (install, upgrade, test, rollback, uninstall, unlock).",
                ["action"],
                namespace=namespace,
                registry=registry,
                buckets=_ACTION_BUCKETS,
            ),
            actions=Counter(
                "helm_actions",
                "Helm actions run, by action and result.",
                ["action", "result"],
                namespace=namespace,
                registry=registry,
            ),
            drift_detections=Counter(
                "drift_detections",
                "Resyncs that found a release's resources differing from its manifest.",
                namespace=namespace,
                registry=registry,
            ),
            drift_corrections=Counter(
                "drift_corrections",
                "Upgrades that corrected a drift found by a resync.",
                namespace=namespace,
                registry=registry,
            ),
            waiting=Gauge(
                "helm_operations_waiting",
                "Helm operations waiting for a worker (--workers bounds those running at once).",
                namespace=namespace,
                registry=registry,
            ),
            running=Gauge(
                "helm_operations_running",
                "Helm operations holding a worker.",
                namespace=namespace,
                registry=registry,
            ),
            workers=Gauge(
                "workers",
                "Helm operations allowed at once (--workers).",
                namespace=namespace,
                registry=registry,
            ),
        )
        # Every series of the closed label sets exists from the start, so rates and ratios are defined before the
        # first failure.
        for result in PassResult:
            metrics.pass_seconds.labels(result.value)
        for label in dict.fromkeys(ACTION_LABELS.values()):
            metrics.action_seconds.labels(label)
            for outcome in ActionResult:
                metrics.actions.labels(label, outcome.value)
        return metrics

    # --- per HelmRelease --------------------------------------------------------------------------------------

    def observe(self, body: Mapping[str, Any], *, default_git_ref: str) -> None:
        """The object as the watch delivered it."""
        metadata = body.get("metadata") or {}
        key = _key(str(metadata.get("namespace", "")), str(metadata.get("name", "")))
        identity, known = spec_identity(body), self.releases.spec_infos.get(key)
        if identity is not None and known is not None and known[0] == identity:
            info = known[1]
        else:
            info = spec_info(body, default_git_ref=default_git_ref)
            if identity is not None:
                self.releases.spec_infos[key] = (identity, info)
        status = readable_status(body)
        revision = label_value(status.revision or "")
        self.releases.releases[key] = ReleaseSeries(
            replace(info, revision=revision), condition_states(status)
        )
        self.releases.refresh(key)

    def status_written(self, namespace: str, name: str, status: HelmReleaseStatus) -> None:
        """A status this operator wrote; an object not (or no longer) seen by the watch gets no series."""
        key = _key(namespace, name)
        series = self.releases.releases.get(key)
        if series is None:
            return
        info = replace(series.info, revision=label_value(status.revision or ""))
        self.releases.releases[key] = ReleaseSeries(info, condition_states(status))
        self.releases.refresh(key)

    def touch(self, namespace: str, name: str) -> None:
        """The object still exists (its resync timer runs): its series stay, as they are."""
        self.releases.refresh(_key(namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        """The object is gone: so are its series."""
        self.releases.remove(_key(namespace, name))

    def passing(self, namespace: str, name: str) -> AbstractContextManager[None]:
        """Around a reconcile pass: the object is alive while it runs (and was when it started and ended)."""
        return self.releases.passing(_key(namespace, name))

    # --- per operator -----------------------------------------------------------------------------------------

    def pass_finished(self, result: PassResult, seconds: float) -> None:
        self.pass_seconds.labels(result.value).observe(seconds)

    def helm_action(self, action: Action, result: ActionResult, seconds: float) -> None:
        label = ACTION_LABELS[action]
        self.action_seconds.labels(label).observe(seconds)
        self.actions.labels(label, result.value).inc()

    def drift_detected(self) -> None:
        self.drift_detections.inc()

    def drift_corrected(self) -> None:
        self.drift_corrections.inc()

    @contextmanager
    def waiting_for_worker(self) -> Iterator[None]:
        with self.waiting.track_inprogress():
            yield

    @contextmanager
    def holding_worker(self) -> Iterator[None]:
        with self.running.track_inprogress():
            yield
