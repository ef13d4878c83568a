"""Prometheus metrics of the image-policy loop, on a CollectorRegistry the caller owns (never the global one).

Registry traffic (requests by registry and status code, cache hits) is counted by the registry adapter's
``RegistryMetrics`` on the same registry; these are the loop's own: how long scans take, when the last one
finished, what was updated where and what went wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_CYCLE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class Failure(StrEnum):
    """What kept an image or a release from being updated, as a metric label."""

    LIST = "list"  # listing HelmReleases
    POLICY = "policy"  # a tag policy that does not parse
    PULL_SECRET = "pull_secret"  # noqa: S105 - the annotated pull secret is unusable (a label, no secret)
    REGISTRY = "registry"  # the registry failed or refused
    PATCH = "patch"  # the API server refused the patch (not a conflict)
    CONFLICT = "conflict"  # the release kept changing under us
    GIT = "git"  # write-back failed
    INTERNAL = "internal"  # a bug: logged with its traceback


class Target(StrEnum):
    """Where an update was written."""

    CLUSTER = "cluster"
    GIT = "git"


@dataclass(frozen=True)
class AutomationMetrics:
    """Scan durations and completion time, updates by target, failures by kind."""

    cycle_seconds: Histogram
    last_cycle_finished: Gauge
    updates: Counter
    failures: Counter
    images_scanned: Counter
    cycle_images: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry, namespace: str = "helmrelease") -> AutomationMetrics:
        return cls(
            cycle_seconds=Histogram(
                "image_scan_duration_seconds",
                "Duration of one scan cycle over all HelmReleases (registries, patches and git included).",
                namespace=namespace,
                registry=registry,
                buckets=_CYCLE_BUCKETS,
            ),
            last_cycle_finished=Gauge(
                "image_scan_last_finished_timestamp_seconds",
                "Unix time at which the last scan cycle finished.",
                namespace=namespace,
                registry=registry,
            ),
            updates=Counter(
                "image_updates",
                "Image tag updates made, by where they were written.",
                ["target"],
                namespace=namespace,
                registry=registry,
            ),
            failures=Counter(
                "image_update_failures",
                "Images or releases the scan could not decide or update, by cause.",
                ["cause"],
                namespace=namespace,
                registry=registry,
            ),
            images_scanned=Counter(
                "images_scanned",
                "Images scanned, counted as each one is decided (result: decided or failed).",
                ["result"],
                namespace=namespace,
                registry=registry,
            ),
            cycle_images=Gauge(
                "image_scan_progress_images",
                "Images scanned so far in the running scan cycle (the last one's total between cycles).",
                namespace=namespace,
                registry=registry,
            ),
        )

    def updated(self, target: Target, count: int = 1) -> None:
        self.updates.labels(target.value).inc(count)

    def failed(self, cause: Failure) -> None:
        self.failures.labels(cause.value).inc()

    def scanned(self, *, failed: bool) -> None:
        self.images_scanned.labels("failed" if failed else "decided").inc()
