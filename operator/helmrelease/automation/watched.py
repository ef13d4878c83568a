"""What the sidecar reads from one HelmRelease object: settings, images, policies and why it may not act.

Pure functions over the object as the API returns it (a JSON-like mapping), so every rule that decides
whether a release may change is tested without a cluster: ``ignore`` skips a release entirely; a release
that is not ``automated``, is suspended (``spec.suspend``) or is ``locked``, is scanned for ``helmrelease images list`` but never changed;
an image whose policy does not parse is never changed. Two images whose tags live at the same value path
are left alone: moving one would move the other, and nobody chose that.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, Final

from helmrelease.images.annotations import AutomationSettings, read_automation_settings
from helmrelease.images.detect import DetectedImage, Detection, ValueChange, detect_images, dotted
from helmrelease.images.manifests import ReleaseId
from helmrelease.images.policy import PolicyError, TagOrder, TagPolicy

#: Our annotation: a ``kubernetes.io/dockerconfigjson`` Secret in the release's namespace holding the
#: credentials for the registries of this release's images (before its ServiceAccount's pull secrets).
PULL_SECRET_ANNOTATION: Final = "image.helm.fluxcd.io/pull-secret"  # noqa: S105 - a key, not a secret
#: Our annotation: ``"true"`` commits this release's tag updates to git too (when the sidecar has git).
GIT_WRITEBACK_ANNOTATION: Final = "image.helm.fluxcd.io/git-writeback"
DEFAULT_SERVICE_ACCOUNT: Final = "default"
_TRUE: Final = "true"


class Hold(StrEnum):
    """Why the sidecar leaves a release's images where they are, whatever the registry holds."""

    IGNORED = "ignored"
    NOT_AUTOMATED = "not automated"
    #: ``spec.suspend: true``: the operator does nothing with the release, so neither do we.
    SUSPENDED = "suspended"
    LOCKED = "locked"


@dataclass(frozen=True)
class ImageTarget:
    """One detected image and the policy that chooses its tags; ``policy`` is None when that does not parse."""

    image: DetectedImage
    policy_text: str
    policy: TagPolicy | None
    order: TagOrder | None
    policy_error: str | None = None
    #: Soak time of new tags (``min-age``), None for none.
    min_age: timedelta | None = None
    #: The sidecar's note when the image is paused (``paused.<container>``); it does not move while set.
    paused: str | None = None
    #: What the sidecar last wrote here (``written.<container>``: ``tag`` or ``tag@digest``).
    written: str | None = None

    @property
    def container(self) -> str:
        return self.image.container

    @property
    def pin_digest(self) -> bool:
        return self.image.pin_digest

    @property
    def version(self) -> str | None:
        """What values hold now in the form ``written`` records: ``tag``, or ``tag@digest`` when pinned."""
        return version_text(self.image.ref.tag, self.image.ref.digest if self.pin_digest else None)

    @property
    def may_change(self) -> bool:
        """A tag we can rewrite and a policy that says which tags qualify."""
        return self.image.automatable and self.policy is not None


def image_targets(settings: AutomationSettings, detection: Detection) -> tuple[ImageTarget, ...]:
    """Pair each detected image with its parsed policy and tag order (default: the policy's own)."""
    targets = []
    for image in detection.images:
        text = settings.policy_text_for(image.container)
        try:
            policy = settings.policy_for(image.container)
        except PolicyError as error:
            targets.append(
                ImageTarget(image, text, None, None, f"tag policy {text!r} does not parse: {error}")
            )
            continue
        targets.append(
            ImageTarget(
                image,
                text,
                policy,
                settings.order_for(image.container, policy),
                min_age=settings.min_ages.get(image.container),
                paused=settings.paused.get(image.container),
                written=settings.written.get(image.container),
            )
        )
    return tuple(targets)


def version_text(tag: str | None, digest: str | None) -> str | None:
    """``tag`` or ``tag@digest``: one string for what an image runs, as the ``written`` record holds it."""
    if tag is None:
        return None
    return tag if digest is None else f"{tag}@{digest}"


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class Setter:
    """Who last set a field, from the object's ``managedFields`` (``kubectl-edit``, ``argocd-controller``,
    ``kubectl-client-side-apply``…) and when."""

    manager: str
    time: str | None


def field_setter(managed_fields: object, path: Sequence[str]) -> Setter | None:
    """The manager whose ``fieldsV1`` holds ``path`` (keys from the object's root), the latest if several
    share it (an apply and an update of the same value); None when no entry names it."""
    found: list[Setter] = []
    for entry in managed_fields if isinstance(managed_fields, Sequence) else ():
        if not isinstance(entry, Mapping) or entry.get("fieldsType") != "FieldsV1":
            continue
        node: object = entry.get("fieldsV1")
        for key in path:
            node = node.get(f"f:{key}") if isinstance(node, Mapping) else None
        if isinstance(node, Mapping):
            time = entry.get("time")
            found.append(
                Setter(str(entry.get("manager") or "an unnamed client"), str(time) if time else None)
            )
    return max(found, key=lambda setter: setter.time or "") if found else None


@dataclass(frozen=True)
class WatchedRelease:
    """A HelmRelease as the sidecar sees it (not ``reconcile.releases.ReleaseView``, the reconciler's release index)."""

    release: ReleaseId
    uid: str
    settings: AutomationSettings
    detection: Detection
    targets: tuple[ImageTarget, ...]
    pull_secret: str | None
    service_account: str
    git_writeback: bool
    #: ``metadata.managedFields`` as read, for who set a value back (``setter_of``).
    managed_fields: tuple[Mapping[str, Any], ...] = ()

    def setter_of(self, target: ImageTarget) -> Setter | None:
        """Who last wrote ``target``'s tag in the object (see ``field_setter``)."""
        location = target.image.tag_location
        if location is None:
            return None
        return field_setter(self.managed_fields, ("spec", "values", *location.path))

    suspended: bool = False
    #: ``metadata.resourceVersion``, ``metadata.generation`` and ``metadata.annotations`` as read: what the
    #: decision was made from besides the values (the spec's ``suspend``, the automation annotations).
    resource_version: str | None = None
    generation: int | None = None
    annotations: Mapping[str, Any] | None = None

    @property
    def precondition(self) -> list[dict[str, Any]]:
        """A JSON-patch ``test`` of the resourceVersion we read: any write since (a lock, a new policy,
        ``suspend``, another value, or a status write) refuses our patch, and ``changed_in`` then tells a user's
        edit, decided again, from a write that changed nothing we decided from.

        Not a ``test`` of the annotations themselves: kube-apiserver compares a ``test`` value with the stored
        JSON as Go encoded it, where ``>``, ``<`` and ``&`` are escaped, so an annotation such as
        ``semver:>=1.1`` never tests equal."""
        if self.resource_version is None:
            return []
        return [{"op": "test", "path": "/metadata/resourceVersion", "value": self.resource_version}]

    def changed_in(self, obj: Mapping[str, Any]) -> bool:
        """Whether ``obj`` (a re-read) differs from what we decided from besides the values: the spec (its
        generation) or the annotations."""
        metadata = _mapping(obj.get("metadata"))
        return (self.generation is not None and metadata.get("generation") != self.generation) or (
            self.annotations is not None
            and dict(_mapping(metadata.get("annotations"))) != dict(self.annotations)
        )

    @property
    def hold(self) -> Hold | None:
        """Why nothing may change (``ignore`` first: an ignored release is not even reported)."""
        if self.settings.ignore:
            return Hold.IGNORED
        if not self.settings.automated:
            return Hold.NOT_AUTOMATED
        if self.suspended:
            return Hold.SUSPENDED
        if self.settings.locked:
            return Hold.LOCKED
        return None

    @property
    def changeable(self) -> tuple[ImageTarget, ...]:
        """The images whose tags the sidecar may move (the hold aside)."""
        shared = shared_tag_paths(self.targets)
        return tuple(
            target
            for target in self.targets
            if target.may_change and target.container not in shared and target.paused is None
        )

    @property
    def containers(self) -> tuple[str, ...]:
        """The container names of the release: its images, and those we found but could not read."""
        names = [image.container for image in self.detection.images]
        names.extend(p.container for p in self.detection.problems if p.container and p.container not in names)
        return tuple(names)

    @property
    def policy_errors(self) -> tuple[str, ...]:
        """One sentence per image whose tag policy does not parse (so its tag stays)."""
        return tuple(
            f"{target.container}: {target.policy_error}; its tag is not updated"
            for target in self.targets
            if target.policy_error is not None
        )

    @property
    def warnings(self) -> tuple[str, ...]:
        """The rest the user should fix to get the automation they asked for, one sentence each."""
        messages = [*self.settings.warnings, *(str(problem) for problem in self.detection.problems)]
        messages.extend(self.settings.unmatched_containers(self.containers))
        for target in self.targets:
            messages.extend(f"{target.container}: {warning}" for warning in target.image.warnings)
            if target.policy is not None:
                messages.extend(
                    f"{target.container}: {warning}; its tag is not updated"
                    for warning in target.policy.warnings
                )
        messages.extend(
            f"{container}: its tag shares the value path {path} with another image; neither is updated"
            for container, path in shared_tag_paths(self.targets).items()
        )
        return tuple(messages)


def read_release(obj: Mapping[str, Any]) -> WatchedRelease:
    """Read a HelmRelease object (``metadata`` and ``spec`` as the API returns them)."""
    metadata = _mapping(obj.get("metadata"))
    spec = _mapping(obj.get("spec"))
    annotations = {str(key): value for key, value in _mapping(metadata.get("annotations")).items()}
    settings = read_automation_settings(annotations)
    detection = detect_images(spec.get("values"), annotations)
    pull_secret = annotations.get(PULL_SECRET_ANNOTATION)
    service_account = spec.get("serviceAccountName")
    managed = metadata.get("managedFields")
    return WatchedRelease(
        release=ReleaseId(str(metadata.get("namespace", "")), str(metadata.get("name", ""))),
        uid=str(metadata.get("uid", "")),
        settings=settings,
        detection=detection,
        targets=image_targets(settings, detection),
        pull_secret=pull_secret.strip() if isinstance(pull_secret, str) and pull_secret.strip() else None,
        service_account=service_account
        if isinstance(service_account, str) and service_account
        else DEFAULT_SERVICE_ACCOUNT,
        git_writeback=annotations.get(GIT_WRITEBACK_ANNOTATION) == _TRUE,
        managed_fields=tuple(e for e in managed if isinstance(e, Mapping))
        if isinstance(managed, list)
        else (),
        suspended=spec.get("suspend") is True,
        resource_version=str(version) if (version := metadata.get("resourceVersion")) else None,
        generation=generation if isinstance(generation := metadata.get("generation"), int) else None,
        annotations=dict(raw) if isinstance(raw := metadata.get("annotations"), Mapping) else None,
    )


def shared_tag_paths(targets: Sequence[ImageTarget]) -> dict[str, str]:
    """Containers whose tag location another image also uses (an alias over a detected image's value)."""
    paths = [target.image.tag_location.path for target in targets if target.image.tag_location is not None]
    shared = {path for path, count in Counter(paths).items() if count > 1}
    return {
        target.container: dotted(target.image.tag_location.path)
        for target in targets
        if target.image.tag_location is not None and target.image.tag_location.path in shared
    }


@dataclass(frozen=True)
class TagMove:
    """A decided update of one image: the value edits and what people are told about it.

    With a pinned digest the move may keep the tag and change only the digest (the tag was pushed again).
    """

    target: ImageTarget
    old_tag: str
    new_tag: str
    changes: tuple[ValueChange, ...]
    old_digest: str | None = None
    new_digest: str | None = None

    @property
    def old_version(self) -> str:
        return version_text(self.old_tag, self.old_digest) or ""

    @property
    def new_version(self) -> str:
        """``new_tag``, or ``new_tag@new_digest`` when pinned: what ``written.<container>`` records."""
        return version_text(self.new_tag, self.new_digest) or ""

    @property
    def summary(self) -> str:
        """``prom/prometheus v2.3.1 → v2.3.2 (semver:~2.3)``: the Event and log message; a pinned move adds
        ``digest sha256:… → sha256:…``."""
        name, policy = self.target.image.ref.name, self.target.policy_text
        if self.new_digest is None:
            return f"{name} {self.old_tag} → {self.new_tag} ({policy})"
        tags = self.new_tag if self.old_tag == self.new_tag else f"{self.old_tag} → {self.new_tag}"
        return f"{name} {tags} digest {self.old_digest or '(none)'} → {self.new_digest} ({policy})"


def tag_move(target: ImageTarget, new_tag: str, digest: str | None = None) -> TagMove:
    """The move of ``target`` to ``new_tag`` (at ``digest`` for a pinned image); raises
    ``NotAutomatableError`` for an image we cannot edit."""
    image = target.image
    if digest is None:
        return TagMove(target, image.ref.tag or "", new_tag, (image.tag_change(new_tag),))
    return TagMove(
        target, image.ref.tag or "", new_tag, image.pinned_changes(new_tag, digest), image.ref.digest, digest
    )


def values_hold(obj: Mapping[str, Any], changes: Sequence[ValueChange]) -> bool:
    """Whether ``obj``'s values still have every ``old`` value the changes were decided from.

    A refused JSON patch whose tested values still hold was not refused for a concurrent edit: the API
    server rejects a failed ``test`` with the same bare 422 as an invalid patch, so this tells them apart.
    """
    values = _mapping(obj.get("spec")).get("values")
    for change in changes:
        node: object = values
        for key in change.path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node != change.old:
            return False
    return True
