"""What a reconcile pass reads before it decides: the chart source with its credentials, and the values.

I/O through the kube adapter and a URL reader (`adapters.web`); the service reports what fails here on the
HelmRelease. Every read of a Secret or ConfigMap named by the HelmRelease goes through the `SourceReader` the caller
passes: the operator's own client, or one impersonating the HelmRelease's ServiceAccount, so a tenant reads only
what its account may read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from helmrelease.adapters import charts as chart_sources
from helmrelease.adapters.credentials import BasicCredentials
from helmrelease.adapters.git import SshCredentials
from helmrelease.adapters.kube import ApiUnavailable, Forbidden, KubeError, NotFound
from helmrelease.adapters.web import WebReadError
from helmrelease.api.aliasing import ExcessiveAliasing, check_aliasing
from helmrelease.api.resource import HelmRelease
from helmrelease.api.spec import (
    ChartFileSelector,
    ConfigMapKeySelector,
    ExternalSourceSelector,
    GitChartSource,
    SecretKeySelector,
    ValuesSource,
    split_credentials,
    too_deep_message,
)
from helmrelease.reconcile.digest import ChartIdentity
from helmrelease.reconcile.masking import Masker, masker_for
from helmrelease.reconcile.values import ValuesLayer, compose_values


class SourceReader(Protocol):
    """The reads of Secrets and ConfigMaps a HelmRelease names (`adapters.kube.KubeClient` has them)."""

    @property
    def identity(self) -> str | None:
        """Who the reads act as, for messages; None for the operator itself."""

    async def config_map_data(self, namespace: str, name: str) -> dict[str, str]: ...

    async def secret_data(self, namespace: str, name: str) -> dict[str, str]: ...


class UrlReader(Protocol):
    """Reads the document at a URL, raising `WebReadError` (`adapters.web.WebReader` does)."""

    async def read_text(self, url: str) -> str: ...

    async def close(self) -> None: ...


def sources_of(namespace: str, spec: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    """(namespace, kind, name) of every ConfigMap and Secret a HelmRelease spec reads values from.

    Works on the raw spec, since the index must not fail on an object that does not parse.
    """
    found: set[tuple[str, str, str]] = set()
    for secret in spec.get("valueFileSecrets") or []:
        if isinstance(secret, Mapping) and secret.get("name"):
            found.add((namespace, "Secret", str(secret["name"])))
    for item in spec.get("valuesFrom") or []:
        if not isinstance(item, Mapping):
            continue
        for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            ref = item.get(key)
            if isinstance(ref, Mapping) and ref.get("name"):
                found.add((str(ref.get("namespace") or namespace), kind, str(ref["name"])))
    return found


def directory_digest(root: Path) -> str:
    """sha256 over the relative paths and contents of every file below `root`, in a stable order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return "sha256:" + digest.hexdigest()


class Inputs:
    """Reads a HelmRelease's chart source and values sources for the reconcile pass."""

    def __init__(
        self,
        urls: UrlReader,
        *,
        state_dir: Path,
        default_git_ref: str,
        git_ssh_key: Path | None,
        git_known_hosts: Path | None = None,
    ) -> None:
        self.urls = urls
        self.state_dir = state_dir
        self.default_git_ref = default_git_ref
        self.git_ssh_key = git_ssh_key
        self.git_known_hosts = git_known_hosts

    async def chart_source(self, hr: HelmRelease, kube: SourceReader) -> chart_sources.ChartSource:
        """The fetcher's view of spec.chart, with credentials read (by `kube`) from the referenced Secret."""
        chart = hr.spec.chart
        if isinstance(chart, GitChartSource):
            credentials: BasicCredentials | SshCredentials | None = None
            if chart.secret_ref is not None:
                data = await _chart_secret(
                    kube, hr.metadata.namespace, chart.secret_ref.name, "chart.secretRef"
                )
                credentials = BasicCredentials(data.get("username", ""), data.get("password", ""))
            elif self.git_ssh_key is not None and not chart.url.startswith(("https://", "http://")):
                credentials = SshCredentials(self.git_ssh_key, self.git_known_hosts, "yes")
            return chart_sources.GitChart(
                url=chart.url,
                ref=chart.ref_or(self.default_git_ref),
                path=chart.path,
                credentials=credentials,
                skip_dependency_update=chart.skip_dep_update,
            )
        # Credentials in the URL (`https://user:password@host/`, as some Flux v1 manifests have them) become the
        # repository's credentials, which helm also sends for the chart packages; a chartPullSecret has precedence.
        location, in_url = split_credentials(chart.oci_reference if chart.is_oci else chart.repository)
        auth = BasicCredentials(*in_url) if in_url else None
        ca_file: Path | None = None
        if chart.chart_pull_secret is not None:
            data = await _chart_secret(
                kube, hr.metadata.namespace, chart.chart_pull_secret.name, "chart.chartPullSecret"
            )
            if data.get("username") or data.get("password"):
                auth = BasicCredentials(data.get("username", ""), data.get("password", ""))
            ca = data.get("ca.crt") or data.get("caFile")
            if ca:
                ca_file = await asyncio.to_thread(self._private_ca_file, ca)
        if chart.is_oci:
            return chart_sources.OCIChart(location, chart.version, auth=auth, ca_file=ca_file)
        return chart_sources.RepositoryChart(location, chart.name, chart.version, auth=auth, ca_file=ca_file)

    def _private_ca_file(self, pem: str) -> Path:
        """A CA bundle from a chartPullSecret, as the file helm wants, keyed by content (written once)."""
        directory = self.state_dir / "ca"
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = directory / f"{hashlib.sha256(pem.encode()).hexdigest()[:16]}.pem"
        if not path.exists():
            path.write_text(pem)
            path.chmod(0o600)
        return path

    async def values(
        self, hr: HelmRelease, chart_path: Path, kube: SourceReader
    ) -> tuple[dict[str, Any], Masker]:
        """valueFileSecrets, valuesFrom in order, then spec.values; and a masker for the values that came from
        Secrets, whose contents never reach logs or status (helm's errors go through it).

        Raises `SourceError` for a source that is not there (unless optional), cannot be read or does not parse,
        `ValuesError` when the layers do not compose.
        """
        layers: list[ValuesLayer] = []
        secret_values: list[object] = []
        for source in hr.spec.values_sources:
            try:
                text = await self.read_values_source(hr, source, chart_path, kube)
            except MissingSource:
                if source.optional:
                    continue
                raise
            try:
                # A large source takes ruamel's pure-Python parser a while: off the event loop, so the other
                # releases' passes go on meanwhile.
                layers.append(ValuesLayer(source.label, await asyncio.to_thread(self._parse, text)))
            except (YAMLError, RecursionError, ExcessiveAliasing) as error:
                # ruamel's composer recurses: YAML nested ~1000 deep exhausts the stack, like too-deep JSON.
                if isinstance(error, RecursionError):
                    problem = too_deep_message()
                elif isinstance(error, ExcessiveAliasing):
                    problem = f"not accepted: {error}"
                else:
                    problem = getattr(error, "problem", None) or "not valid YAML"
                raise UnparsableSource(f"{source.label}: {problem}") from None
            if isinstance(source, SecretKeySelector):
                secret_values.append(layers[-1].values)
        return compose_values(layers, hr.spec.values), masker_for(secret_values)

    async def secret_masker(self, hr: HelmRelease, kube: SourceReader) -> Masker:
        """For helm outside a pass (the uninstall): the Secret-sourced values as they are now, as far as they can
        still be read (a pre-delete hook the API server rejects would quote them too)."""
        values: list[object] = []
        for source in hr.spec.values_sources:
            if isinstance(source, SecretKeySelector):
                with contextlib.suppress(SourceError, YAMLError, RecursionError, ExcessiveAliasing):
                    text = await self.read_object_source(hr, source, kube)
                    values.append(await asyncio.to_thread(self._parse, text))
        return masker_for(values)

    def _parse(self, text: str) -> object:
        """One values source as data, refused when its aliases would make walking it endless (`check_aliasing`)."""
        document = YAML(typ="safe", pure=True).load(text)
        check_aliasing(document)
        return document

    async def read_values_source(
        self, hr: HelmRelease, source: ValuesSource, chart_path: Path, kube: SourceReader
    ) -> str:
        """The text of one values source; ConfigMaps and Secrets are read by `kube`.

        Raises `MissingSource` when it does not exist (an optional source is then skipped), `UnreadableSource` when
        it may exist but could not be read (forbidden, API errors), which is never skipped: nothing is read then.
        """
        match source:
            case ConfigMapKeySelector() | SecretKeySelector():
                return await self.read_object_source(hr, source, kube)
            case ExternalSourceSelector():
                try:
                    return await self.urls.read_text(source.url)
                except WebReadError as error:
                    if error.status is not None:
                        raise MissingSource(f"{source.label} answered HTTP {error.status}") from None
                    raise MissingSource(f"{source.label} could not be read: {error.detail}") from None
            case ChartFileSelector():
                return await asyncio.to_thread(read_chart_file, chart_path, source)
        raise AssertionError(f"unknown values source {source!r}")

    async def read_object_source(
        self, hr: HelmRelease, source: ConfigMapKeySelector | SecretKeySelector, kube: SourceReader
    ) -> str:
        """The text of a ConfigMap or Secret values source, read by `kube`; raises as `read_values_source`."""
        namespace = source.namespace or hr.metadata.namespace
        kind = "ConfigMap" if isinstance(source, ConfigMapKeySelector) else "Secret"
        reader = kube.config_map_data if kind == "ConfigMap" else kube.secret_data
        try:
            data = await reader(namespace, source.name)
        except NotFound:
            raise MissingSource(f"{source.label} in namespace {namespace} does not exist") from None
        except Forbidden as error:
            raise UnreadableSource(
                forbidden_message(f"{source.label} in namespace {namespace}", kind, kube, error)
            ) from None
        except ApiUnavailable:
            raise  # the API server, not the source: the pass is retried in seconds
        except KubeError as error:
            raise UnreadableSource(f"{source.label}: {error}") from None
        if source.key not in data:
            raise MissingSource(f"{source.label} in namespace {namespace} has no key {source.key!r}")
        return data[source.key]


class SourceError(Exception):
    """A values source could not be read; the message names it and says why."""


class MissingSource(SourceError):
    """A values source is not there (missing object or key, unreachable URL, file outside the chart)."""


class UnreadableSource(SourceError):
    """A values source may be there but could not be read: forbidden for the identity reading it, an API error.

    Unlike a missing source it is never skipped as `optional`: that would install without values that exist.
    """


class UnparsableSource(SourceError):
    """A values source was read but is not YAML (or is nested too deep to parse)."""


async def chart_identity(hr: HelmRelease, chart: chart_sources.FetchedChart) -> ChartIdentity:
    """What the release digest knows of the chart. For a git chart its own files, not the commit: a commit
    elsewhere in the repository changes nothing."""
    if isinstance(hr.spec.chart, GitChartSource):
        content = await asyncio.to_thread(directory_digest, chart.path)
        return ChartIdentity.of_git(hr.spec.chart, chart.revision, content)
    return ChartIdentity.of_repository(hr.spec.chart, chart.source_digest)


def forbidden_message(what: str, kind: str, kube: SourceReader, error: KubeError) -> str:
    """Who may not read `what`, and what to do about it (the apiserver's own text only says who asked)."""
    if kube.identity is None:
        return f"{what} is forbidden for the operator (its own RBAC): {error}"
    return (
        f"{what} is forbidden for {kube.identity}, which this HelmRelease acts as (spec.serviceAccountName): "
        f"grant that account get on the {kind}, or use one it may read"
    )


async def _chart_secret(kube: SourceReader, namespace: str, name: str, field: str) -> dict[str, str]:
    """A Secret with chart credentials; a forbidden read says for whom, like a values source, and a missing one
    which field names it (always a Secret of the HelmRelease's own namespace: the field has no namespace)."""
    try:
        return await kube.secret_data(namespace, name)
    except NotFound as error:
        raise NotFound(
            f"Secret {namespace}/{name} ({field}) does not exist; create it in this HelmRelease's namespace or fix "
            f"{field}.name",
            error.status,
        ) from None
    except Forbidden as error:
        raise Forbidden(
            forbidden_message(f"Secret {namespace}/{name} ({field})", "Secret", kube, error), error.status
        ) from None


def read_chart_file(chart_path: Path, source: ChartFileSelector) -> str:
    """A values file inside the fetched chart; symlinks or `..` that lead out of it are refused."""
    root = chart_path.resolve()
    path = (root / source.path).resolve()
    if not path.is_relative_to(root):
        raise MissingSource(f"{source.label} is outside the chart")
    if not path.is_file():
        raise MissingSource(f"{source.label} does not exist in the chart")
    return path.read_text()
