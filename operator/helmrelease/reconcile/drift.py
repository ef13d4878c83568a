"""Drift: does a live object still say what the release manifest declared? Pure, so it is table-tested.

The manifest is what Helm applied; the live object is that plus what the apiserver and controllers added (defaults,
status, managed fields, our own annotations). So the comparison is one-sided: every value the manifest declares must
be present and equal in the live object; anything extra in the live object is not drift. Lists compare position by
position with the same rule, so a container list whose image was edited is drift, while a defaulted
`terminationMessagePath` inside it is not.

What drifted is told in a few lines (`drift_summary`): the first `SUMMARY_OBJECTS` objects with their first
`PATHS_SHOWN` field paths, each path at most `PATH_MAX` characters, then how many more. Only what is shown is kept;
the rest is counted, so a hostile release that drifts in thousands of fields costs a counter, not a list.
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import yaml as pyyaml  # type: ignore[import-untyped]  # PyYAML ships no type information
from ruamel.yaml import YAML
from ruamel.yaml import resolver as ruamel_resolver
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
#: Objects named in a drift summary, field paths named per object, characters of one path shown.
SUMMARY_OBJECTS: Final = 5
PATHS_SHOWN: Final = 3
PATH_MAX: Final = 120
#: Characters of an object's kind, namespace and name shown (Kubernetes allows 253 for a name).
LABEL_MAX: Final = 300


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
    #: How many more paths differ than `paths` holds.
    more: int = 0

    def describe(self) -> str:
        """One line, whatever the manifest says: names and paths shortened, control characters escaped."""
        label = _shortened(self.obj.label, LABEL_MAX)
        if self.missing:
            return f"{label} is missing"
        more = f" and {self.more} more" if self.more else ""
        return f"{label} changed at {', '.join(_shortened(path) for path in self.paths)}{more}"


def drift_summary(release: str, drifts: Sequence[Drift]) -> str | None:
    """A person's account of the drift of `release`, one line per object, or None when nothing drifted."""
    if not drifts:
        return None
    objects = "1 object differs" if len(drifts) == 1 else f"{len(drifts)} objects differ"
    lines = [f"Drift in release {release}: {objects} from the release manifest"]
    lines.extend(drift.describe() for drift in drifts[:SUMMARY_OBJECTS])
    if len(drifts) > SUMMARY_OBJECTS:
        lines.append(f"and {len(drifts) - SUMMARY_OBJECTS} more objects")
    return "\n".join(lines)


def _shortened(text: str, limit: int = PATH_MAX) -> str:
    """`text` on one line in at most `limit` characters: its start and its end (the field that differs) kept.

    The manifest is tenant-writable: a key or name may hold newlines or terminal escapes, shown escaped.
    """
    if len(text) > limit:
        head = limit // 2
        text = f"{text[:head]}…{text[-(limit - head - 1) :]}"
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def parse_manifest(manifest: str, default_namespace: str) -> list[ManifestObject]:
    """The objects of a Helm release manifest (multi-document YAML); documents that are not objects are skipped.

    Namespaced objects without a namespace get the release namespace, as Helm applied them; the caller decides
    cluster scope from discovery and then ignores the namespace.
    """
    objects: list[ManifestObject] = []
    try:
        documents = _yaml12_documents(manifest)
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


class _NotPlainData(Exception):
    """What the libyaml reading leaves to ruamel: tags, merge keys, timestamps, duplicate keys."""


class _Resolver12(pyyaml.resolver.BaseResolver):  # type: ignore[misc]
    """YAML 1.2's implicit types, from ruamel's own table, so both readings resolve every plain scalar alike."""


for _versions, _tag, _pattern, _first in ruamel_resolver.implicit_resolvers:
    if (1, 2) in _versions:
        _Resolver12.add_implicit_resolver(_tag, _pattern, _first)


_MERGE_TAGS: Final = frozenset({"tag:yaml.org,2002:merge", "tag:yaml.org,2002:value"})


class _Constructor12(pyyaml.constructor.SafeConstructor):  # type: ignore[misc]
    """Plain data the way ruamel's safe YAML 1.2 reading builds it; anything else raises `_NotPlainData`."""

    def construct_yaml_int(self, node: Any) -> int:
        text = self.construct_scalar(node).replace("_", "")
        sign = -1 if text[0] == "-" else 1
        text = text.lstrip("+-")
        for prefix, base in (("0b", 2), ("0x", 16), ("0o", 8)):
            if text.startswith(prefix):
                return sign * int(text[2:], base)
        return sign * int(text)

    def construct_yaml_float(self, node: Any) -> float:
        text = self.construct_scalar(node).replace("_", "").lower()
        sign = -1 if text[0] == "-" else 1
        text = text.lstrip("+-")
        if text == ".inf":
            return sign * float("inf")
        if text == ".nan":
            return float("nan")
        return sign * float(text)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if any(key.tag in _MERGE_TAGS for key, _ in node.value):
            raise _NotPlainData("a merge key")
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        # `1` and `true` are one key to Python, and a repeated one to ruamel.
        if len(mapping) != len(node.value):
            raise _NotPlainData("a repeated key")
        return mapping

    def construct_undefined(self, node: Any) -> Any:
        raise _NotPlainData(f"tag {node.tag}")


# SafeConstructor registered its own functions, not methods looked up on the instance: ours replace them. Its map
# constructor calls `self.construct_mapping`, so it stays.
for _tag in list(_Constructor12.yaml_constructors):
    if _tag is not None and not _tag.endswith((":str", ":int", ":float", ":bool", ":null", ":seq", ":map")):
        _Constructor12.add_constructor(_tag, _Constructor12.construct_undefined)
_Constructor12.add_constructor("tag:yaml.org,2002:int", _Constructor12.construct_yaml_int)
_Constructor12.add_constructor("tag:yaml.org,2002:float", _Constructor12.construct_yaml_float)


def _loader12() -> type | None:
    """libyaml's parser with the resolver and constructors above; None without libyaml."""
    parser: Any = getattr(getattr(pyyaml, "cyaml", None), "CParser", None)
    if parser is None:
        return None

    class Loader12(parser, _Constructor12, _Resolver12):  # type: ignore[misc]
        def __init__(self, stream: str) -> None:
            parser.__init__(self, stream)
            _Constructor12.__init__(self)
            _Resolver12.__init__(self)

    return Loader12


_LOADER12: Final = _loader12()


def _yaml12_documents(manifest: str) -> list[Any]:
    """The documents of `manifest` as ruamel's safe YAML 1.2 reading gives them, at libyaml's speed where it can.

    ruamel's pure-Python parse was most of a first drift check's CPU (a tenth of a resync pass). libyaml parses; the
    resolver and constructors above build what ruamel would. Whatever they do not cover (tags, merge keys,
    timestamps, repeated keys, anchors, a %YAML directive, anything libyaml refuses) is read by ruamel, as before.
    """
    # Anchors (so aliases) and tags too: the two libraries end an anchor's name at different characters, and
    # resolve a bare `!` apart. The characters rarely appear in a rendered manifest otherwise.
    if _LOADER12 is not None and not any(mark in manifest for mark in ("%YAML", "&", "!")):
        try:
            return list(pyyaml.load_all(manifest, Loader=_LOADER12))
        except (_NotPlainData, pyyaml.YAMLError, ValueError, TypeError, RecursionError):
            pass
    return list(YAML(typ="safe", pure=True).load_all(manifest))


def manifest_identities(manifest: str, default_namespace: str) -> list[ManifestObject]:
    """The objects of a manifest as `parse_manifest` finds them, by identity only (`body` is empty): what marking
    them takes, at libyaml's speed.

    The pure-Python parse of `parse_manifest` was a sixth of the operator's CPU during installs, for three names.
    Names, kinds and namespaces are strings that read alike in YAML 1.1 and 1.2 (the apiserver refused any other
    when helm applied them); no value is walked, so aliases cost nothing. Without libyaml, or on YAML libyaml
    refuses, `parse_manifest` decides.
    """
    loader = getattr(pyyaml, "CSafeLoader", None)
    if loader is None:
        return [replace(obj, body={}) for obj in parse_manifest(manifest, default_namespace)]
    objects: list[ManifestObject] = []
    try:
        for document in pyyaml.load_all(manifest, Loader=loader):
            obj = _identity(document, default_namespace)
            if obj is not None:
                objects.append(obj)
    except (pyyaml.YAMLError, RecursionError):
        return [replace(obj, body={}) for obj in parse_manifest(manifest, default_namespace)]
    return objects


def _identity(document: Any, default_namespace: str) -> ManifestObject | None:
    if not isinstance(document, Mapping):
        return None
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping):
        metadata = {}
    api_version, kind, name = document.get("apiVersion"), document.get("kind"), metadata.get("name")
    if not (isinstance(api_version, str) and isinstance(kind, str) and isinstance(name, str)):
        return None
    if kind.endswith("List"):
        return None
    namespace = metadata.get("namespace") or default_namespace
    return ManifestObject(api_version, kind, name, str(namespace), {})


def pack_objects(objects: Sequence[ManifestObject]) -> bytes | None:
    """The objects of a parsed manifest in a few hundred bytes (compressed JSON), to keep one per release between
    drift checks: parsed dictionaries cost about twenty times as much, and parsing again costs the YAML parse that
    the cache saves. None when JSON would not give the same objects back (non-string keys, timestamps, NaN...):
    only an exact round trip is kept.
    """
    rows = [[obj.api_version, obj.kind, obj.name, obj.namespace, obj.body] for obj in objects]
    try:
        text = json.dumps(rows, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None
    if json.loads(text) != rows:
        return None
    return zlib.compress(text.encode())


def unpack_objects(packed: bytes) -> tuple[ManifestObject, ...]:
    """The objects `pack_objects` packed."""
    rows = json.loads(zlib.decompress(packed))
    return tuple(ManifestObject(*row) for row in rows)


def drift_disabled(live: Mapping[str, Any]) -> bool:
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    return any(annotations.get(key) == "disabled" for key in DRIFT_ANNOTATIONS)


def find_drift(
    obj: ManifestObject, live: Mapping[str, Any] | None, *, max_paths: int = PATHS_SHOWN
) -> Drift | None:
    """The drift of one object, or None when the live object still says everything the manifest declares.

    The first `max_paths` differing paths are kept, the others only counted.
    """
    if live is None:
        return Drift(obj, missing=True)
    if drift_disabled(live):
        return None
    differences = iter(_differences(obj.body, live, "", top=True))
    paths = tuple(itertools.islice(differences, max_paths))
    if not paths:
        return None
    return Drift(obj, missing=False, paths=paths, more=sum(1 for _ in differences))


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
