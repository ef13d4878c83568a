"""Prometheus metrics for registry traffic, on a CollectorRegistry the caller owns (never the global one)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from helmrelease.adapters.registry.errors import RegistryError

_REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_OPERATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True)
class RegistryMetrics:
    """Requests by registry, kind (tags, manifest, blob, token) and status code ("error"/"timeout" when
    there is none); request and operation durations; failed operations by what went wrong (a malformed
    answer, a refusal, an outage: every failure, also those whose requests all said 200); hits and misses of
    the digest caches and cycle memos."""

    requests: Counter
    request_seconds: Histogram
    operation_seconds: Histogram
    errors: Counter
    cache_lookups: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry, namespace: str = "helmrelease") -> RegistryMetrics:
        return cls(
            requests=Counter(
                "registry_requests",
                "HTTP requests to container registries.",
                ["registry", "kind", "code"],
                namespace=namespace,
                registry=registry,
            ),
            request_seconds=Histogram(
                "registry_request_duration_seconds",
                "Duration of one HTTP request to a container registry (one attempt).",
                ["registry", "kind"],
                namespace=namespace,
                registry=registry,
                buckets=_REQUEST_BUCKETS,
            ),
            operation_seconds=Histogram(
                "registry_operation_duration_seconds",
                "Duration of a registry operation (all pages, retries and auth included).",
                ["registry", "operation"],
                namespace=namespace,
                registry=registry,
                buckets=_OPERATION_BUCKETS,
            ),
            errors=Counter(
                "registry_errors",
                "Registry operations that failed, by registry, operation and error (after every retry).",
                ["registry", "operation", "error"],
                namespace=namespace,
                registry=registry,
            ),
            cache_lookups=Counter(
                "registry_cache_lookups",
                "Lookups in the registry client's caches and per-cycle memos.",
                ["cache", "result"],
                namespace=namespace,
                registry=registry,
            ),
        )

    def observe_request(self, registry: str, kind: str, code: str, seconds: float) -> None:
        self.requests.labels(registry, kind, code).inc()
        self.request_seconds.labels(registry, kind).observe(seconds)

    def observe_cache(self, cache: str, hit: bool) -> None:
        self.cache_lookups.labels(cache, "hit" if hit else "miss").inc()

    @contextmanager
    def time_operation(self, registry: str, operation: str) -> Iterator[None]:
        """Time one operation; a ``RegistryError`` out of it is counted by its kind (and goes on)."""
        started = time.monotonic()
        try:
            yield
        except RegistryError as error:
            self.errors.labels(registry, operation, error.metric_label).inc()
            raise
        finally:
            self.operation_seconds.labels(registry, operation).observe(time.monotonic() - started)
