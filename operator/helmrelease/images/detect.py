"""Finding the images in a HelmRelease's ``.spec.values``, and where their tags are written.

Two positions only, as in Flux v1: ``values.image…`` (container ``chart-image``) and
``values.<key>.image…`` (container ``<key>``, for each key whose value is a map). At either position the
shapes are an ``image`` string, alone (``repo/app:1.0``) or with sibling ``registry`` and/or ``tag``
strings, or an ``image`` map with ``repository`` and optional ``registry`` and ``tag``. Nothing deeper, no
lists: charts that keep images elsewhere use the alias annotations

    repository.fluxcd.io/<alias>: dotted.path.in.values   (required)
    registry.fluxcd.io/<alias>: ...                        (optional)
    tag.fluxcd.io/<alias>: ...                             (optional)

whose paths may go to any depth and which replace a detected image of the same name.

With ``image.helm.fluxcd.io/pin-digest.<container>: "true"`` an image's digest is written with its tag:
``tag@sha256:…`` where the tag is written (a combined reference or a ``tag`` value), or into the image map's
own ``digest`` value when it has one (``image: {repository, tag, digest}``, the shape many charts use). Such
an image is automatable while it carries a digest; without the annotation a digest pin is left alone.

Each image remembers where its tag lives so an update keeps the user's spelling: either a separate
``tag`` value (rewritten whole) or the part after the last ``:`` of a combined reference. Bad input is
never an exception here: an unusable image is a ``Problem``, an image we can show but must not change
(no tag, a tag YAML read as a number, a digest pin) carries warnings and no tag location.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from helmrelease.images.reference import ImageRef, ImageReferenceError, check_tag, parse_image_ref

CHART_IMAGE: Final = "chart-image"
ALIAS_REPOSITORY_PREFIX: Final = "repository.fluxcd.io/"
ALIAS_REGISTRY_PREFIX: Final = "registry.fluxcd.io/"
ALIAS_TAG_PREFIX: Final = "tag.fluxcd.io/"
PIN_DIGEST_PREFIX: Final = "image.helm.fluxcd.io/pin-digest."

ValuePath: TypeAlias = tuple[str, ...]


def dotted(path: ValuePath) -> str:
    """The path as users write it in alias annotations."""
    return ".".join(path)


@dataclass(frozen=True)
class TagField:
    """The tag is the whole string at ``path`` (``tag: 1.2.3``)."""

    path: ValuePath
    written: str

    def rewritten(self, tag: str, digest: str | None = None) -> str:
        return tag if digest is None else f"{tag}@{digest}"


@dataclass(frozen=True)
class TagSuffix:
    """The tag is what follows the last ``:`` of the reference at ``path`` (``image: repo/app:1.2.3``)."""

    path: ValuePath
    written: str

    def rewritten(self, tag: str, digest: str | None = None) -> str:
        name = self.written.partition("@")[0].rpartition(":")[0]
        return f"{name}:{tag}" if digest is None else f"{name}:{tag}@{digest}"


TagLocation: TypeAlias = TagField | TagSuffix


@dataclass(frozen=True)
class ValueChange:
    """One string in values to replace: what a manifest edit or a JSON patch carries out."""

    path: ValuePath
    old: str
    new: str


class NotAutomatableError(ValueError):
    """Asked to change the tag of an image whose tag cannot be changed (the message says why)."""


@dataclass(frozen=True)
class DetectedImage:
    """An image found in values: its container name, reference, and where it and its tag are written."""

    container: str
    ref: ImageRef
    path: ValuePath
    tag_location: TagLocation | None
    warnings: tuple[str, ...] = ()
    #: The digest is written with the tag (``pin-digest``); into ``digest_location`` when there is one.
    pin_digest: bool = False
    digest_location: TagField | None = None

    @property
    def automatable(self) -> bool:
        """Whether the tag can be changed; when not, ``warnings`` says why."""
        return self.tag_location is not None

    def tag_change(self, tag: str) -> ValueChange:
        """The value edit that moves this image to ``tag``, keeping everything else as written.

        Raises ``NotAutomatableError`` when the image has no tag location, ``ImageReferenceError`` for a
        tag no registry accepts.
        """
        if self.tag_location is None:
            raise NotAutomatableError(f"{self.container}: {'; '.join(self.warnings)}")
        location = self.tag_location
        return ValueChange(location.path, location.written, location.rewritten(check_tag(tag)))

    def pinned_changes(self, tag: str, digest: str) -> tuple[ValueChange, ...]:
        """The value edits that move this image to ``tag`` pinned at ``digest`` (only changed values).

        Raises like ``tag_change``, and ``NotAutomatableError`` when the image is not digest-pinned.
        """
        if self.tag_location is None or not self.pin_digest:
            raise NotAutomatableError(f"{self.container}: its digest is not pinned")
        check_tag(tag)
        parse_image_ref(f"{self.ref.name}:{tag}@{digest}")  # validates the digest
        location, sibling = self.tag_location, self.digest_location
        if sibling is None:
            changes = [ValueChange(location.path, location.written, location.rewritten(tag, digest))]
        else:
            changes = [
                ValueChange(location.path, location.written, location.rewritten(tag)),
                ValueChange(sibling.path, sibling.written, digest),
            ]
        return tuple(change for change in changes if change.old != change.new)


@dataclass(frozen=True)
class Problem:
    """Something in values or the alias annotations that looked meant as an image but cannot be read."""

    container: str | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.container} at {self.path}" if self.container else self.path
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Detection:
    """All images of one HelmRelease (``chart-image`` first, then by name) and the problems met."""

    images: tuple[DetectedImage, ...]
    problems: tuple[Problem, ...]

    def find(self, container: str) -> DetectedImage | None:
        return next((image for image in self.images if image.container == container), None)


_MISSING: Final = object()


@dataclass(frozen=True)
class _Part:
    """A string from values with the path it came from."""

    path: ValuePath
    text: str


def _not_a_string(path: ValuePath, value: object) -> str:
    return (
        f"{dotted(path)} is {value!r}, which YAML reads as a {type(value).__name__}, not a string; "
        "quote it so the tag keeps its exact spelling"
    )


class _Builder:
    """Turns optional registry, reference and tag parts into a ``DetectedImage`` or a ``Problem``."""

    def __init__(self, container: str, path: ValuePath, pin: bool = False) -> None:
        self.container = container
        self.path = path
        self.pin = pin
        self.digest: _Part | None = None
        self.warnings: list[str] = []
        self.tag_unusable = False

    def problem(self, message: str, path: ValuePath | None = None) -> Problem:
        return Problem(self.container, dotted(self.path if path is None else path), message)

    def tag_part(self, path: ValuePath, value: object) -> _Part | None:
        """Only a non-empty string is a tag; empty or null means "the chart's default"."""
        if value is _MISSING or value is None or value == "":
            return None
        if isinstance(value, str):
            return _Part(path, value)
        self.warnings.append(_not_a_string(path, value))
        self.tag_unusable = True
        return None

    def registry_part(self, path: ValuePath, value: object) -> _Part | None:
        if value is _MISSING or value is None or value == "":
            return None
        if isinstance(value, str):
            return _Part(path, value)
        self.warnings.append(f"{dotted(path)} is {value!r}, not a string; ignored")
        return None

    def build(self, registry: _Part | None, reference: _Part, tag: _Part | None) -> DetectedImage | Problem:
        try:
            written = parse_image_ref(reference.text)
        except ImageReferenceError as error:
            return self.problem(str(error), reference.path)
        if tag is not None and (written.tag is not None or written.digest is not None):
            return self.problem(
                f"{reference.text!r} already has a tag or digest, and {dotted(tag.path)} gives another",
                reference.path,
            )
        text = reference.text
        if registry is not None:
            text = f"{registry.text}/{text}"
        if tag is not None:
            text = f"{text}:{tag.text}"
        try:
            ref = parse_image_ref(text)
        except ImageReferenceError as error:
            return self.problem(str(error), reference.path)
        if self.digest is not None:
            if ref.digest is not None:
                return self.problem(
                    f"{text!r} has a digest, and {dotted(self.digest.path)} gives another", reference.path
                )
            if self.digest.text:
                try:
                    ref = parse_image_ref(f"{text}@{self.digest.text}")
                except ImageReferenceError as error:
                    return self.problem(str(error), self.digest.path)
        location = self._tag_location(ref, reference, tag)  # may add the warning that explains a None
        sibling = TagField(self.digest.path, self.digest.text) if self.digest is not None else None
        return DetectedImage(
            self.container, ref, self.path, location, tuple(self.warnings), self.pin, sibling
        )

    def _tag_location(self, ref: ImageRef, reference: _Part, tag: _Part | None) -> TagLocation | None:
        if self.tag_unusable:
            return None
        if ref.digest is not None and not self.pin:
            self.warnings.append(
                f"pinned by digest {ref.digest}; digests are not automated without "
                f'{PIN_DIGEST_PREFIX}{self.container}: "true"'
            )
            return None
        if ref.digest is not None and ref.tag is None:
            self.warnings.append(f"pinned by digest {ref.digest} with no tag, so no tag policy can apply")
            return None
        if tag is not None:
            return TagField(tag.path, tag.text)
        if ref.tag is not None:
            return TagSuffix(reference.path, reference.text)
        self.warnings.append("no tag, so there is nothing to compare a newer image with")
        return None


def _interpret(
    container: str, prefix: ValuePath, section: Mapping[object, object], pinned: frozenset[str]
) -> DetectedImage | Problem | None:
    """The image at ``section`` (the values root or one of its maps) in any of the five shapes."""
    image = section.get("image", _MISSING)
    pin = container in pinned
    if isinstance(image, str):
        builder = _Builder(container, (*prefix, "image"), pin)
        registry = builder.registry_part((*prefix, "registry"), section.get("registry", _MISSING))
        tag = builder.tag_part((*prefix, "tag"), section.get("tag", _MISSING))
        return builder.build(registry, _Part((*prefix, "image"), image), tag)
    if isinstance(image, Mapping):
        repository = image.get("repository", _MISSING)
        if not isinstance(repository, str):
            return None
        base = (*prefix, "image")
        builder = _Builder(container, base, pin)
        registry = builder.registry_part((*base, "registry"), image.get("registry", _MISSING))
        tag = builder.tag_part((*base, "tag"), image.get("tag", _MISSING))
        digest = image.get("digest", _MISSING)
        if pin and tag is not None and (digest is None or isinstance(digest, str)):
            builder.digest = _Part((*base, "digest"), digest or "")
        return builder.build(registry, _Part((*base, "repository"), repository), tag)
    return None


def _resolve(values: Mapping[object, object], path: ValuePath) -> object:
    node: object = values
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _parse_alias_path(text: object) -> ValuePath | None:
    if not isinstance(text, str):
        return None
    path = tuple(text.strip().split("."))
    return None if any(not key for key in path) else path


def _interpret_alias(
    alias: str, values: Mapping[object, object], annotations: Mapping[str, object], pinned: frozenset[str]
) -> DetectedImage | Problem:
    paths: dict[str, ValuePath] = {}
    for role, prefix in (
        ("repository", ALIAS_REPOSITORY_PREFIX),
        ("registry", ALIAS_REGISTRY_PREFIX),
        ("tag", ALIAS_TAG_PREFIX),
    ):
        if prefix + alias in annotations:
            path = _parse_alias_path(annotations[prefix + alias])
            if path is None:
                return Problem(
                    alias, str(annotations[prefix + alias]), f"{prefix}{alias} is not a dotted path"
                )
            paths[role] = path
    repository_path = paths.get("repository")
    if repository_path is None:
        given = next(iter(paths.values()))
        return Problem(
            alias, dotted(given), f"{ALIAS_REPOSITORY_PREFIX}{alias} is required with the other aliases"
        )
    builder = _Builder(alias, repository_path, alias in pinned)
    resolved: dict[str, object] = {}
    for role, path in paths.items():
        value = _resolve(values, path)
        if value is _MISSING:
            return builder.problem(f"{role} path does not resolve in .spec.values", path)
        resolved[role] = value
    repository = resolved["repository"]
    if not isinstance(repository, str):
        return builder.problem(f"repository is {repository!r}, not a string", repository_path)
    registry_path, tag_path = paths.get("registry"), paths.get("tag")
    registry = builder.registry_part(registry_path, resolved["registry"]) if registry_path else None
    tag = builder.tag_part(tag_path, resolved["tag"]) if tag_path else None
    return builder.build(registry, _Part(repository_path, repository), tag)


def _aliases(annotations: Mapping[str, object]) -> list[str]:
    prefixes = (ALIAS_REPOSITORY_PREFIX, ALIAS_REGISTRY_PREFIX, ALIAS_TAG_PREFIX)
    return sorted(
        {key.removeprefix(prefix) for key in annotations for prefix in prefixes if key.startswith(prefix)}
        - {""}
    )


def detect_images(values: object, annotations: Mapping[str, object] | None = None) -> Detection:
    """Find the images in ``values`` (the ``.spec.values`` map) and those the alias annotations point at."""
    found: dict[str, DetectedImage] = {}
    problems: list[Problem] = []

    def record(result: DetectedImage | Problem | None) -> None:
        if isinstance(result, DetectedImage):
            found[result.container] = result
        elif isinstance(result, Problem):
            problems.append(result)

    if not isinstance(values, Mapping):
        values = {}
    pinned = frozenset(
        key.removeprefix(PIN_DIGEST_PREFIX)
        for key, value in (annotations or {}).items()
        if key.startswith(PIN_DIGEST_PREFIX) and value == "true"
    )
    record(_interpret(CHART_IMAGE, (), values, pinned))
    for key, section in values.items():
        if not isinstance(key, str) or not isinstance(section, Mapping):
            continue
        result = _interpret(key, (key,), section, pinned)
        if key == CHART_IMAGE and result is not None:
            result = Problem(
                key, key, f"the image under {key!r} is ignored: the name means the top-level image"
            )
        record(result)
    for alias in _aliases(annotations or {}):
        found.pop(alias, None)
        record(_interpret_alias(alias, values, annotations or {}, pinned))
    ordered = sorted(found.values(), key=lambda image: (image.container != CHART_IMAGE, image.container))
    problems.sort(
        key=lambda problem: (problem.container != CHART_IMAGE, problem.container or "", problem.path)
    )
    return Detection(tuple(ordered), tuple(problems))
