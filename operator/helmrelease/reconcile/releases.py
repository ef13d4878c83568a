"""The cheap view of Helm releases: the labels of Helm's storage Secrets, as a kopf index keeps them.

Helm labels each `sh.helm.release.v1.<name>.v<N>` Secret with `owner=helm`, `name`, `version` and `status`; we add
our owner labels on install and upgrade (`helm --labels`), and the digest of the chart and values the revision was
made from. That is enough to decide the next action for an unchanged release without spawning helm or calling the
API, so a resync of hundreds of releases costs nothing but the watch; and a revision whose outcome the operator did
not live to record (killed right after helm returned) is recognised as applied instead of being deployed again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from helmrelease.api.constants import HelmStatus
from helmrelease.reconcile.digest import DIGEST_PREFIX

OWNER_NAMESPACE_LABEL: Final = "helm.fluxcd.io/owner-namespace"
OWNER_NAME_LABEL: Final = "helm.fluxcd.io/owner-name"
#: The release digest (`reconcile.digest`) a revision was made from, as `digest_label` shortens it.
DIGEST_LABEL: Final = "helm.fluxcd.io/digest"
#: The force request (reconcile.fluxcd.io/forceAt) a revision was deployed for, as `force_label` hashes its token:
#: a restart after helm returned knows the force was carried out, and does not deploy it a second time.
FORCE_LABEL: Final = "helm.fluxcd.io/force"
#: A label value holds at most 63 characters and no ":"; the first 63 of sha256's 64 hex digits (252 bits) are
#: as good an identity as all of them.
DIGEST_LABEL_LENGTH: Final = 63


@dataclass(frozen=True)
class IndexedRelease:
    """One stored revision, from its Secret's labels."""

    revision: int
    status: str
    owner_namespace: str | None = None
    owner_name: str | None = None
    digest_label: str | None = None
    force_label: str | None = None

    @property
    def owner(self) -> str | None:
        if self.owner_namespace and self.owner_name:
            return f"{self.owner_namespace}/{self.owner_name}"
        return None


_HELM_STATUSES: Final = {status.value: status for status in HelmStatus}


def helm_status(text: str) -> HelmStatus:
    """Helm's status word (a storage label, `helm status`) as ours; one this version does not know is `unknown`."""
    return _HELM_STATUSES.get(text, HelmStatus.UNKNOWN)


def digest_label(digest: str) -> str:
    """The label value for a release digest (`sha256:<64 hex>`): its first 63 hex digits."""
    return digest.removeprefix(DIGEST_PREFIX)[:DIGEST_LABEL_LENGTH]


def force_label(token: str) -> str:
    """The label value for a force token (any text up to `requests.TOKEN_MAX`): 63 hex digits of its sha256."""
    return hashlib.sha256(token.encode()).hexdigest()[:DIGEST_LABEL_LENGTH]


def owner_labels(
    namespace: str, name: str, digest: str | None = None, force: str | None = None
) -> dict[str, str]:
    """The labels that mark a release as made by HelmRelease `namespace/name` (from `digest`, when given; for the
    force request `force`, when it is one)."""
    labels = {OWNER_NAMESPACE_LABEL: namespace, OWNER_NAME_LABEL: name}
    if digest:
        labels[DIGEST_LABEL] = digest_label(digest)
    if force:
        labels[FORCE_LABEL] = force_label(force)
    return labels


def deploy_description(action: str, namespace: str, name: str) -> str:
    """The description our installs and upgrades give a revision (`helm --description`): `helm history` and
    `helmrelease history` show who made it. Helm keeps it only when the action succeeds."""
    return f"{action} by HelmRelease {namespace}/{name}"


def release_index_entry(
    namespace: str, labels: Mapping[str, str]
) -> dict[tuple[str, str], IndexedRelease] | None:
    """Index a storage Secret under (namespace, release name); None for Secrets that are not release storage."""
    name, version = labels.get("name"), labels.get("version", "")
    if not name or not version.isdigit():
        return None
    return {
        (namespace, name): IndexedRelease(
            revision=int(version),
            status=labels.get("status", "unknown"),
            owner_namespace=labels.get(OWNER_NAMESPACE_LABEL),
            owner_name=labels.get(OWNER_NAME_LABEL),
            digest_label=labels.get(DIGEST_LABEL),
            force_label=labels.get(FORCE_LABEL),
        )
    }


def latest(revisions: Iterable[IndexedRelease]) -> IndexedRelease | None:
    """The newest stored revision: what `helm status` would report."""
    return max(revisions, key=lambda revision: revision.revision, default=None)


def force_carried_out(revisions: Iterable[IndexedRelease], owner: tuple[str, str], token: str) -> bool:
    """Whether a finished revision of ours was deployed for force request `token`, whatever came after it: a
    forced upgrade that failed and was rolled back counts (the rollback copies the labels of the revision it
    goes back to, so the latest one does not say it), and a restart before the force was echoed must not force
    again. A revision still pending was interrupted: that force never finished, and runs again."""
    label = force_label(token)
    return any(
        revision.force_label == label
        and (revision.owner_namespace, revision.owner_name) == owner
        and not helm_status(revision.status).is_pending
        for revision in revisions
    )


class ReleaseView(Protocol):
    """Where the reconciler looks up the current state of a release."""

    def latest(self, namespace: str, name: str) -> IndexedRelease | None: ...

    def revisions(self, namespace: str, name: str) -> Sequence[IndexedRelease]:
        """Every stored revision of the release (its history), in no particular order."""
        ...


class ReleaseIndexView:
    """A `ReleaseView` over kopf's index (a mapping from key to a collection of values)."""

    def __init__(self, index: Mapping[Any, Iterable[IndexedRelease]]) -> None:
        self._index = index

    def latest(self, namespace: str, name: str) -> IndexedRelease | None:
        key = (namespace, name)
        if key not in self._index:
            return None
        return latest(self._index[key])

    def revisions(self, namespace: str, name: str) -> Sequence[IndexedRelease]:
        key = (namespace, name)
        return list(self._index[key]) if key in self._index else []


class StoredReleaseView:
    """A `ReleaseView` of one namespace from the labels of Helm's storage Secrets as the API listed them just now."""

    def __init__(self, namespace: str, labels: Iterable[Mapping[str, str]]) -> None:
        self._entries: dict[tuple[str, str], list[IndexedRelease]] = {}
        for each in labels:
            entry = release_index_entry(namespace, each)
            for key, revision in (entry or {}).items():
                self._entries.setdefault(key, []).append(revision)

    def latest(self, namespace: str, name: str) -> IndexedRelease | None:
        return latest(self._entries.get((namespace, name), []))

    def revisions(self, namespace: str, name: str) -> Sequence[IndexedRelease]:
        return list(self._entries.get((namespace, name), []))
