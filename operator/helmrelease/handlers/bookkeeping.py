"""kopf's bookkeeping on HelmReleases, made safe for any object the apiserver accepts.

kopf keeps two kinds of annotations on every object: the *diff base* (the last handled "essence", to tell a spec
change from a status write) and one *progress* record per handler. Stock kopf stores the whole essence, spec
included, in one annotation: values over ~256 KiB then exceed the apiserver's annotation limit (262,144 bytes for
all annotations) and every patch fails, forever. And kopf ``json.loads`` both kinds unguarded: an annotation that
is not JSON (a botched ``kubectl apply``, a copy of ``kubectl get -o yaml``) makes the object unprocessable.

``DigestDiffBaseStorage`` stores one SHA-256 per stanza of the essence instead (``spec``, ``metadata.labels``,
``metadata.annotations``; about 250 bytes whatever the spec's size) and, when kopf asks for the old essence, rebuilds
it from the object: a stanza whose digest matches is the current one, any other is a placeholder, so kopf's diff
(and ``@kopf.on.update(field="spec")``) sees exactly the stanzas that changed. An annotation written by stock kopf
(the full essence) is still read as it was, and replaced by digests at the next change: upgrading costs nothing.
Unreadable bookkeeping of either kind reads as absent (kopf then handles the object as new, and the reconcile pass
decides from the spec and the release); ``unreadable_bookkeeping`` lists it so a handler can say so in an Event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import kopf
from kopf._cogs.structs import dicts
from kopf._core.actions.progression import parse_iso8601

from helmrelease.api import bounded_json

DIFFBASE_KEY: Final = "last-handled-configuration"
#: The top-level key that marks our digest format; a real stanza of that name would be pruned by the CRD schema.
DIGESTS: Final = "helmrelease-digests/v1"
#: Annotations kopf keeps under our prefix that are not JSON: the "managed" marker and the touch timestamp.
_NOT_JSON: Final = frozenset({"kopf-managed", "touch-dummy"})
_PROGRESS_FIELDS: Final = {
    "started": str,
    "stopped": str,
    "delayed": str,
    "purpose": str,
    "retries": int,
    "success": bool,
    "failure": bool,
    "message": str,
    "subrefs": list,
}


class UnreadableError(ValueError):
    """An annotation of kopf's bookkeeping that kopf could not use; the message says why."""


@dataclass(frozen=True)
class Unreadable:
    """One unreadable bookkeeping annotation: its full name, its content's digest (to report it once), and why."""

    annotation: str
    digest: str
    problem: str

    @property
    def message(self) -> str:
        return (
            f"Annotation {self.annotation} is not readable ({self.problem}); it was ignored, and the release is "
            "reconciled from the spec"
        )


def _digest(value: Any) -> str:
    encoded = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()


def _decode(raw: str) -> Any:
    try:
        return bounded_json.loads(raw)
    except ValueError as error:
        raise UnreadableError(f"not JSON: {error}") from None


def essence_sections(essence: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The stanzas kopf compares, by name (``spec``, ``metadata.labels``, ...), without our own annotations.

    kopf strips our prefix's annotations from the essence it stores but not always from the one it builds (before
    the first store marks the prefix); dropping them here keeps digests of both equal.
    """
    sections: dict[str, Any] = {}
    for name, value in essence.items():
        if name != "metadata":
            sections[name] = value
            continue
        for field, content in (value or {}).items():
            if field == "annotations":
                content = {k: v for k, v in content.items() if not k.startswith(f"{prefix}/")}
                if not content:
                    continue
            sections[f"metadata.{field}"] = content
    return sections


def encode_digests(essence: Mapping[str, Any], prefix: str) -> str:
    """The annotation value: a digest per stanza, compact JSON, one line."""
    digests = {name: _digest(value) for name, value in sorted(essence_sections(essence, prefix).items())}
    return json.dumps({DIGESTS: digests}, separators=(",", ":"))


def decode_diffbase(raw: str) -> dict[str, str] | dict[str, Any]:
    """Our digests (``{DIGESTS: {...}}``) or a stock kopf essence (any other map); raise UnreadableError otherwise."""
    decoded = _decode(raw)
    if not isinstance(decoded, dict):
        raise UnreadableError(f"a JSON {type(decoded).__name__}, not an object")
    if DIGESTS in decoded:
        digests = decoded[DIGESTS]
        if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
            raise UnreadableError("digests that are not a map of stanza names to strings")
    return decoded


def old_essence(stored: Mapping[str, Any], current: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The essence kopf compares with: current stanzas where the digests match, a placeholder where not.

    A stanza stored but absent now reads as its digest, and one present now but not stored is absent: kopf's diff
    then shows exactly the stanzas that were added, removed or changed since the last store.
    """
    digests: Mapping[str, str] = stored[DIGESTS]
    now = essence_sections(current, prefix)
    old: dict[str, Any] = {}
    for name, digest in digests.items():
        value = now[name] if name in now and _digest(now[name]) == digest else f"sha256:{digest}"
        if name.startswith("metadata."):
            old.setdefault("metadata", {})[name.removeprefix("metadata.")] = value
        else:
            old[name] = value
    return old


def decode_progress(raw: str) -> dict[str, Any]:
    """One handler's progress record as kopf wrote it; raise UnreadableError if kopf could not use it."""
    decoded = _decode(raw)
    if not isinstance(decoded, dict):
        raise UnreadableError(f"a JSON {type(decoded).__name__}, not an object")
    for field, kind in _PROGRESS_FIELDS.items():
        value: Any = decoded.get(field)
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UnreadableError(f"{field} is not a {kind.__name__}")
        if field in ("started", "stopped", "delayed"):
            try:
                parse_iso8601(cast(str, value))
            except ValueError as error:
                raise UnreadableError(f"{field} is not a timestamp: {error}") from None
        if field == "subrefs" and not all(isinstance(ref, str) for ref in cast(list[Any], value)):
            raise UnreadableError("subrefs are not handler ids")
    return decoded


def unreadable_bookkeeping(annotations: Mapping[str, str], prefix: str) -> list[Unreadable]:
    """Every annotation under ``prefix`` that the storages below read as absent, with the reason."""
    found: list[Unreadable] = []
    for name, raw in sorted(annotations.items()):
        key = name.removeprefix(f"{prefix}/")
        if key == name or key in _NOT_JSON:
            continue
        try:
            (decode_diffbase if key == DIFFBASE_KEY else decode_progress)(raw)
        except UnreadableError as error:
            digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
            found.append(Unreadable(name, digest, str(error)))
    return found


#: The metadata kopf's essence keeps (`kopf.DiffBaseStorage.build`).
_KEPT_METADATA: Final = ("labels", "annotations")


def _outside_essence(field: tuple[str, ...]) -> bool:
    """Whether an extra field lies in what kopf's essence drops (the status, other metadata)."""
    if not field:
        return False
    if field[0] == "status":
        return True
    return field[0] == "metadata" and (len(field) == 1 or field[1] not in _KEPT_METADATA)


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff base, holding digests instead of the essence (see the module docstring)."""

    def __init__(self, *, prefix: str) -> None:
        super().__init__(prefix=prefix, key=DIFFBASE_KEY)

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[dicts.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        """kopf's essence, without kopf's deep copy of the whole object first: on every watch event (a status
        write is one, every resync) it copied the status and all of the metadata (managedFields) only to drop
        them. The same essence from the stanzas it keeps; kopf's own way when a field outside them is asked for."""
        fields = [dicts.parse_field(field) for field in extra_fields or ()]
        if any(_outside_essence(field) for field in fields):
            return super().build(body=body, extra_fields=extra_fields)
        metadata = body.get("metadata") or {}
        kept = {key: value for key, value in body.items() if key not in ("metadata", "status")}
        kept["metadata"] = {key: metadata[key] for key in _KEPT_METADATA if key in metadata}
        return super().build(body=kopf.Body(cast(kopf.RawBody, kept)), extra_fields=fields)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        for full_key in self.make_keys(self.key, body=body):
            raw = body.metadata.annotations.get(full_key)
            if raw is None:
                continue
            try:
                stored = decode_diffbase(raw)
            except UnreadableError:
                return None  # reported by the handler (unreadable_bookkeeping); reconcile as if new
            if DIGESTS not in stored:
                return cast(kopf.BodyEssence, stored)  # a stock kopf essence, from before the upgrade
            return cast(kopf.BodyEssence, old_essence(stored, self.build(body=body), self.prefix))
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        encoded = encode_digests(cast(Mapping[str, Any], essence), self.prefix)
        for full_key in self.make_keys(self.key, body=body):
            patch.metadata.annotations[full_key] = encoded
        self._store_marker(prefix=self.prefix, patch=patch, body=body)


class TolerantProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's annotation progress storage, reading a record it could not use as no record."""

    def fetch(self, *, key: str, body: kopf.Body) -> kopf.ProgressRecord | None:
        for full_key in self.make_keys(key, body=body):
            raw = body.metadata.annotations.get(full_key)
            if raw is None:
                continue
            try:
                return cast(kopf.ProgressRecord, decode_progress(raw))
            except UnreadableError:
                return None  # reported by the handler (unreadable_bookkeeping); the handler starts afresh
        return None
