"""Automation settings read from a HelmRelease's ``metadata.annotations``, as Flux v1 users write them.

Flux v1 annotations, under either prefix ``fluxcd.io/`` or the older ``flux.weave.works/``:

- ``automated``, ``locked``, ``ignore``: on only with the exact string ``"true"``, off with ``"false"``
  (and ``ignore: "sync_only"``, which in Flux v1 skips the sync but not the automation); anything else (``"True"``, ``"yes please"``, a YAML ``true`` in a manifest) is off, with a warning so the
  user sees why;
- ``locked_msg``, ``locked_user``: free text shown with the lock;
- ``tag.<container>``: the tag policy of a container (see ``policy.py``); ``filter.fluxcd.io/<container>``
  means the same.

Where Flux v1 read several spellings in an unspecified order, we use a fixed precedence:
``fluxcd.io/`` over ``filter.fluxcd.io/`` over ``flux.weave.works/``, and warn when they disagree.

Our extension, ``fluxcd.io/tag-order.<container>: created | semver | alphabetical | numerical``, says how
that container's candidate tags are ranked. Without it a ``semver:`` policy ranks by version and every
other policy by the image's build time, which is what Flux v1 did. An unknown order is a warning and the
default applies.

Our own, under ``image.helm.fluxcd.io/`` (the sidecar's extensions beyond Flux v1):

- ``pin-digest.<container>: "true"``: after the tag is chosen, write its manifest digest too (``tag@sha256:…``,
  or into a sibling ``digest`` value), so a tag pushed again with other content is an update of its own;
- ``min-age.<container>: 1h`` (a Go duration): a tag is a candidate only once its image was built, or first
  seen by the sidecar, whichever is later, at least that long ago;
- ``paused.<container>``: written by the sidecar when someone set the image back to an older tag than the
  one it last wrote; while it is there, that image does not move (remove it to resume);
- ``written.<container>``: the sidecar's record of the tag it last wrote there (how it knows a step back
  was someone else's).

A container without a policy gets ``glob:*``, still subject to ``automated``. A ``tag.<container>`` or
``tag-order.<container>`` naming a container the release has no image for (a typo, an image the chart
keeps elsewhere) applies to nothing: ``unmatched_containers`` says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Final

from helmrelease.images.detect import PIN_DIGEST_PREFIX, DetectedImage
from helmrelease.images.duration import DurationError, format_duration, parse_duration
from helmrelease.images.policy import DEFAULT_POLICY, PolicyError, TagOrder, TagPolicy, parse_policy

FLUXCD_PREFIX = "fluxcd.io/"
WEAVE_PREFIX = "flux.weave.works/"
FILTER_PREFIX = "filter.fluxcd.io/"
TAG_ORDER_PREFIX = f"{FLUXCD_PREFIX}tag-order."
IMAGE_PREFIX: Final = "image.helm.fluxcd.io/"
MIN_AGE_PREFIX: Final = f"{IMAGE_PREFIX}min-age."
PAUSED_PREFIX: Final = f"{IMAGE_PREFIX}paused."
WRITTEN_PREFIX: Final = f"{IMAGE_PREFIX}written."
_SETTING_PREFIXES = (FLUXCD_PREFIX, WEAVE_PREFIX)
_TAG_POLICY_PREFIXES = (f"{FLUXCD_PREFIX}tag.", FILTER_PREFIX, f"{WEAVE_PREFIX}tag.")
_TRUE = "true"
#: The values that mean off without a warning: ``"false"``, and Flux v1's ``ignore: sync_only`` (skip the
#: sync, keep automating), which for image automation is off.
_OFF = {
    "automated": frozenset({"false"}),
    "locked": frozenset({"false"}),
    "ignore": frozenset({"false", "sync_only"}),
}


#: The soak of a container whose ``min-age`` does not read: no tag is ever old enough, so a typo holds the
#: image where it is rather than letting a fresh tag through early.
_NEVER: Final = timedelta.max


@dataclass(frozen=True)
class AutomationSettings:
    """What the annotations ask for; ``warnings`` explain every annotation that was ignored or overruled."""

    automated: bool = False
    locked: bool = False
    locked_msg: str | None = None
    locked_user: str | None = None
    ignore: bool = False
    tag_policies: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    tag_orders: Mapping[str, TagOrder] = field(default_factory=lambda: MappingProxyType({}))
    warnings: tuple[str, ...] = ()
    #: For each container named by an annotation, the keys that name it (``fluxcd.io/tag.web`` ...).
    container_keys: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    #: Containers whose digest is written with the tag (``pin-digest.<container>: "true"``).
    pin_digest: frozenset[str] = frozenset()
    #: How long a tag soaks before it may be chosen, per container (``min-age.<container>``).
    min_ages: Mapping[str, timedelta] = field(default_factory=lambda: MappingProxyType({}))
    #: Paused containers and the sidecar's note of why (``paused.<container>``).
    paused: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: What the sidecar last wrote per container (``written.<container>``: ``tag`` or ``tag@digest``).
    written: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def policy_text_for(self, container: str) -> str:
        """The policy as written for ``container``, or the default ``glob:*``."""
        return self.tag_policies.get(container, DEFAULT_POLICY)

    def policy_for(self, container: str) -> TagPolicy:
        """The parsed policy for ``container``; raises ``PolicyError`` when the annotation does not parse."""
        return parse_policy(self.policy_text_for(container))

    def order_for(self, container: str, policy: TagPolicy) -> TagOrder:
        """The explicit ``tag-order`` of ``container``, else the order that goes with its policy."""
        return self.tag_orders.get(container, policy.default_order)

    def unmatched_containers(self, containers: Sequence[str]) -> tuple[str, ...]:
        """One sentence per annotation that names a container not among ``containers`` (the release's
        images, in the order shown), so a misspelled name is not silently a policy for nothing."""
        known = ", ".join(containers) or "none found in .spec.values"
        return tuple(
            f"{key} names container {container!r}, but the release has no image of that name "
            f"(its images: {known}); the annotation applies to nothing"
            for container, keys in self.container_keys.items()
            if container not in containers
            for key in keys
        )


@dataclass(frozen=True)
class EffectivePolicy:
    """Everything that decides whether and how one image moves, for ``images scan`` and CI pipelines:
    ``held`` lists why it never will (empty when it may)."""

    policy: str
    order: TagOrder | None
    pin_digest: bool
    min_age: timedelta | None
    paused: str | None
    held: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        soak = None
        if self.min_age is not None:
            soak = (
                "never (min-age does not read)" if self.min_age == _NEVER else format_duration(self.min_age)
            )
        return {
            "policy": self.policy,
            "order": self.order.value if self.order is not None else None,
            "pin_digest": self.pin_digest,
            "min_age": soak,
            "moves": not self.held,
            "held": list(self.held),
        }


def effective_policy(settings: AutomationSettings, image: DetectedImage) -> EffectivePolicy:
    """How ``image`` is automated under ``settings``, and what holds it (in the order the sidecar checks)."""
    container = image.container
    held: list[str] = []
    if settings.ignore:
        held.append("the release is ignored")
    if not settings.automated:
        held.append("the release is not automated")
    if settings.locked:
        held.append("the release is locked")
    order: TagOrder | None = None
    try:
        order = settings.order_for(container, settings.policy_for(container))
    except PolicyError:
        held.append("its tag policy does not parse")
    if not image.automatable:
        held.append("its tag cannot be changed")
    paused = settings.paused.get(container)
    if paused is not None:
        held.append(f"it is paused ({paused})")
    if settings.min_ages.get(container) == _NEVER:
        held.append("its min-age does not read")
    return EffectivePolicy(
        settings.policy_text_for(container),
        order,
        image.pin_digest,
        settings.min_ages.get(container),
        paused,
        tuple(held),
    )


@dataclass(frozen=True)
class _Choice:
    key: str
    value: str


def _choose(annotations: Mapping[str, object], keys: list[str], warnings: list[str]) -> _Choice | None:
    """The first key present (keys in precedence order), warning about later keys that disagree."""
    present = [_Choice(key, str(annotations[key])) for key in keys if key in annotations]
    if not present:
        return None
    chosen = present[0]
    warnings.extend(
        f"{other.key}: {other.value!r} conflicts with {chosen.key}: {chosen.value!r}; using {chosen.key}"
        for other in present[1:]
        if other.value != chosen.value
    )
    return chosen


#: The value of each flag that holds the automation back.
_HOLDING = {"automated": False, "locked": True, "ignore": True}


def _flag(annotations: Mapping[str, object], name: str, warnings: list[str]) -> bool:
    keys = [prefix + name for prefix in _SETTING_PREFIXES]
    conflicts: list[str] = []
    chosen = _choose(annotations, keys, conflicts)
    if chosen is None:
        return False
    raw = annotations[chosen.key]
    value = raw == _TRUE
    if value == _HOLDING[name] and conflicts:
        # The quiet failure Flux v1 users meet: a stale spelling keeps the image from ever moving.
        conflicts = [
            f"{chosen.key}: {raw!r} overrules {key}: {annotations[key]!r} ({chosen.key} comes first), so "
            "image automation is off for this release; remove the stale one or make them agree"
            for key in keys
            if key != chosen.key and key in annotations and str(annotations[key]) != chosen.value
        ]
    warnings.extend(conflicts)
    if value:
        return True
    if raw not in _OFF[name]:
        *others, last = (f'"{value}"' for value in (_TRUE, *sorted(_OFF[name])))
        accepted = f"{', '.join(others)} or {last}"
        warnings.append(f"{chosen.key}: {raw!r} is not {accepted}, so {name} is off")
    return False


def _free_text(annotations: Mapping[str, object], name: str, warnings: list[str]) -> str | None:
    chosen = _choose(annotations, [prefix + name for prefix in _SETTING_PREFIXES], warnings)
    return None if chosen is None else chosen.value


def _containers_with(annotations: Mapping[str, object], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(
        {key.removeprefix(prefix) for key in annotations for prefix in prefixes if key.startswith(prefix)}
        - {""}
    )


def _pinned(annotations: Mapping[str, object], warnings: list[str]) -> frozenset[str]:
    pinned = set()
    for container in _containers_with(annotations, (PIN_DIGEST_PREFIX,)):
        key, value = PIN_DIGEST_PREFIX + container, annotations[PIN_DIGEST_PREFIX + container]
        if value == _TRUE:
            pinned.add(container)
        elif value != "false":
            warnings.append(f'{key}: {value!r} is not "true" or "false", so the digest is not pinned')
    return frozenset(pinned)


def _min_ages(annotations: Mapping[str, object], warnings: list[str]) -> dict[str, timedelta]:
    ages: dict[str, timedelta] = {}
    for container in _containers_with(annotations, (MIN_AGE_PREFIX,)):
        key, value = MIN_AGE_PREFIX + container, annotations[MIN_AGE_PREFIX + container]
        try:
            age = parse_duration(value) if isinstance(value, str) else None
        except DurationError as error:
            warnings.append(f"{key}: {error}; its tags are not updated until it reads")
            ages[container] = _NEVER
            continue
        if age is None or age < timedelta(0):
            warnings.append(
                f"{key}: {value!r} is not a duration of zero or more (like 1h or 30m); "
                "its tags are not updated until it reads"
            )
            ages[container] = _NEVER
        elif age > timedelta(0):
            ages[container] = age
    return ages


def _texts(annotations: Mapping[str, object], prefix: str) -> dict[str, str]:
    return {
        container: str(annotations[prefix + container])
        for container in _containers_with(annotations, (prefix,))
    }


def read_automation_settings(annotations: Mapping[str, object] | None) -> AutomationSettings:
    """Interpret ``metadata.annotations``; never raises: anything unusable becomes a warning."""
    annotations = annotations or {}
    warnings: list[str] = []
    policies: dict[str, str] = {}
    keys: dict[str, list[str]] = {}
    for container in _containers_with(annotations, _TAG_POLICY_PREFIXES):
        chosen = _choose(annotations, [prefix + container for prefix in _TAG_POLICY_PREFIXES], warnings)
        if chosen is not None:
            keys.setdefault(container, []).append(chosen.key)
            if not isinstance(annotations[chosen.key], str):
                warnings.append(
                    f"{chosen.key}: {annotations[chosen.key]!r} is not a string; reading it as text"
                )
            policies[container] = chosen.value
    orders: dict[str, TagOrder] = {}
    for container in _containers_with(annotations, (TAG_ORDER_PREFIX,)):
        key = TAG_ORDER_PREFIX + container
        keys.setdefault(container, []).append(key)
        value = annotations[key]
        if isinstance(value, str) and value in {order.value for order in TagOrder}:
            orders[container] = TagOrder(value)
        else:
            known = ", ".join(order.value for order in TagOrder)
            warnings.append(f"{key}: {value!r} is not a tag order ({known}); using the policy's default")
    for prefix in (PIN_DIGEST_PREFIX, MIN_AGE_PREFIX):
        for container in _containers_with(annotations, (prefix,)):
            keys.setdefault(container, []).append(prefix + container)
    return AutomationSettings(
        pin_digest=_pinned(annotations, warnings),
        min_ages=MappingProxyType(_min_ages(annotations, warnings)),
        paused=MappingProxyType(_texts(annotations, PAUSED_PREFIX)),
        written=MappingProxyType(_texts(annotations, WRITTEN_PREFIX)),
        automated=_flag(annotations, "automated", warnings),
        locked=_flag(annotations, "locked", warnings),
        locked_msg=_free_text(annotations, "locked_msg", warnings),
        locked_user=_free_text(annotations, "locked_user", warnings),
        ignore=_flag(annotations, "ignore", warnings),
        tag_policies=MappingProxyType(policies),
        tag_orders=MappingProxyType(orders),
        warnings=tuple(warnings),
        container_keys=MappingProxyType({container: tuple(names) for container, names in keys.items()}),
    )
