"""``helmrelease diff FILE_OR_NAME``: what reconciling a HelmRelease would change in its release, per object.

The chart is rendered with the values the reconciler would compose (``reconcile.preview``: the pass's own chart
fetch and value composition, then ``helm template``) and compared with the release's manifest in the cluster
(``helm get manifest``), object by object, Secrets masked (``reconcile.manifest_diff``). A NAME is read from the
cluster; a FILE (``-`` for stdin) holds the HelmRelease as it would be applied.

``--offline`` needs no cluster, for a CI job: values sources come from ``--values-from-file
KIND/[NAMESPACE/]NAME[:KEY]=PATH`` (KEY defaults to ``values.yaml``) and from the ConfigMaps and Secrets in the
files themselves; the other side of the diff is ``--base OTHER_FILE`` rendered the same way (the HelmRelease as
it is on the main branch), or nothing (every object is added).

Exit codes: 0 no difference; 1 differences (printed); 2 bad input, or the chart, a values source, helm or the
cluster failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import BeforeValidator
from pydantic_settings import NoDecode
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from helmrelease.adapters.charts import ChartFetcher, FetcherSettings
from helmrelease.adapters.files import read_text
from helmrelease.adapters.helm import HelmCommand, HelmError, HelmSettings
from helmrelease.adapters.kube import KubeClient, KubeError
from helmrelease.adapters.web import WebReader
from helmrelease.api.aliasing import ExcessiveAliasing, check_aliasing
from helmrelease.api.constants import API_VERSION, DEFAULT_GIT_REF, DEFAULT_VALUES_KEY, KIND
from helmrelease.api.errors import SpecError
from helmrelease.api.resource import HelmRelease, parse_helmrelease
from helmrelease.cli.argtypes import Boolean, InvalidValue, OptionalPath, OptionalText, Text, Words, one_of
from helmrelease.cli.operate import (
    EXIT_NO,
    EXIT_OK,
    SETTINGS_NOTE,
    ClusterSettings,
    fail,
    kube_client,
    read_helmrelease,
)
from helmrelease.cli.output import dump_yaml, render
from helmrelease.cli.settings import flag, switch
from helmrelease.reconcile.inputs import Inputs, SourceError, SourceReader
from helmrelease.reconcile.manifest_diff import ObjectDiff, diff_manifests
from helmrelease.reconcile.masking import Masker
from helmrelease.reconcile.preview import LocalSources, Rendering, render_release
from helmrelease.reconcile.values import ValuesError

DIFF_OUTPUTS: Final = ("diff", "json", "yaml")
SOURCE_KINDS: Final = {"configmap": "ConfigMap", "secret": "Secret"}
_RED, _GREEN, _CYAN, _RESET = "\033[31m", "\033[32m", "\033[36m", "\033[0m"


@dataclass(frozen=True)
class LocalFile:
    """One ``--values-from-file``: the text of PATH as key ``key`` of ConfigMap or Secret ``namespace/name``
    (``namespace`` None: the HelmRelease's)."""

    kind: str
    namespace: str | None
    name: str
    key: str
    path: Path


def local_file(text: str | LocalFile) -> LocalFile:
    """``KIND/[NAMESPACE/]NAME[:KEY]=PATH``, KIND ``ConfigMap`` or ``Secret`` in any case."""
    if isinstance(text, LocalFile):
        return text
    source, equals, path = text.partition("=")
    kind, _, rest = source.strip().partition("/")
    where, _, key = rest.partition(":")
    namespace, _, name = where.rpartition("/")
    if not equals or not path.strip() or kind.lower() not in SOURCE_KINDS or not name or "/" in namespace:
        raise InvalidValue(
            f"must be KIND/[NAMESPACE/]NAME[:KEY]=PATH with KIND ConfigMap or Secret, not {text!r}"
        )
    return LocalFile(
        SOURCE_KINDS[kind.lower()], namespace or None, name, key or DEFAULT_VALUES_KEY, Path(path)
    )


def local_files(value: str | Iterable[str | LocalFile]) -> tuple[LocalFile, ...]:
    """The repeated flag's values, or the variable's, comma-separated; an error quotes what was given."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return tuple(local_file(item) for item in items)
    except InvalidValue:
        shown = value if isinstance(value, str) else [str(item) for item in items]
        raise InvalidValue(
            f"must be KIND/[NAMESPACE/]NAME[:KEY]=PATH with KIND ConfigMap or Secret, not {shown!r}"
        ) from None


class DiffSettings(ClusterSettings):
    #: Not ``output``: its words differ from ``get``'s, so its variable does too.
    diff_output: Annotated[
        str,
        BeforeValidator(one_of(*DIFF_OUTPUTS)),
        flag(
            "--output", "-o", metavar="|".join(DIFF_OUTPUTS), help="a unified diff for people, json or yaml"
        ),
    ] = "diff"
    offline: Annotated[
        Boolean,
        switch("--offline", help="no cluster: values sources from --values-from-file, compared with --base"),
    ] = False
    values_from_file: Annotated[
        tuple[LocalFile, ...],
        NoDecode,
        BeforeValidator(local_files),
        flag(
            "--values-from-file",
            repeatable=True,
            metavar="KIND/[NS/]NAME[:KEY]=PATH",
            help="offline: a ConfigMap's or Secret's key (default values.yaml) read from PATH (repeatable)",
        ),
    ] = ()
    base: Annotated[
        OptionalPath,
        flag("--base", metavar="FILE", help="offline: compare with this HelmRelease, rendered the same way"),
    ] = None
    select: Annotated[
        OptionalText, flag("--select", metavar="NAME", help="the HelmRelease NAME of a file holding several")
    ] = None
    helm: Annotated[Text, flag("--helm", metavar="PATH", help="helm binary, v3 or v4")] = "helm"
    insecure_registries: Annotated[
        Words,
        flag(
            "--insecure-registry", repeatable=True, metavar="HOST", help="OCI chart registry over plain HTTP"
        ),
    ] = ()


class DiffInputError(Exception):
    """A file, flag or HelmRelease the diff cannot work with; the message says which and why."""


# --- reading files ----------------------------------------------------------------------------------------------


def yaml_documents(text: str, where: str) -> list[Mapping[str, Any]]:
    """The mapping documents of a (multi-document) YAML text; raises `DiffInputError`. A CI job diffs a pull
    request's files, which anyone may write: aliases are measured before anything walks them (`check_aliasing`)."""
    try:
        documents = list(YAML(typ="safe", pure=True).load_all(text))
        for document in documents:
            check_aliasing(document)
    except ExcessiveAliasing as error:
        raise DiffInputError(f"{where}: {error}") from None
    except (YAMLError, RecursionError) as error:
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise DiffInputError(f"{where}: {problem}") from None
    return [document for document in documents if isinstance(document, Mapping)]


def _is_helmrelease(document: Mapping[str, Any]) -> bool:
    return document.get("apiVersion") == API_VERSION and document.get("kind") == KIND


def select_helmrelease(
    documents: Sequence[Mapping[str, Any]], where: str, select: str | None, namespace: str
) -> HelmRelease:
    """The one HelmRelease of a file (or the one named ``select``), its namespace defaulted to ``namespace``."""
    found = [document for document in documents if _is_helmrelease(document)]
    names = [str((document.get("metadata") or {}).get("name")) for document in found]
    if select is not None:
        found = [document for document, name in zip(found, names, strict=True) if name == select]
    if len(found) != 1:
        what = f"no HelmRelease {select!r}" if select and not found else f"{len(found)} HelmReleases"
        hint = f" ({', '.join(names)}): pick one with --select NAME" if len(found) > 1 else ""
        raise DiffInputError(f"{where} holds {what}{hint}")
    document = dict(found[0])
    metadata = dict(document.get("metadata") or {})
    metadata.setdefault("namespace", namespace)
    document["metadata"] = metadata
    try:
        return parse_helmrelease(document)
    except SpecError as error:
        raise DiffInputError(f"{where}: {error}") from None


def _decoded(value: object, where: str) -> str:
    try:
        return base64.b64decode(str(value), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise DiffInputError(f"{where}: not base64-encoded UTF-8") from None


def add_documented_sources(
    sources: LocalSources, documents: Iterable[Mapping[str, Any]], namespace: str
) -> None:
    """ConfigMaps and Secrets in a file become values sources (their namespace defaulted to ``namespace``)."""
    for document in documents:
        kind = document.get("kind")
        if document.get("apiVersion") != "v1" or kind not in ("ConfigMap", "Secret"):
            continue
        metadata = document.get("metadata") or {}
        name, where = metadata.get("name"), str(metadata.get("namespace") or namespace)
        if not isinstance(name, str):
            continue
        for key, value in (document.get("data") or {}).items():
            text = _decoded(value, f"{kind} {where}/{name} key {key}") if kind == "Secret" else str(value)
            sources.add(str(kind), where, name, str(key), text)
        if kind == "Secret":
            for key, value in (document.get("stringData") or {}).items():
                sources.add("Secret", where, name, str(key), str(value))


def add_local_files(sources: LocalSources, files: Iterable[LocalFile], namespace: str) -> None:
    """``--values-from-file`` sources; one that names no namespace is in ``namespace`` (the HelmRelease's)."""
    for given in files:
        try:
            text = read_text(given.path)
        except (OSError, UnicodeDecodeError) as error:
            raise DiffInputError(f"--values-from-file {given.path}: {error}") from None
        sources.add(given.kind, given.namespace or namespace, given.name, given.key, text)


def read_file(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else read_text(Path(path))
    except (OSError, UnicodeDecodeError) as error:
        raise DiffInputError(f"{path}: {error}") from None


# --- rendering and comparing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffResult:
    hr: HelmRelease
    desired: Rendering
    #: What it is compared with: the live release (or the base's rendering), "" when there is none.
    before: str
    compared_with: str
    diffs: list[ObjectDiff]


class Renderer:
    """The pass's adapters for one command: helm, the chart fetcher and the values reader, in a private directory."""

    def __init__(self, settings: DiffSettings, state: Path) -> None:
        self.settings = settings
        self.state = state
        self.inputs = Inputs(WebReader(), state_dir=state, default_git_ref=DEFAULT_GIT_REF, git_ssh_key=None)

    async def helm(self) -> HelmCommand:
        for sub in ("helm", "tmp", "charts"):
            (self.state / sub).mkdir(mode=0o700, exist_ok=True)
        return await HelmCommand.detect(
            HelmSettings(
                home=self.state / "helm",
                temp_root=self.state / "tmp",
                executable=self.settings.helm,
                # helm gets an allow-listed environment: the kubeconfig kubectl would use is named to it.
                kubeconfig=self.settings.kubeconfig or _environment_kubeconfig(),
                kube_context=self.settings.context,
            )
        )

    async def render(
        self, hr: HelmRelease, helm: HelmCommand, reader: SourceReader, *, is_upgrade: bool
    ) -> Rendering:
        charts = ChartFetcher(
            helm,
            FetcherSettings(
                cache_dir=self.state / "charts", plain_http_hosts=frozenset(self.settings.insecure_registries)
            ),
        )
        return await render_release(
            hr, inputs=self.inputs, charts=charts, helm=helm, reader=reader, is_upgrade=is_upgrade
        )

    async def close(self) -> None:
        await self.inputs.urls.close()


def _environment_kubeconfig() -> Path | None:
    value = os.environ.get("KUBECONFIG")
    return Path(value) if value else None


def _compare(
    hr: HelmRelease, desired: Rendering, before: str, masker: Masker, compared_with: str
) -> DiffResult:
    diffs = diff_manifests(
        before,
        desired.manifest,
        namespace=desired.namespace,
        dump=dump_yaml,
        mask=lambda text: masker(desired.masker(text)),
    )
    return DiffResult(hr, desired, before, compared_with, diffs)


async def diff_online(settings: DiffSettings, target: str, renderer: Renderer) -> DiffResult:
    async with kube_client(settings) as kube:
        namespace = settings.resolved_namespace()
        hr = await _online_helmrelease(kube, settings, target, namespace)
        helm = await renderer.helm()
        live = await helm.manifest(hr.release_name, hr.target_namespace)
        desired = await renderer.render(hr, helm, kube, is_upgrade=live is not None)
        live_masker = await _live_masker(kube, hr, renderer.inputs) if _is_file(target) else Masker()
    where = f"release {hr.target_namespace}/{hr.release_name}"
    return _compare(
        hr, desired, live or "", live_masker, where if live is not None else f"{where} (not installed)"
    )


async def _live_masker(kube: KubeClient, hr: HelmRelease, inputs: Inputs) -> Masker:
    """For a file: the Secret-sourced values of the HelmRelease of that name in the cluster, which the live
    release holds, so a diff that swaps one Secret for another shows neither."""
    obj = await read_helmrelease(kube, hr.metadata.namespace, hr.metadata.name)
    if obj is None:
        return Masker()
    try:
        return await inputs.secret_masker(parse_helmrelease(obj), kube)
    except SpecError:
        return Masker()


async def _online_helmrelease(
    kube: KubeClient, settings: DiffSettings, target: str, namespace: str
) -> HelmRelease:
    if _is_file(target):
        return select_helmrelease(
            yaml_documents(read_file(target), target), target, settings.select, namespace
        )
    obj = await read_helmrelease(kube, namespace, target)
    if obj is None:
        raise DiffInputError(f"HelmRelease {namespace}/{target} not found (and no file {target!r})")
    try:
        return parse_helmrelease(obj)
    except SpecError as error:
        raise DiffInputError(f"HelmRelease {namespace}/{target}: {error}") from None


async def diff_offline(settings: DiffSettings, target: str, renderer: Renderer) -> DiffResult:
    if not _is_file(target):
        raise DiffInputError(f"--offline needs a FILE, and there is no file {target!r}")
    namespace = settings.namespace or "default"
    documents = yaml_documents(read_file(target), target)
    hr = select_helmrelease(documents, target, settings.select, namespace)
    sources = LocalSources()
    base_documents = (
        yaml_documents(read_file(str(settings.base)), str(settings.base)) if settings.base else []
    )
    base_hr = None
    if settings.base is not None:
        base_hr = select_helmrelease(
            base_documents, str(settings.base), settings.select or hr.metadata.name, namespace
        )
    for docs in (base_documents, documents):  # the file's own objects win over the base's
        add_documented_sources(sources, docs, namespace)
    for release in {hr.metadata.namespace, base_hr.metadata.namespace if base_hr else hr.metadata.namespace}:
        add_local_files(sources, settings.values_from_file, release)
    helm = await renderer.helm()
    base_masker, before, compared_with = Masker(), "", "nothing (no --base)"
    if base_hr is not None:
        base = await renderer.render(base_hr, helm, sources, is_upgrade=False)
        base_masker, before, compared_with = base.masker, base.manifest, f"{settings.base}"
    desired = await renderer.render(hr, helm, sources, is_upgrade=base_hr is not None)
    return _compare(hr, desired, before, base_masker, compared_with)


def _is_file(target: str) -> bool:
    return target == "-" or Path(target).is_file() or target.endswith((".yaml", ".yml", ".json"))


# --- printing -------------------------------------------------------------------------------------------------


def colored(text: str) -> str:
    lines = []
    for line in text.splitlines(keepends=True):
        color = {"-": _RED, "+": _GREEN, "@": _CYAN}.get(line[:1])
        lines.append(f"{color}{line.rstrip(chr(10))}{_RESET}\n" if color else line)
    return "".join(lines)


def diff_text(result: DiffResult, *, color: bool = False) -> str:
    text = "\n".join(diff.text() for diff in result.diffs)
    return colored(text) if color else text


def diff_record(result: DiffResult) -> dict[str, Any]:
    """``-o json|yaml``: the release, what it was compared with, and each object that differs."""
    return {
        "namespace": result.hr.metadata.namespace,
        "name": result.hr.metadata.name,
        "release_name": result.desired.release,
        "release_namespace": result.desired.namespace,
        "chart_revision": result.desired.chart_revision,
        "compared_with": result.compared_with,
        "changed": bool(result.diffs),
        "objects": [
            {
                "api_group": diff.key.group,
                "kind": diff.key.kind,
                "namespace": diff.key.namespace,
                "name": diff.key.name,
                "change": str(diff.change),
                "diff": "".join(diff.lines),
            }
            for diff in result.diffs
        ],
    }


def run_diff(args: argparse.Namespace) -> int:
    settings: DiffSettings = args.settings
    if (settings.values_from_file or settings.base) and not settings.offline:
        return fail(
            "diff", "--values-from-file and --base need --offline (online, sources come from the cluster)"
        )

    async def work() -> DiffResult:
        with tempfile.TemporaryDirectory(prefix="helmrelease-diff-") as state:
            renderer = Renderer(settings, Path(state))
            try:
                if settings.offline:
                    return await diff_offline(settings, args.target, renderer)
                return await diff_online(settings, args.target, renderer)
            finally:
                await renderer.close()

    try:
        result = asyncio.run(work())
    except (DiffInputError, SourceError, ValuesError) as error:
        hint = (
            " (offline: give it with --values-from-file)"
            if settings.offline and isinstance(error, SourceError)
            else ""
        )
        return fail("diff", f"{error}{hint}")
    except HelmError as error:
        return fail("diff", f"helm {error.operation}: {error.cause}")
    except KubeError as error:
        return fail("diff", str(error))
    if settings.diff_output == "diff":
        if result.diffs:
            print(diff_text(result, color=sys.stdout.isatty()), end="")
        summary = f"{len(result.diffs)} object(s) differ" if result.diffs else "no differences"
        print(
            f"HelmRelease {result.hr.metadata.namespace}/{result.hr.metadata.name}: {summary} from {result.compared_with}",
            file=sys.stderr,
        )
    else:
        print(render(diff_record(result), settings.diff_output, lambda: ""))
    return EXIT_NO if result.diffs else EXIT_OK


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "diff",
        help="what reconciling a HelmRelease would change in its release, per object (exit 1 when something would)",
        description="What reconciling a HelmRelease would change in its release, per object, Secrets masked: exit "
        "0 when nothing, 1 when something, 2 on error. " + SETTINGS_NOTE,
    )
    parser.add_argument(
        "target",
        metavar="FILE_OR_NAME",
        help="a HelmRelease file (- for stdin) or the name of one in the cluster",
    )
    DiffSettings.add_arguments(parser)
    parser.set_defaults(handler=run_diff, settings_model=DiffSettings)
