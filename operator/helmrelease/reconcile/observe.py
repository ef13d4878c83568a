"""What a pass sees of a release before it decides: the latest revision, whose it is, and whether it drifted.

The revision comes from the watch-fed index of Helm's storage Secrets (`releases.ReleaseView`): no helm process and
no API call for a release with our owner labels. Until the index has caught up with this pass's own last action,
what that action reported stands in for it. A release without owner labels is looked at once (Flux v1 marked the
objects, not the release), and drift is read from the objects the stored manifest names, as the HelmRelease's
ServiceAccount, since whoever may write Helm's storage in that namespace may write that manifest.
"""

from __future__ import annotations

import logging
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from helmrelease.adapters.kube import Forbidden, KubeError, ObjectRef
from helmrelease.api.constants import Action, HelmStatus
from helmrelease.api.ownership import ANTECEDENT_ANNOTATION, Ownership, antecedent_value, ownership_of
from helmrelease.api.resource import HelmRelease
from helmrelease.api.status import HelmReleaseStatus
from helmrelease.reconcile.actions import deploys
from helmrelease.reconcile.apis import KubeApi, acting_for
from helmrelease.reconcile.conditions import Outcome
from helmrelease.reconcile.drift import (
    Drift,
    ManifestObject,
    find_drift,
    pack_objects,
    parse_manifest,
    unpack_objects,
)
from helmrelease.reconcile.plan import Desired, ObservedRelease
from helmrelease.reconcile.releases import IndexedRelease, ReleaseView, digest_label, helm_status

log = logging.getLogger(__name__)

#: Objects of an unmarked release looked at for Flux v1's antecedent annotation.
ANTECEDENT_PROBES = 5
#: Manifests of revisions kept for drift checks (one per release in steady state, compressed: a few hundred bytes
#: for a small chart), and the bytes they may take in all, whatever their number; the least recently used go first.
MANIFESTS_MAX: Final = 4096
MANIFEST_BYTES_MAX: Final = 32 * 1_048_576

#: A stored revision: (namespace, release, revision, digest label). The digest label tells a revision apart from
#: one of the same number made after an uninstall from another chart or values.
RevisionKey = tuple[str, str, int, str]


def may_check_drift(status: HelmReleaseStatus, desired: Desired, observed: ObservedRelease) -> bool:
    """Drift is only looked for on a release that is ours, deployed, and exactly what we last applied."""
    return (
        observed.ownership is Ownership.OURS
        and observed.status is HelmStatus.DEPLOYED
        and status.last_applied_digest == desired.digest
        and status.helm_revision == observed.revision
    )


def index_caught_up(entry: IndexedRelease | None, after: ObservedRelease) -> bool:
    """Whether the index entry is at least as new as what this pass's last action left.

    An older revision is not; nor is the same revision still pending when our action saw it finished: Helm never
    takes a finished revision back to pending, so that entry is the watch's view from before helm returned (a
    watch paused by peering while helm ran stays there until the pass ends, and was taken for a stale lock).
    """
    if entry is None or entry.revision < after.revision:
        return False
    return not (
        entry.revision == after.revision
        and helm_status(entry.status).is_pending
        and not after.status.is_pending
    )


def left_by(action: Action, desired: Desired, outcome: Outcome) -> ObservedRelease | None:
    """The release as an action of ours left it, to stand in until the index has seen it; None when the outcome
    does not say (the release as observed before stands)."""
    if outcome.helm_revision is not None and outcome.release_status is not None:
        made = deploys(action) and outcome.succeeded
        return ObservedRelease(
            outcome.helm_revision,
            outcome.release_status,
            Ownership.OURS,
            digest_label=digest_label(desired.digest) if made else None,
        )
    if action in (Action.UNLOCK, Action.UNINSTALL) and outcome.succeeded:
        return ObservedRelease(0, HelmStatus.UNINSTALLED, Ownership.OURS)
    return None


@dataclass(frozen=True)
class KeptManifest:
    """A revision's manifest between drift checks, compressed: its objects as `drift.pack_objects` packs them
    (`parsed`), or else the text helm printed (not parsed yet, or not packable: parsed again each time)."""

    data: bytes
    parsed: bool

    @classmethod
    def text(cls, manifest: str) -> KeptManifest:
        return cls(zlib.compress(manifest.encode()), parsed=False)


class ReleaseObserver:
    """Observes releases for HelmReleases through `kube` (the operator's identity, impersonating as needed)."""

    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube
        # The manifest of a revision does not change: a resync's drift check reads and parses it once, not every
        # time (most of a resync's cost was that: the Secret read, its decoding and the YAML). Kept compressed: at
        # 1000 releases the parsed dictionaries were a tenth of the operator's memory.
        self._manifests: OrderedDict[RevisionKey, KeptManifest] = OrderedDict()
        self._manifest_bytes = 0

    def remember_manifest(
        self, namespace: str, release: str, revision: int, digest_label: str | None, manifest: str
    ) -> None:
        """What helm printed for a revision it just made, for its drift checks (parsed when first used)."""
        if digest_label:
            self._keep((namespace, release, revision, digest_label), KeptManifest.text(manifest))

    def _keep(self, key: RevisionKey, manifest: KeptManifest) -> None:
        previous = self._manifests.pop(key, None)
        if previous is not None:
            self._manifest_bytes -= len(previous.data)
        if len(manifest.data) > MANIFEST_BYTES_MAX:
            return
        self._manifests[key] = manifest
        self._manifest_bytes += len(manifest.data)
        while len(self._manifests) > MANIFESTS_MAX or self._manifest_bytes > MANIFEST_BYTES_MAX:
            _, dropped = self._manifests.popitem(last=False)
            self._manifest_bytes -= len(dropped.data)

    async def _manifest(
        self, hr: HelmRelease, observed: ObservedRelease
    ) -> tuple[ManifestObject, ...] | None:
        """The objects of the observed revision's manifest; None when Helm's storage has no such revision."""
        namespace, release = hr.target_namespace, hr.release_name
        key = (namespace, release, observed.revision, observed.digest_label or "")
        known = self._manifests.get(key) if observed.digest_label else None
        if known is not None and known.parsed:
            self._manifests.move_to_end(key)
            return unpack_objects(known.data)
        if known is None:
            stored = await self.kube.stored_release(namespace, release, observed.revision)
            if stored is None:
                return None
            text = stored.manifest
        else:
            text = zlib.decompress(known.data).decode()
        objects = tuple(parse_manifest(text, namespace))
        if observed.digest_label:
            packed = pack_objects(objects)
            self._keep(
                key, KeptManifest(packed, parsed=True) if packed is not None else KeptManifest.text(text)
            )
        return objects

    async def release(
        self,
        hr: HelmRelease,
        namespace: str,
        name: str,
        releases: ReleaseView,
        after: ObservedRelease | None = None,
    ) -> ObservedRelease | None:
        """The latest revision of release `namespace/name` for `hr`; `after`: what this pass's last action left."""
        entry = releases.latest(namespace, name)
        if after is not None and not index_caught_up(entry, after):
            return after  # the index has not seen our last action yet
        if entry is None:
            return after if after is not None and after.status is not HelmStatus.UNINSTALLED else None
        if entry.owner_namespace and entry.owner_name:
            ours = (entry.owner_namespace, entry.owner_name) == (hr.metadata.namespace, hr.metadata.name)
            owner = antecedent_value(entry.owner_namespace, entry.owner_name)
            return _observed(entry, Ownership.OURS if ours else Ownership.OTHER, owner)
        # No owner labels: installed by hand, by another tool, or by the Flux v1 Helm Operator, which marked the
        # release's resources with the antecedent annotation. Look at them (rare: once, before adoption).
        antecedent = await self._antecedent(hr, namespace, name, entry.revision)
        ownership = ownership_of(antecedent, namespace=hr.metadata.namespace, name=hr.metadata.name)
        return _observed(entry, ownership, antecedent)

    async def drift(self, hr: HelmRelease, observed: ObservedRelease) -> list[Drift] | None:
        """The objects of the release that differ from its manifest; None when they could not be compared."""
        try:
            objects = await self._manifest(hr, observed)
            if objects is None:
                return None
            # The manifest is tenant-writable: compare only what the HelmRelease's account may read.
            lives = await acting_for(self.kube, hr).get_objects(
                [ObjectRef(obj.api_version, obj.kind, obj.namespace or "", obj.name) for obj in objects]
            )
            drifts = [
                drift
                for obj, live in zip(objects, lives, strict=True)
                if (drift := find_drift(obj, live)) is not None
            ]
        except KubeError as error:
            log.warning("drift check of %s/%s failed: %s", hr.target_namespace, hr.release_name, error)
            return None
        return drifts

    async def _antecedent(self, hr: HelmRelease, namespace: str, release: str, revision: int) -> str | None:
        """Flux v1's owner mark on the release's objects. The stored manifest names them, and whoever may write
        Helm's storage may write it: read them as the HelmRelease's ServiceAccount, skipping what it may not read."""
        stored = await self.kube.stored_release(namespace, release, revision)
        if stored is None:
            return None
        kube = acting_for(self.kube, hr)
        for obj in parse_manifest(stored.manifest, namespace)[:ANTECEDENT_PROBES]:
            try:
                live = await kube.get_object(obj.api_version, obj.kind, obj.namespace, obj.name)
            except Forbidden:
                continue
            annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
            if annotations.get(ANTECEDENT_ANNOTATION):
                return str(annotations[ANTECEDENT_ANNOTATION])
        return None


def _observed(entry: IndexedRelease, ownership: Ownership, owner: str | None) -> ObservedRelease:
    return ObservedRelease(
        revision=entry.revision,
        status=helm_status(entry.status),
        ownership=ownership,
        owner=owner,
        digest_label=entry.digest_label,
        force_label=entry.force_label,
    )
