"""What a HelmRelease would deploy, rendered without deploying it (``helmrelease diff``).

The same steps as the reconcile pass, with the same code: ``Inputs.chart_source`` and the chart fetcher for the
chart, ``Inputs.values`` for the values (``valueFileSecrets``, ``valuesFrom``, ``values``, composed by
``values.compose_values``), then ``helm template`` instead of an install. Values sources are read through the
``SourceReader`` the caller passes: the cluster, or ``LocalSources`` (files given on the command line) for a
pipeline without one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from helmrelease.adapters.kube import NotFound
from helmrelease.api.resource import HelmRelease
from helmrelease.reconcile.apis import ChartApi
from helmrelease.reconcile.inputs import Inputs, SourceReader
from helmrelease.reconcile.masking import Masker


class TemplateApi(Protocol):
    """Helm's rendering and its stored manifests (`adapters.helm.HelmCommand` has them); errors are `HelmError`s."""

    async def template(
        self,
        release: str,
        namespace: str,
        chart: str | Path,
        values: Mapping[str, Any],
        *,
        is_upgrade: bool,
    ) -> str: ...

    async def manifest(self, release: str, namespace: str) -> str | None: ...

    def redacting(self, redact: Callable[[str], str]) -> TemplateApi: ...


@dataclass(frozen=True)
class Rendering:
    """The manifest a HelmRelease renders to, and a masker for the values that came from Secrets."""

    release: str
    namespace: str
    chart_revision: str
    manifest: str
    masker: Masker


async def render_release(
    hr: HelmRelease,
    *,
    inputs: Inputs,
    charts: ChartApi,
    helm: TemplateApi,
    reader: SourceReader,
    is_upgrade: bool,
) -> Rendering:
    """Fetch the chart, compose the values and render them as the reconciler would install or upgrade them.

    Raises what the pass's steps raise: `KubeError`, `SourceError`, `ValuesError`, `HelmError`.
    """
    source = await inputs.chart_source(hr, reader)
    chart = await charts.fetch(source)
    values, masker = await inputs.values(hr, chart.path, reader)
    # helm quotes values in its errors (a `fail` with a value, a schema violation): masked like the pass's.
    manifest = await helm.redacting(masker).template(
        hr.release_name, hr.target_namespace, chart.path, values, is_upgrade=is_upgrade
    )
    return Rendering(hr.release_name, hr.target_namespace, chart.revision, manifest, masker)


SourceKey = tuple[str, str, str]  # (kind, namespace, name)


class LocalSources:
    """A `SourceReader` over ConfigMaps and Secrets given as files, for rendering without a cluster.

    Keys are (``ConfigMap`` or ``Secret``, namespace, name), the data is already decoded; an object not given is
    `NotFound`, as the API would say, so an ``optional`` source is skipped the same way.
    """

    identity = None

    def __init__(self, objects: Mapping[SourceKey, Mapping[str, str]] | None = None) -> None:
        self._objects = {key: dict(data) for key, data in (objects or {}).items()}

    def add(self, kind: str, namespace: str, name: str, key: str, text: str) -> None:
        self._objects.setdefault((kind, namespace, name), {})[key] = text

    def _read(self, kind: str, namespace: str, name: str) -> dict[str, str]:
        try:
            return dict(self._objects[(kind, namespace, name)])
        except KeyError:
            raise NotFound(
                f"{kind} {namespace}/{name}: not given (offline: pass --values-from-file {kind}/{namespace}/{name}"
                f"[:KEY]=PATH, or put the {kind} in the file)",
                404,
            ) from None

    async def config_map_data(self, namespace: str, name: str) -> dict[str, str]:
        return self._read("ConfigMap", namespace, name)

    async def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        return self._read("Secret", namespace, name)
