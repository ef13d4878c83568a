"""Drift: does a live object still say what the release manifest declared? Pure, so it is table-tested.

The manifest is what Helm applied; the live object is that plus what the apiserver and controllers added (defaults,
status, managed fields, our own annotations). So the comparison is one-sided: every value the manifest declares must
be present and equal in the live object; anything extra in the live object is not drift. Lists compare position by
position with the same rule, so a container list whose image was edited is drift, while a defaulted
`terminationMessagePath` inside it is not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from helmrelease.api.aliasing import ExcessiveAliasing, check_aliasing

#: A resource carrying this annotation with the value "disabled" is never reported as drifted (helm-controller
#: spells it helm.toolkit.fluxcd.io/driftDetection; we accept both).
DRIFT_ANNOTATIONS: Final = ("helm.fluxcd.io/driftDetection", "helm.toolkit.fluxcd.io/driftDetection")

# Fields the apiserver owns or rewrites; a difference there is never a user's edit of the release.
_IGNORED_METADATA: Final = frozenset(
    {"creationTimestamp", "generation", "managedFields", "resourceVersion", "uid", "selfLink", "namespace"}
)
_IGNORED_TOP: Final = frozenset({"status"})


@dataclass(frozen=True)
class ManifestObject:
    """One object of a release manifest, with what it takes to fetch its live counterpart."""

    api_version: str
    kind: str
    name: str
    namespace: str | None
    body: Mapping[str, Any]

    @property
    def label(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


@dataclass(frozen=True)
class Drift:
    """What differs: the object, and the first few paths that differ (or that it is missing)."""

    obj: ManifestObject
    missing: bool
    paths: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.missing:
            return f"{self.obj.label} is missing"
        return f"{self.obj.label} changed at {', '.join(self.paths)}"


def parse_manifest(manifest: str, default_namespace: str) -> list[ManifestObject]:
    """The objects of a Helm release manifest (multi-document YAML); documents that are not objects are skipped.

    Namespaced objects without a namespace get the release namespace, as Helm applied them; the caller decides
    cluster scope from discovery and then ignores the namespace.
    """
    yaml = YAML(typ="safe", pure=True)
    objects: list[ManifestObject] = []
    try:
        documents = list(yaml.load_all(manifest))
        for document in documents:
            check_aliasing(document)
    except (YAMLError, ExcessiveAliasing):
        return objects
    for document in documents:
        if not isinstance(document, Mapping):
            continue
        metadata = document.get("metadata") or {}
        api_version, kind, name = document.get("apiVersion"), document.get("kind"), metadata.get("name")
        if not (isinstance(api_version, str) and isinstance(kind, str) and isinstance(name, str)):
            continue
        if kind.endswith("List"):
            continue
        namespace = metadata.get("namespace") or default_namespace
        objects.append(ManifestObject(api_version, kind, name, str(namespace), document))
    return objects


def drift_disabled(live: Mapping[str, Any]) -> bool:
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    return any(annotations.get(key) == "disabled" for key in DRIFT_ANNOTATIONS)


def find_drift(obj: ManifestObject, live: Mapping[str, Any] | None, *, max_paths: int = 5) -> Drift | None:
    """The drift of one object, or None when the live object still says everything the manifest declares."""
    if live is None:
        return Drift(obj, missing=True)
    if drift_disabled(live):
        return None
    paths = list(_differences(obj.body, live, "", top=True))
    if not paths:
        return None
    return Drift(obj, missing=False, paths=tuple(paths[:max_paths]))


def _differences(declared: Any, live: Any, path: str, *, top: bool = False) -> Iterable[str]:
    if isinstance(declared, Mapping):
        if not isinstance(live, Mapping):
            yield path or "."
            return
        for key, value in declared.items():
            if top and key in _IGNORED_TOP:
                continue
            if path == ".metadata" and key in _IGNORED_METADATA:
                continue
            child = f"{path}.{key}"
            if key not in live:
                if not _is_empty(value):
                    yield child
                continue
            yield from _differences(value, live[key], child)
        return
    if isinstance(declared, Sequence) and not isinstance(declared, str):
        if not isinstance(live, Sequence) or isinstance(live, str) or len(live) != len(declared):
            yield path
            return
        for index, (item, live_item) in enumerate(zip(declared, live, strict=True)):
            yield from _differences(item, live_item, f"{path}[{index}]")
        return
    if not _scalars_equal(declared, live):
        yield path


def _is_empty(value: Any) -> bool:
    """`{}`, `[]`, `null` and `""` in a manifest are dropped by the apiserver, so their absence is not drift."""
    return value is None or value == "" or (isinstance(value, (Mapping, list)) and not value)


def _scalars_equal(declared: Any, live: Any) -> bool:
    if declared == live:
        return True
    # The apiserver normalises some scalars: int-or-string ports ("80" vs 80), booleans written as strings.
    if isinstance(declared, (int, float, str, bool)) and isinstance(live, (int, float, str, bool)):
        return str(declared).lower() == str(live).lower()
    return False
