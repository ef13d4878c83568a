"""The registry adapter's typed errors: the only exceptions it raises for registry trouble.

Each message names the registry, the repository and what an operator can do about it, because these messages
end up verbatim in HelmRelease status conditions and events.
"""

from __future__ import annotations

from typing import ClassVar


class RegistryError(Exception):
    """A registry request failed. Unclassified HTTP statuses raise this base class itself."""

    hint_template: ClassVar[str] = "see the registry's message above; the next scan cycle retries"
    #: The ``error`` label of ``helmrelease_registry_errors_total``.
    metric_label: ClassVar[str] = "other"

    def __init__(self, registry: str, repository: str, detail: str, *, status: int | None = None) -> None:
        self.registry = registry
        self.repository = repository
        self.detail = detail
        self.status = status
        self.hint = self.hint_template.format(registry=registry, repository=repository)
        super().__init__(f"registry {registry}, repository {repository}: {detail}; {self.hint}")

    @property
    def identity(self) -> str:
        """Which failure this is, without the registry's own wording: a body that carries a request id or a
        time differs on every request, and a Warning posted "while the problem lasts" must not take that as new."""
        return f"{self.metric_label} {self.status} {self.registry}/{self.repository}"


class RegistryUnauthorized(RegistryError):
    """401: no credentials, wrong credentials, or a token the registry would not issue."""

    metric_label = "unauthorized"

    hint_template = (
        "add a kubernetes.io/dockerconfigjson Secret with credentials for {registry}, "
        "or check that the existing one is current"
    )


class RegistryForbidden(RegistryError):
    """403: the credentials are valid but may not pull this repository."""

    metric_label = "forbidden"

    hint_template = (
        "grant the credentials used for {registry} pull access to {repository}, or use other credentials"
    )


class RegistryNotFound(RegistryError):
    """404: the repository, tag or blob does not exist (or is hidden from these credentials)."""

    metric_label = "not_found"

    hint_template = (
        "check the image name and tag in the HelmRelease values and that {repository} exists on {registry}"
    )


class RegistryRateLimited(RegistryError):
    """429 after every retry, or a Retry-After longer than the configured patience."""

    metric_label = "rate_limited"

    hint_template = (
        "{registry} is throttling this client; lower the scan rate or concurrency for it, "
        "or authenticate to get a higher quota"
    )


class RegistryUnavailable(RegistryError):
    """5xx, connection failures or timeouts after every retry, and TLS failures at once."""

    metric_label = "unavailable"

    hint_template = (
        "check that {registry} is up and reachable from the operator (network, DNS, TLS: ca_bundles and "
        "insecure_hosts); the next scan cycle retries"
    )


class RegistryMalformedResponse(RegistryError):
    """The answer is not a valid OCI Distribution response: bad JSON, missing fields, wrong digests."""

    metric_label = "malformed"

    hint_template = (
        "{registry} did not answer like an OCI Distribution registry; check that the host is a registry "
        "and not a proxy or login page"
    )


_ERROR_BY_STATUS: dict[int, type[RegistryError]] = {
    401: RegistryUnauthorized,
    403: RegistryForbidden,
    404: RegistryNotFound,
    429: RegistryRateLimited,
}


def error_for_status(status: int, registry: str, repository: str, detail: str) -> RegistryError:
    """The typed error for a final (non-retried) HTTP status."""
    if status in _ERROR_BY_STATUS:
        error_type = _ERROR_BY_STATUS[status]
    elif status >= 500:
        error_type = RegistryUnavailable
    else:
        error_type = RegistryError
    return error_type(registry, repository, detail, status=status)
