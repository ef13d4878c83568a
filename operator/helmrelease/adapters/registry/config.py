"""How the registry client behaves: transport security per host, politeness, patience and cache sizes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from helmrelease import __version__
from helmrelease.adapters.registry.formats import Platform


@dataclass(frozen=True)
class Timeouts:
    """Per-request limits in seconds; a hung registry costs at most ``total`` per attempt."""

    connect: float = 5.0
    read: float = 20.0
    total: float = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for 429, 5xx, connection errors and timeouts; anything else fails at once."""

    attempts: int = 4  # tries per request, the first included
    base_delay: float = 0.5  # backoff before retry n is uniform in [0, min(max_delay, base_delay * 2**n))
    max_delay: float = 20.0
    max_retry_after: float = (
        60.0  # a Retry-After longer than this fails the request instead of stalling a scan
    )

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("RetryPolicy delays must not be negative")


def _read_only(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType({host.lower(): value for host, value in mapping.items()})


@dataclass(frozen=True)
class RegistryConfig:
    """Settings shared by every registry the client talks to; limits apply per registry host.

    ``insecure_hosts`` and ``ca_bundles`` are keyed by ``host[:port]`` as it appears in URLs (for Docker Hub
    that is ``registry-1.docker.io``). Hosts not in ``insecure_hosts`` are only ever spoken to over https.
    A CA bundle (PEM text) replaces the system trust store for its host.

    Cache sizes count entries. A config-blob entry is a digest and a datetime (about 0.5 KiB with its
    bookkeeping), so the default 10 000 entries cost about 5 MiB and cover 10 000 distinct image builds; the
    manifest cache (top-level manifest digest -> build time) is the same size and lets a repeated scan of an
    unchanged tag cost one HEAD request.
    """

    insecure_hosts: frozenset[str] = frozenset()
    ca_bundles: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    platform: Platform = field(default_factory=Platform)
    concurrency: int = 4
    requests_per_second: float = 10.0
    burst: int = 20
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    page_size: int = 1000
    max_tag_pages: int = 1000
    config_cache_size: int = 10_000
    manifest_cache_size: int = 10_000
    token_cache_size: int = 1_000
    max_body_bytes: int = 16 * 1024 * 1024
    user_agent: str = f"helmrelease-operator/{__version__}"

    def __post_init__(self) -> None:
        object.__setattr__(self, "insecure_hosts", frozenset(host.lower() for host in self.insecure_hosts))
        object.__setattr__(self, "ca_bundles", _read_only(self.ca_bundles))
        positive = {
            "concurrency": self.concurrency,
            "requests_per_second": self.requests_per_second,
            "burst": self.burst,
            "page_size": self.page_size,
            "max_tag_pages": self.max_tag_pages,
            "config_cache_size": self.config_cache_size,
            "manifest_cache_size": self.manifest_cache_size,
            "token_cache_size": self.token_cache_size,
            "max_body_bytes": self.max_body_bytes,
        }
        not_positive = [name for name, value in positive.items() if value <= 0]
        if not_positive:
            raise ValueError(f"RegistryConfig: {', '.join(not_positive)} must be positive")
