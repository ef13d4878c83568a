"""OCI registry adapter: list tags and read image build times over the Distribution API (async, aiohttp).

Import from here; the submodules are the implementation's seams (pure parsers, limits, caches, transport).
"""

from helmrelease.adapters.credentials import BasicCredentials
from helmrelease.adapters.registry.client import RegistryClient, ScanCycle
from helmrelease.adapters.registry.config import RegistryConfig, RetryPolicy, Timeouts
from helmrelease.adapters.registry.credentials import CredentialProvider, CredentialStore, DockerConfigError
from helmrelease.adapters.registry.errors import (
    RegistryError,
    RegistryForbidden,
    RegistryMalformedResponse,
    RegistryNotFound,
    RegistryRateLimited,
    RegistryUnauthorized,
    RegistryUnavailable,
)
from helmrelease.adapters.registry.formats import Platform
from helmrelease.adapters.registry.metrics import RegistryMetrics

__all__ = [
    "BasicCredentials",
    "CredentialProvider",
    "CredentialStore",
    "DockerConfigError",
    "Platform",
    "RegistryClient",
    "RegistryConfig",
    "RegistryError",
    "RegistryForbidden",
    "RegistryMalformedResponse",
    "RegistryMetrics",
    "RegistryNotFound",
    "RegistryRateLimited",
    "RegistryUnauthorized",
    "RegistryUnavailable",
    "RetryPolicy",
    "ScanCycle",
    "Timeouts",
]
