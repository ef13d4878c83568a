"""Editing image tags in HelmRelease manifests as text, so the git diff is the tag and nothing else.

A YAML dump of a round-tripped document still reflows long lines, normalises quotes and indentation and
drops some comments, so we never dump. We read the file with ruamel.yaml only to learn where the tag's
scalar starts (line and column), splice the new tag into the original text in the scalar's own quoting
style, and then read the result back to prove the only difference in the data is that one value. An edit
that cannot be proven (a tag behind an alias or anchor, a block scalar, an escape sequence) is refused.

Documents are HelmReleases when ``apiVersion`` is ``helm.fluxcd.io/v1`` (or the older
``flux.weave.works/v1beta1``) and ``kind`` is ``HelmRelease``; one without ``metadata.namespace`` lives in
the namespace it will be applied to, ``default`` unless the caller says otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any, Final

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, TaggedScalar
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver

from helmrelease.api.aliasing import ExcessiveAliasing, check_aliasing
from helmrelease.images.detect import Detection, ValueChange, ValuePath, detect_images, dotted
from helmrelease.images.reference import check_tag

HELMRELEASE_API_VERSIONS: Final = frozenset({"helm.fluxcd.io/v1", "flux.weave.works/v1beta1"})
HELMRELEASE_KIND: Final = "HelmRelease"
DEFAULT_NAMESPACE: Final = "default"
_STRING_TAG: Final = "tag:yaml.org,2002:str"
_LINE_BREAK = re.compile(r"\r\n|[\n\r\x85\u2028\u2029]")
_PLAIN_END = re.compile(r"[\r\n\x85\u2028\u2029,\]}]|[ \t]#")


class ManifestError(ValueError):
    """A manifest that does not parse as YAML."""


class UnsafeEditError(ManifestError):
    """The image was found but its tag cannot be changed without touching anything else; edit by hand."""


@dataclass(frozen=True)
class ReleaseId:
    """Namespace and name: how a HelmRelease is addressed."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ReleaseImages:
    """One HelmRelease document of a file, with its annotations and the images found in its values."""

    release: ReleaseId
    document_index: int
    annotations: Mapping[str, object]
    detection: Detection


class EditStatus(StrEnum):
    """Outcome of a tag edit, from best to worst."""

    UPDATED = "updated"
    UNCHANGED = "unchanged"
    NOT_AUTOMATABLE = "not-automatable"
    NO_CONTAINER = "no-container"
    NO_RELEASE = "no-release"


def best_status(statuses: Iterable[EditStatus]) -> EditStatus:
    """The best of several outcomes (one release in several documents or files); none is ``NO_RELEASE``."""
    return min(statuses, key=list(EditStatus).index, default=EditStatus.NO_RELEASE)


@dataclass(frozen=True)
class TagEdit:
    """The new text (the old one unless ``UPDATED``), the value changes made, and a sentence for people."""

    status: EditStatus
    text: str
    changes: tuple[ValueChange, ...]
    detail: str


def _load(text: str) -> list[Any]:
    """The documents of ``text``. A file in git is anyone's input, and ruamel's constructors raise plain
    exceptions for some of it (``!!int abc``, ``2001-99-99`` as a timestamp, nesting past the recursion
    limit): every failure to read is a ``ManifestError``, so one bad file never stops the others."""
    try:
        documents = list(YAML(typ="rt").load_all(text))
        for document in documents:
            check_aliasing(document)
        return documents
    except ExcessiveAliasing as error:
        raise ManifestError(f"not accepted: {error}") from error
    except YAMLError as error:
        raise ManifestError(f"not valid YAML: {error}") from error
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise ManifestError(f"not valid YAML: {type(error).__name__}: {error}") from error


def _plain(node: object) -> object:
    """Round-trip types as plain Python (``ScalarFloat`` → ``float``, ``CommentedMap`` → ``dict``)."""
    if isinstance(node, Mapping):
        return {_plain(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    if isinstance(node, TaggedScalar):
        return str(node.value) if node.tag.value == _STRING_TAG else (node.tag.value, node.value)
    if isinstance(node, bool | date | type(None)):
        return node
    for kind in (str, int, float):
        if isinstance(node, kind):
            return kind(node)
    return node


def _release_id(document: object, default_namespace: str) -> ReleaseId | None:
    if not isinstance(document, Mapping):
        return None
    if document.get("apiVersion") not in HELMRELEASE_API_VERSIONS or document.get("kind") != HELMRELEASE_KIND:
        return None
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
        return None
    namespace = metadata.get("namespace")
    return ReleaseId(
        namespace if isinstance(namespace, str) and namespace else default_namespace, metadata["name"]
    )


def _values(document: Mapping[str, Any]) -> object:
    spec = document.get("spec")
    return spec.get("values") if isinstance(spec, Mapping) else None


def _annotations(document: Mapping[str, Any]) -> Mapping[str, object]:
    """String keys only: a complex YAML key (``? [a]``) is no annotation."""
    annotations = _plain(document["metadata"].get("annotations"))
    if not isinstance(annotations, dict):
        return {}
    return {key: value for key, value in annotations.items() if isinstance(key, str)}


def _read(documents: Sequence[Any], default_namespace: str) -> list[ReleaseImages]:
    releases = []
    for index, document in enumerate(documents):
        release = _release_id(document, default_namespace)
        if release is not None:
            annotations = _annotations(document)
            detection = detect_images(_plain(_values(document)), annotations)
            releases.append(ReleaseImages(release, index, annotations, detection))
    return releases


def read_releases(text: str, default_namespace: str = DEFAULT_NAMESPACE) -> list[ReleaseImages]:
    """Every HelmRelease in a (multi-document) YAML text, with its images; other documents are skipped.

    Raises ``ManifestError`` for a text that is not YAML (nesting too deep for the parser included: it
    gives up before anything of ours that walks the documents would).
    """
    return _read(_load(text), default_namespace)


def _reads_as_same_string(value: str) -> bool:
    """Whether ``value`` written plain reads back as this string under YAML 1.1 (Helm, kubectl) and 1.2."""
    if not value[:1].isalnum():
        return False
    return all(
        VersionedResolver(version=version).resolve(ScalarNode, value, (True, False)).value == _STRING_TAG
        for version in ((1, 1), (1, 2))
    )


@dataclass(frozen=True)
class _Splice:
    start: int
    end: int
    replacement: str


def _line_starts(text: str) -> list[int]:
    return [0, *(match.end() for match in _LINE_BREAK.finditer(text))]


def _quoted_end(text: str, start: int) -> int:
    """End (exclusive) of the quoted scalar opening at ``start``; ``''`` and backslash escapes included."""
    quote, index = text[start], start + 1
    while index < len(text):
        char = text[index]
        if quote == '"' and char == "\\":
            index += 2
            continue
        if char == quote:
            if quote == "'" and text[index + 1 : index + 2] == "'":
                index += 2
                continue
            return index + 1
        index += 1
    raise UnsafeEditError("unterminated quoted scalar")


def _splice_for(text: str, offset: int, change: ValueChange, where: str) -> _Splice:
    """Replace the scalar at ``offset`` if it is written as the simple one-line string we expect."""
    first = text[offset : offset + 1]
    if first in ("'", '"'):
        end = _quoted_end(text, offset)
        raw = text[offset:end]
        inner = raw[1:-1]
        decoded = inner.replace("''", "'") if first == "'" else (None if "\\" in inner else inner)
        replacement = f"{first}{change.new}{first}"
    else:
        stop = _PLAIN_END.search(text, offset)
        end = len(text[: stop.start() if stop else len(text)].rstrip(" \t"))
        raw = decoded = text[offset:end]
        replacement = change.new if _reads_as_same_string(change.new) else f'"{change.new}"'
    if decoded != change.old:
        raise UnsafeEditError(
            f"{where} is not written as a simple one-line string (found {raw!r}); change it by hand"
        )
    return _Splice(offset, end, replacement)


def _position(document: Mapping[str, Any], path: ValuePath) -> tuple[int, int]:
    node: Any = _values(document)
    for key in path[:-1]:
        node = node[key]
    if not isinstance(node, CommentedMap):
        raise UnsafeEditError(f"{dotted(path)} is not inside a YAML mapping")
    try:
        line, column = node.lc.value(path[-1])
    except (KeyError, TypeError) as error:
        raise UnsafeEditError(f"no position recorded for {dotted(path)} (a merge key?)") from error
    return int(line), int(column)


def _set_value(document: Any, path: ValuePath, new: str) -> None:
    node = document["spec"]["values"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = new


def _apply(text: str, documents: list[Any], edits: list[tuple[int, ValueChange]]) -> str:
    starts = _line_starts(text)
    splices = []
    for index, change in edits:
        line, column = _position(documents[index], change.path)
        where = f"line {line + 1}, {dotted(change.path)}"
        splices.append(_splice_for(text, starts[line] + column, change, where))
    new_text = text
    for splice in sorted(splices, key=lambda s: s.start, reverse=True):
        new_text = new_text[: splice.start] + splice.replacement + new_text[splice.end :]
    expected = [_plain(document) for document in documents]
    for index, change in edits:
        _set_value(expected[index], change.path, change.new)
    if [_plain(document) for document in _load(new_text)] != expected:
        raise UnsafeEditError(
            "the edit would change more than the tag (anchors or aliases?); change it by hand"
        )
    return new_text


def set_image_tag(
    text: str, *, release: ReleaseId, container: str, tag: str, default_namespace: str = DEFAULT_NAMESPACE
) -> TagEdit:
    """Set ``container``'s tag in every document of ``text`` that declares ``release``.

    Raises ``ImageReferenceError`` for a tag no registry accepts, ``ManifestError`` for YAML that does not
    parse and ``UnsafeEditError`` for an edit that cannot be proven safe; the rest is a ``TagEdit`` status.
    """
    check_tag(tag)
    documents = _load(text)
    found = [entry for entry in _read(documents, default_namespace) if entry.release == release]
    if not found:
        return TagEdit(EditStatus.NO_RELEASE, text, (), f"no HelmRelease {release}")
    edits: list[tuple[int, ValueChange]] = []
    outcomes: list[tuple[EditStatus, str]] = []
    for entry in found:
        image = entry.detection.find(container)
        if image is None:
            known = ", ".join(found_image.container for found_image in entry.detection.images) or "none"
            outcomes.append(
                (EditStatus.NO_CONTAINER, f"{release} has no image {container!r} (found: {known})")
            )
        elif not image.automatable:
            outcomes.append(
                (EditStatus.NOT_AUTOMATABLE, f"{release} {container}: {'; '.join(image.warnings)}")
            )
        else:
            change = image.tag_change(tag)
            if change.old == change.new:
                outcomes.append((EditStatus.UNCHANGED, f"{release} {container} is already at {tag}"))
            else:
                edits.append((entry.document_index, change))
                outcomes.append((EditStatus.UPDATED, f"{release} {container}: {change.old} -> {change.new}"))
    status = best_status(status for status, _ in outcomes)
    detail = "; ".join(sentence for outcome, sentence in outcomes if outcome is status)
    new_text = _apply(text, documents, edits) if edits else text
    return TagEdit(status, new_text, tuple(change for _, change in edits), detail)
