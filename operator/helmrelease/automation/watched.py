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

    @property
    def container(self) -> str:
        return self.image.container

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
        targets.append(ImageTarget(image, text, policy, settings.order_for(image.container, policy)))
    return tuple(targets)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


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
    suspended: bool = False

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
            target for target in self.targets if target.may_change and target.container not in shared
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
        suspended=spec.get("suspend") is True,
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
    """A decided update of one image: the value edit and what people are told about it."""

    target: ImageTarget
    old_tag: str
    new_tag: str
    change: ValueChange

    @property
    def summary(self) -> str:
        """``prom/prometheus v2.3.1 → v2.3.2 (semver:~2.3)``: the Event and log message."""
        return f"{self.target.image.ref.name} {self.old_tag} → {self.new_tag} ({self.target.policy_text})"


def tag_move(target: ImageTarget, new_tag: str) -> TagMove:
    """The move of ``target`` to ``new_tag`` (raises ``NotAutomatableError`` for an image we cannot edit)."""
    return TagMove(target, target.image.ref.tag or "", new_tag, target.image.tag_change(new_tag))


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
