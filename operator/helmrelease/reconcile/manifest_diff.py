"""What an upgrade would change, object by object: a unified diff of two release manifests, secrets masked (pure).

Both manifests are parsed (``drift.parse_manifest``) and each object is written out again the same way, so only
content differs, never layout. Objects pair up by API group, kind, namespace and name, as helm-diff pairs them, and
each one that differs gets a header in helm-diff's words (``apps, web, Deployment (apps) has changed:``).

Nothing secret is printed: the values of a ``Secret``'s ``data`` and ``stringData`` become ``***`` with their size,
marked ``old value`` and ``new value`` when they differ, so a diff shows *that* a key changed, never to what; and every
text goes through the pass's ``Masker``, which masks the values that came from Secrets (``valuesFrom``) wherever
a chart put them.
"""

from __future__ import annotations

import base64
import binascii
import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from helmrelease.reconcile.drift import ManifestObject, parse_manifest
from helmrelease.reconcile.masking import MASK

#: Lines of context around each change, as ``diff -u`` and helm-diff print them.
CONTEXT_LINES: Final = 3
_SECRET_FIELDS: Final = ("data", "stringData")


class Change(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"

    @property
    def words(self) -> str:
        return {"added": "has been added", "removed": "has been removed", "changed": "has changed"}[self]


@dataclass(frozen=True, order=True)
class ObjectKey:
    """How two manifests' objects pair up (the API version may move within a group: ``v1beta1`` → ``v1``)."""

    namespace: str
    name: str
    kind: str
    group: str

    @classmethod
    def of(cls, obj: ManifestObject) -> ObjectKey:
        group = obj.api_version.rpartition("/")[0] if "/" in obj.api_version else ""
        return cls(obj.namespace or "", obj.name, obj.kind, group)

    @property
    def header(self) -> str:
        """helm-diff's ``<namespace>, <name>, <Kind> (<group>)``; the core group reads ``v1``."""
        return f"{self.namespace}, {self.name}, {self.kind} ({self.group or 'v1'})"


@dataclass(frozen=True)
class ObjectDiff:
    key: ObjectKey
    change: Change
    #: The unified diff's lines, from the first ``@@`` hunk on (the header names the object instead of ``---``).
    lines: tuple[str, ...]

    def text(self) -> str:
        return f"{self.key.header} {self.change.words}:\n" + "".join(self.lines)


def _is_secret(obj: ManifestObject) -> bool:
    return obj.kind == "Secret" and obj.api_version == "v1"


def _size(field: str, value: object) -> int:
    text = value if isinstance(value, str) else str(value)
    if field == "data":
        try:
            return len(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            pass
    return len(text.encode())


def _masked_values(field: str, mine: object, theirs: object, side: str) -> object:
    """``mine`` (a Secret's data or stringData) with each value masked; where ``theirs`` holds another value for
    the key, the mask says ``old value`` or ``new value`` (``side``), so the two lines differ even at equal size."""
    if not isinstance(mine, Mapping):
        return MASK if mine is not None else None
    other = theirs if isinstance(theirs, Mapping) else {}
    masked: dict[str, str] = {}
    for key, value in mine.items():
        changed = f", {side} value" if key in other and other[key] != value else ""
        masked[key] = f"{MASK} ({_size(field, value)} bytes{changed})"
    return masked


def masked_body(obj: ManifestObject, other: ManifestObject | None, side: str) -> Mapping[str, Any]:
    """The object as the diff shows it: a Secret's values masked against its counterpart ``other``; ``side`` is
    ``old`` or ``new``."""
    if not _is_secret(obj):
        return obj.body
    body = dict(obj.body)
    for field in _SECRET_FIELDS:
        if field in body:
            theirs = other.body.get(field) if other is not None else None
            body[field] = _masked_values(field, body[field], theirs, side)
    return body


def _objects(manifest: str, namespace: str) -> dict[ObjectKey, ManifestObject]:
    return {ObjectKey.of(obj): obj for obj in parse_manifest(manifest, namespace)}


def diff_manifests(
    before: str,
    after: str,
    *,
    namespace: str,
    dump: Callable[[object], str],
    mask: Callable[[str], str] = lambda text: text,
    context: int = CONTEXT_LINES,
) -> list[ObjectDiff]:
    """Every object that ``after`` adds, removes or changes against ``before``, in (namespace, name, kind) order.

    ``namespace`` is the release's (objects without one are in it); ``dump`` writes one object as text (YAML);
    ``mask`` is applied to every line shown.
    """
    old, new = _objects(before, namespace), _objects(after, namespace)
    diffs = []
    for key in sorted(old.keys() | new.keys()):
        was, now = old.get(key), new.get(key)
        old_text = dump(masked_body(was, now, "old")) if was is not None else ""
        new_text = dump(masked_body(now, was, "new")) if now is not None else ""
        if old_text == new_text:
            continue
        change = Change.ADDED if was is None else Change.REMOVED if now is None else Change.CHANGED
        # Compared as they are, masked line by line after: a value from a Secret that changed still shows
        # as a changed line, masked on both sides.
        diffs.append(
            ObjectDiff(key, change, tuple(mask(line) for line in _hunks(old_text, new_text, context)))
        )
    return diffs


def _hunks(old_text: str, new_text: str, context: int) -> Iterable[str]:
    lines = difflib.unified_diff(
        old_text.splitlines(keepends=True), new_text.splitlines(keepends=True), n=context
    )
    for index, line in enumerate(lines):
        if index < 2:
            continue  # the "---" and "+++" file lines: the header names the object instead
        yield line if line.endswith("\n") else line + "\n"
