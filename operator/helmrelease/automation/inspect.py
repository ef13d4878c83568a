"""A read-only look at every HelmRelease's images and what the registries offer them (``images list``).

The same scan the loop runs, for every release however it is annotated (ignored, locked and manual ones
included) and without changing anything, so what it shows is what the loop would decide.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from helmrelease.adapters.registry import CredentialStore
from helmrelease.automation.credentials import CycleCredentials, PullSecretError, SecretReader
from helmrelease.automation.scan import ImageScan, ImageScanner, TagSource
from helmrelease.automation.watched import WatchedRelease, read_release


class ReleaseLister(SecretReader, Protocol):
    """The kube reads a listing needs (``adapters.kube.KubeClient`` has them)."""

    async def list_helmreleases(self, namespace: str | None = None) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ReleaseReport:
    """One release, the registry's view of each of its images, or why the registries were not asked."""

    view: WatchedRelease
    scans: tuple[ImageScan, ...]
    error: str | None = None


async def _inspect(
    view: WatchedRelease, scanner: ImageScanner, credentials: CycleCredentials
) -> ReleaseReport:
    try:
        store = await credentials.for_release(view)
    except PullSecretError as error:
        return ReleaseReport(view, (), str(error))
    scans = await asyncio.gather(*(scanner.scan(target, store) for target in view.targets))
    return ReleaseReport(view, tuple(scans))


async def inspect_releases(
    kube: ReleaseLister,
    source: TagSource,
    *,
    namespaces: Sequence[str] = (),
    operator_credentials: CredentialStore | None = None,
) -> list[ReleaseReport]:
    """Every release in ``namespaces`` (none: all), sorted by namespace and name; raises ``KubeError``."""
    scopes: Sequence[str | None] = tuple(namespaces) or (None,)
    listed = await asyncio.gather(*(kube.list_helmreleases(namespace) for namespace in scopes))
    views = sorted(
        (read_release(obj) for objects in listed for obj in objects),
        key=lambda view: (view.release.namespace, view.release.name),
    )
    scanner = ImageScanner(source)
    credentials = CycleCredentials(kube, operator_credentials)
    return list(await asyncio.gather(*(_inspect(view, scanner, credentials) for view in views)))
