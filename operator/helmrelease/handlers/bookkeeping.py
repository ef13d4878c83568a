"""kopf's bookkeeping on HelmReleases, made safe for any object the apiserver accepts.

kopf keeps two kinds of annotations on every object: the *diff base* (the last handled "essence", to tell a spec
change from a status write) and one *progress* record per handler. Stock kopf stores the whole essence, spec
included, in one annotation: values over ~256 KiB then exceed the apiserver's annotation limit (262,144 bytes for
all annotations) and every patch fails, forever. And kopf ``json.loads`` both kinds unguarded: an annotation that
is not JSON (a botched ``kubectl apply``, a copy of ``kubectl get -o yaml``) makes the object unprocessable.

``DigestDiffBaseStorage`` stores one SHA-256 per stanza of the essence instead (``spec``, ``metadata.labels``,
``metadata.annotations``; about 250 bytes whatever the spec's size) and, when kopf asks for the old essence, rebuilds
it from the object: a stanza whose digest matches is the current one, any other is a placeholder, so kopf's diff
(and ``@kopf.on.update(field="spec")``) sees exactly the stanzas that changed. The digests live in the status
(``status.lastHandledConfiguration``), where the reconcile pass that handled the object writes them with its own
status: kopf's annotation PATCH after every handled change (and its watch event to every watcher) is gone, and kopf
writes them itself only when no pass did (a change no handler acted on). A diff base in the annotation, ours or
stock kopf's full essence, is still read while the status has none: upgrading costs nothing.
Unreadable bookkeeping of either kind reads as absent (kopf then handles the object as new, and the reconcile pass
decides from the spec and the release); ``unreadable_bookkeeping`` lists it so a handler can say so in an Event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import kopf
from kopf._cogs.structs import dicts
from kopf._core.actions.progression import parse_iso8601

from helmrelease.api import bounded_json

DIFFBASE_KEY: Final = "last-handled-configuration"
#: Where in the status the digests are kept (``api.status.HelmReleaseStatus.last_handled_configuration``): a list
#: of ``<stanza>=<sha256>``, which a merge patch replaces whole (the keys of a map would linger).
STATUS_FIELD: Final = "lastHandledConfiguration"
#: The fields of the operator's change handlers (``handlers.operator``): kopf builds its essence with them (which
#: restores annotations its plain essence drops, kubectl's last-applied copy), so the digests are taken of that.
HANDLED_FIELDS: Final = ("spec", "metadata.labels", "metadata.annotations")
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


def stanza_digests(essence: Mapping[str, Any], prefix: str) -> dict[str, str]:
    """A digest per stanza of kopf's essence."""
    return {name: _digest(value) for name, value in sorted(essence_sections(essence, prefix).items())}


def digest_entries(essence: Mapping[str, Any], prefix: str) -> tuple[str, ...]:
    """The digests as ``status.lastHandledConfiguration`` holds them: ``<stanza>=<sha256>``, sorted."""
    return tuple(f"{name}={digest}" for name, digest in stanza_digests(essence, prefix).items())


def parse_entries(value: Any) -> dict[str, str] | None:
    """The digests of a ``status.lastHandledConfiguration``; None if it is not what we write (anyone who may write
    the status may garble it)."""
    if not isinstance(value, list):
        return None
    digests: dict[str, str] = {}
    for entry in value:
        if not isinstance(entry, str) or "=" not in entry:
            return None
        name, _, digest = entry.rpartition("=")
        digests[name] = digest
    return digests


def encode_digests(essence: Mapping[str, Any], prefix: str) -> str:
    """The annotation value of the digests (before they moved to the status): compact JSON, one line."""
    return json.dumps({DIGESTS: stanza_digests(essence, prefix)}, separators=(",", ":"))


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


def old_essence(digests: Mapping[str, str], current: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The essence kopf compares with: current stanzas where the digests match, a placeholder where not.

    A stanza stored but absent now reads as its digest, and one present now but not stored is absent: kopf's diff
    then shows exactly the stanzas that were added, removed or changed since the last store.
    """
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


#: Whether the reconcile pass already wrote these digests with the status of HelmRelease (namespace, name).
WrittenByPass = Callable[[str, str, Sequence[str]], bool]


def _never_written(namespace: str, name: str, entries: Sequence[str]) -> bool:
    return False


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base as digests in the status, read from the annotation too (see the module docstring).

    `written` says whether the pass that just handled an object wrote the digests kopf is about to store: kopf calls
    ``store`` after the handlers, with the object as the cycle began, so the status it sees predates that write.
    The operator binds it once the reconciler exists.
    """

    def __init__(self, *, prefix: str, written: WrittenByPass = _never_written) -> None:
        super().__init__(prefix=prefix, key=DIFFBASE_KEY)
        self.written = written

    def handled(self, body: kopf.Body) -> tuple[str, ...]:
        """The digests kopf stores once a change handler has handled `body`: what its pass writes."""
        return digest_entries(self._current(body), self.prefix)

    def _current(self, body: kopf.Body) -> kopf.BodyEssence:
        """The essence kopf compares with, as its change detection builds it (with the handlers' fields)."""
        return self.build(body=body, extra_fields=HANDLED_FIELDS)

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
        status = body.get("status") or {}
        if STATUS_FIELD in status:
            digests = parse_entries(status[STATUS_FIELD])
            if digests is None:
                return None  # garbled by someone who may write the status: reconcile as if new
            return cast(kopf.BodyEssence, old_essence(digests, self._current(body), self.prefix))
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
            stored_digests = cast(Mapping[str, str], stored[DIGESTS])
            return cast(kopf.BodyEssence, old_essence(stored_digests, self._current(body), self.prefix))
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        entries = digest_entries(cast(Mapping[str, Any], essence), self.prefix)
        if self.written(body.metadata.namespace or "", body.metadata.name or "", entries):
            return
        patch.status[STATUS_FIELD] = list(entries)


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
