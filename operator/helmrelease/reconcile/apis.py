"""What the reconcile pass needs of Kubernetes and of Helm, as Protocols.

`adapters.kube.KubeClient` and `adapters.helm.HelmCommand` have these methods; so do the in-memory fakes of the unit
tests, which drive the production pass with them. Who acts for a HelmRelease is decided here too (`acting_for`,
`helm_for`): its ServiceAccount, impersonated, when it names one, so a tenant reaches only what that account may.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from helmrelease.adapters.charts import ChartSource, FetchedChart
from helmrelease.adapters.helm import (
    DeployAction,
    DeployOptions,
    HelmMajor,
    HelmSettings,
    Release,
    Revision,
    RollbackOptions,
    TestRun,
)
from helmrelease.adapters.kube import ObjectRef, StoredLease, StoredRelease
from helmrelease.api.resource import HelmRelease


class KubeApi(Protocol):
    """The Kubernetes calls of a pass: the HelmRelease and its status and Events, Helm's storage, release objects,
    values sources. Errors are `adapters.kube.KubeError`s."""

    @property
    def identity(self) -> str | None:
        """Who the requests act as, for messages; None for the operator itself."""

    def impersonating(self, namespace: str, service_account: str) -> KubeApi: ...

    async def close(self) -> None:
        """Close what the calls hold open (connections), once the operator stops."""

    async def get_helmrelease(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def patch_helmrelease_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None: ...

    async def post_event(self, ref: ObjectRef, event_type: str, reason: str, message: str) -> None: ...

    async def namespace_exists(self, namespace: str) -> bool: ...

    async def service_account_exists(self, namespace: str, name: str) -> bool: ...

    async def config_map_data(self, namespace: str, name: str) -> dict[str, str]: ...

    async def secret_data(self, namespace: str, name: str) -> dict[str, str]: ...

    async def stored_release(self, namespace: str, release: str, revision: int) -> StoredRelease | None: ...

    async def get_object(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None: ...

    async def get_objects(self, refs: Sequence[ObjectRef]) -> list[dict[str, Any] | None]: ...

    async def annotate(
        self, objects: Iterable[ObjectRef], annotations: Mapping[str, str]
    ) -> list[ObjectRef]: ...

    async def delete_pod(self, namespace: str, name: str) -> None: ...

    async def release_storage_labels(self, namespace: str, release: str) -> list[dict[str, str]]: ...

    async def read_lease(self, namespace: str, name: str) -> StoredLease | None: ...

    async def write_lease(
        self, namespace: str, name: str, holder: str, duration: float, *, replacing: str | None
    ) -> StoredLease: ...

    async def delete_lease(self, namespace: str, name: str, resource_version: str) -> None: ...


class HelmApi(Protocol):
    """The Helm operations on a release. Errors are `adapters.helm.HelmError`s."""

    @property
    def major(self) -> HelmMajor: ...

    @property
    def settings(self) -> HelmSettings: ...

    def impersonating(self, namespace: str, service_account: str) -> HelmApi: ...

    def redacting(self, redact: Callable[[str], str]) -> HelmApi: ...

    async def upgrade_install(
        self,
        release: str,
        namespace: str,
        chart: str | Path,
        values: Mapping[str, Any],
        options: DeployOptions,
        *,
        action: DeployAction,
    ) -> Release: ...

    async def test(self, release: str, namespace: str, *, timeout_seconds: int = 300) -> TestRun: ...

    async def rollback(self, release: str, namespace: str, options: RollbackOptions) -> None: ...

    async def uninstall(
        self, release: str, namespace: str, *, timeout_seconds: int = 300, keep_history: bool = False
    ) -> bool: ...

    async def status(self, release: str, namespace: str) -> Release: ...

    async def history(self, release: str, namespace: str) -> list[Revision]: ...


class ChartApi(Protocol):
    """Fetches a chart into a directory helm can use (`adapters.charts.ChartFetcher`); errors are `HelmError`s."""

    async def fetch(self, source: ChartSource) -> FetchedChart: ...


def acting_for(kube: KubeApi, hr: HelmRelease) -> KubeApi:
    """Who reads and writes on the HelmRelease's behalf: its ServiceAccount, impersonated, when it names one
    (always, with --require-service-account); the operator itself otherwise."""
    account = hr.spec.service_account_name
    return kube.impersonating(hr.metadata.namespace, account) if account else kube


def helm_for(helm: HelmApi, hr: HelmRelease, redact: Callable[[str], str] | None = None) -> HelmApi:
    """Helm as the HelmRelease's ServiceAccount (when it names one), passing its error text through `redact`."""
    account = hr.spec.service_account_name
    acting = helm.impersonating(hr.metadata.namespace, account) if account else helm
    return acting.redacting(redact) if redact is not None else acting
