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

A container without a policy gets ``glob:*``, still subject to ``automated``. A ``tag.<container>`` or
``tag-order.<container>`` naming a container the release has no image for (a typo, an image the chart
keeps elsewhere) applies to nothing: ``unmatched_containers`` says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from helmrelease.images.policy import DEFAULT_POLICY, TagOrder, TagPolicy, parse_policy

FLUXCD_PREFIX = "fluxcd.io/"
WEAVE_PREFIX = "flux.weave.works/"
FILTER_PREFIX = "filter.fluxcd.io/"
TAG_ORDER_PREFIX = f"{FLUXCD_PREFIX}tag-order."
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


def _flag(annotations: Mapping[str, object], name: str, warnings: list[str]) -> bool:
    keys = [prefix + name for prefix in _SETTING_PREFIXES]
    chosen = _choose(annotations, keys, warnings)
    if chosen is None:
        return False
    raw = annotations[chosen.key]
    if raw == _TRUE:
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
    return AutomationSettings(
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
