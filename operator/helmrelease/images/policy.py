"""Tag policies: which tags of an image may replace the current one.

A policy is written ``semver:<constraint>``, ``glob:<pattern>`` (the default when there is no prefix),
``regex:<re>`` or ``regexp:<re>``. We parse it once into a typed object, and a pattern that does not parse
is a ``PolicyError`` shown to the user: Flux v1 silently matched every tag instead, which could roll a
release onto an image nobody chose.

Semver constraints follow Masterminds/semver v3 (what Flux v1 users wrote their annotations against),
including its quirks: ``<=1.1`` admits ``1.1.9``, ``>1.1`` does not admit ``1.1.9``, ``~0.0.0`` and ``*``
admit everything. A pre-release version is admitted only by a comparison that itself names a pre-release
(``>=1.2.3-0``), per comparison, so ``>=1.2.3-0 <2.0.0`` admits no pre-release at all, as in Masterminds.
The one place we are stricter: Masterminds lets a plain ``!=1.2.3`` admit pre-releases; we apply the
pre-release rule to every operator alike.

A tag spelled ``latest`` (any case) is never a candidate, except under the glob pattern ``latest`` itself:
it moves, so "newer than latest" means nothing.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum

import semver

SEMVER_PREFIX = "semver:"
GLOB_PREFIX = "glob:"
REGEX_PREFIXES = ("regex:", "regexp:")
DEFAULT_POLICY = "glob:*"
_LATEST = "latest"


class PolicyError(ValueError):
    """A tag policy that does not parse; the message says what is wrong, for the user."""


class TagOrder(StrEnum):
    """How candidate tags are ranked to find the newest one."""

    SEMVER = "semver"
    CREATED = "created"
    ALPHABETICAL = "alphabetical"
    NUMERICAL = "numerical"


# --- versions -------------------------------------------------------------------------------------

_IDENTIFIERS = r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"
_TAG_VERSION = re.compile(
    rf"v?(?P<major>[0-9]+)(?:\.(?P<minor>[0-9]+))?(?:\.(?P<patch>[0-9]+))?"
    rf"(?:-(?P<prerelease>{_IDENTIFIERS}))?(?:\+(?P<build>{_IDENTIFIERS}))?"
)


def _valid_prerelease(prerelease: str) -> bool:
    """SemVer forbids leading zeros in numeric pre-release identifiers (``1.0.0-01``)."""
    return all(not part.isdigit() or part == "0" or part[0] != "0" for part in prerelease.split("."))


def parse_tag_version(tag: str) -> semver.Version | None:
    """Read a tag as a version the way Masterminds does (``v`` prefix, ``1.2`` = ``1.2.0``), or ``None``."""
    match = _TAG_VERSION.fullmatch(tag)
    if match is None:
        return None
    prerelease = match["prerelease"]
    if prerelease is not None and not _valid_prerelease(prerelease):
        return None
    return semver.Version(
        int(match["major"]),
        int(match["minor"] or 0),
        int(match["patch"] or 0),
        prerelease=prerelease,
        build=match["build"],
    )


# --- semver constraints ---------------------------------------------------------------------------


class _Wildcard(Enum):
    """Which part of a constraint's version was left open (``x``, ``X``, ``*`` or simply omitted)."""

    NONE = "1.2.3"
    PATCH = "1.2.x"
    MINOR = "1.x"
    ALL = "x"


_OPERATORS = {
    "": "=",
    "=": "=",
    "!=": "!=",
    ">": ">",
    "<": "<",
    ">=": ">=",
    "=>": ">=",
    "<=": "<=",
    "=<": "<=",
    "~": "~",
    "~>": "~",
    "^": "^",
}
_OPERATOR_TEXT = r"!=|>=|=>|<=|=<|~>|[=<>~^]"
_PART = r"[0-9]+|[xX*]"


def _constraint_version(name: str) -> str:
    """The version of a comparison, its parts captured as ``<name>_major`` and so on."""
    return (
        rf"(?P<{name}>v?(?P<{name}_major>{_PART})(?:\.(?P<{name}_minor>{_PART}))?(?:\.(?P<{name}_patch>{_PART}))?"
        rf"(?:-(?P<{name}_prerelease>{_IDENTIFIERS}))?(?:\+{_IDENTIFIERS})?)"
    )


_RANGE = re.compile(rf"{_constraint_version('low')}\s+-\s+{_constraint_version('high')}")
_COMPARISON = re.compile(rf"(?P<operator>{_OPERATOR_TEXT})?\s*{_constraint_version('version')}")
_SEPARATOR = re.compile(r"\s*,\s*|\s+")
_WILDCARDS = frozenset("xX*")


@dataclass(frozen=True)
class _Comparison:
    """One ``<operator><version>`` of a constraint, with Masterminds' meaning for open parts."""

    operator: str
    version: semver.Version
    wildcard: _Wildcard

    def admits(self, candidate: semver.Version) -> bool:
        if candidate.prerelease and not self.version.prerelease:
            return False
        return _COMPARATORS[self.operator](self, candidate)


def _equal_or_tilde(c: _Comparison, v: semver.Version) -> bool:
    """``1.2.3`` is exact; ``1.2`` / ``1.x`` / ``*`` mean the tilde range of what is given."""
    if c.wildcard is not _Wildcard.NONE:
        return _tilde(c, v)
    return v.compare(c.version) == 0


def _not_equal(c: _Comparison, v: semver.Version) -> bool:
    """``!=1.2`` excludes the whole ``1.2.x``; ``!=1.2-alpha`` excludes only that pre-release name."""
    bound = c.version
    if c.wildcard is not _Wildcard.NONE:
        if bound.major != v.major:
            return True
        if c.wildcard is _Wildcard.MINOR:
            return False
        if bound.minor != v.minor:
            return True
        if c.wildcard is _Wildcard.PATCH:
            return (v.prerelease or "") != (bound.prerelease or "")
        if bound.patch != v.patch:
            return True
    return v.compare(bound) != 0


def _greater(c: _Comparison, v: semver.Version) -> bool:
    """``>1.1`` means past all of ``1.1.x`` and ``>1`` past all of ``1.x``."""
    bound = c.version
    if c.wildcard in (_Wildcard.NONE, _Wildcard.ALL):
        return v.compare(bound) > 0
    if v.major != bound.major:
        return v.major > bound.major
    return c.wildcard is _Wildcard.PATCH and v.minor > bound.minor


def _less(c: _Comparison, v: semver.Version) -> bool:
    return v.compare(c.version) < 0


def _greater_or_equal(c: _Comparison, v: semver.Version) -> bool:
    return v.compare(c.version) >= 0


def _less_or_equal(c: _Comparison, v: semver.Version) -> bool:
    """``<=1.1`` includes all of ``1.1.x`` and ``<=1`` all of ``1.x``."""
    bound = c.version
    if c.wildcard is _Wildcard.NONE:
        return v.compare(bound) <= 0
    if v.major != bound.major:
        return v.major < bound.major
    return c.wildcard is _Wildcard.MINOR or v.minor <= bound.minor


def _tilde(c: _Comparison, v: semver.Version) -> bool:
    """``~1.2.3`` = ``>=1.2.3 <1.3.0``, ``~1`` = ``>=1 <2``; ``~0.0.0`` and ``~*`` admit anything."""
    bound = c.version
    if v.compare(bound) < 0:
        return False
    if c.wildcard in (_Wildcard.NONE, _Wildcard.ALL) and (bound.major, bound.minor, bound.patch) == (0, 0, 0):
        return True
    if v.major != bound.major:
        return False
    return c.wildcard is _Wildcard.MINOR or v.minor == bound.minor


def _caret(c: _Comparison, v: semver.Version) -> bool:
    """``^1.2.3`` = ``>=1.2.3 <2``; below 1.0 the first non-zero part is fixed (``^0.2.3`` = ``<0.3``)."""
    bound = c.version
    if c.wildcard is _Wildcard.ALL:
        return True
    if v.compare(bound) < 0:
        return False
    if bound.major > 0 or c.wildcard is _Wildcard.MINOR:
        return v.major == bound.major
    if v.major > 0:
        return False
    if bound.minor > 0 or c.wildcard is _Wildcard.PATCH:
        return v.minor == bound.minor
    if v.minor > 0:
        return False
    return v.patch == bound.patch


_COMPARATORS: dict[str, Callable[[_Comparison, semver.Version], bool]] = {
    "=": _equal_or_tilde,
    "!=": _not_equal,
    ">": _greater,
    "<": _less,
    ">=": _greater_or_equal,
    "<=": _less_or_equal,
    "~": _tilde,
    "^": _caret,
}


def _comparison(operator: str, match: re.Match[str], name: str) -> _Comparison:
    """Build the comparison from the version captured under ``name``; open parts become wildcards."""
    major, minor, patch = match[f"{name}_major"], match[f"{name}_minor"], match[f"{name}_patch"]
    if major in _WILDCARDS:
        wildcard, numbers = _Wildcard.ALL, (0, 0, 0)
    elif minor is None or minor in _WILDCARDS:
        wildcard, numbers = _Wildcard.MINOR, (int(major), 0, 0)
    elif patch is None or patch in _WILDCARDS:
        wildcard, numbers = _Wildcard.PATCH, (int(major), int(minor), 0)
    else:
        wildcard, numbers = _Wildcard.NONE, (int(major), int(minor), int(patch))
    prerelease = match[f"{name}_prerelease"]
    if prerelease is not None and not _valid_prerelease(prerelease):
        raise PolicyError(f"{match[name]!r}: numeric pre-release parts may not start with 0")
    return _Comparison(_OPERATORS[operator], semver.Version(*numbers, prerelease=prerelease), wildcard)


def _parse_alternative(text: str, whole: str) -> tuple[_Comparison, ...]:
    comparisons: list[_Comparison] = []
    position = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    if position == end:
        raise PolicyError(f"semver constraint {whole!r} has an empty alternative around '||'")
    while True:
        hyphen_range = _RANGE.match(text, position)
        if hyphen_range is not None:
            comparisons.append(_comparison(">=", hyphen_range, "low"))
            comparisons.append(_comparison("<=", hyphen_range, "high"))
            position = hyphen_range.end()
        else:
            single = _COMPARISON.match(text, position)
            if single is None:
                raise PolicyError(
                    f"semver constraint {whole!r}: cannot read a version comparison at {text[position:end]!r}"
                )
            comparisons.append(_comparison(single["operator"] or "", single, "version"))
            position = single.end()
        if position >= end:
            return tuple(comparisons)
        separator = _SEPARATOR.match(text, position)
        if separator is None or separator.end() >= end:
            raise PolicyError(
                f"semver constraint {whole!r}: expected ',' or a space before {text[position:end]!r}"
            )
        position = separator.end()


@dataclass(frozen=True)
class VersionConstraint:
    """A parsed Masterminds constraint: alternatives (``||``) of comparisons that must all hold."""

    text: str
    alternatives: tuple[tuple[_Comparison, ...], ...] = field(repr=False)

    def admits(self, version: semver.Version) -> bool:
        return any(all(c.admits(version) for c in alternative) for alternative in self.alternatives)


def parse_constraint(text: str) -> VersionConstraint:
    """Parse Masterminds v3 constraint syntax, or raise ``PolicyError`` saying where it went wrong."""
    if not text.strip():
        raise PolicyError("semver constraint is empty")
    return VersionConstraint(text, tuple(_parse_alternative(part, text) for part in text.split("||")))


# --- policies -------------------------------------------------------------------------------------


class TagPolicy(ABC):
    """Decides whether a tag is a candidate; knows which order ranks its candidates by default."""

    text: str

    @property
    @abstractmethod
    def default_order(self) -> TagOrder:
        """Semver policies rank by version, the others by the image's build time."""

    @abstractmethod
    def _admits(self, tag: str) -> bool: ...

    @property
    def _names_latest(self) -> bool:
        return False

    def matches(self, tag: str) -> bool:
        """Whether ``tag`` may be chosen under this policy (``latest`` only when asked for by name)."""
        if tag.lower() == _LATEST and not self._names_latest:
            return False
        return self._admits(tag)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class GlobPolicy(TagPolicy):
    """``*`` matches any run of characters (``/`` and nothing included); everything else is literal."""

    text: str
    pattern: str
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = ".*".join(re.escape(piece) for piece in self.pattern.split("*"))
        object.__setattr__(self, "_compiled", re.compile(regex, re.DOTALL))

    @property
    def default_order(self) -> TagOrder:
        return TagOrder.CREATED

    def _admits(self, tag: str) -> bool:
        return self._compiled.fullmatch(tag) is not None

    @property
    def _names_latest(self) -> bool:
        return self.pattern == _LATEST


@dataclass(frozen=True)
class RegexPolicy(TagPolicy):
    """Python ``re.search``: unanchored unless the pattern says ``^…$``."""

    text: str
    pattern: str
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            compiled = re.compile(self.pattern)
        except re.error as error:
            raise PolicyError(f"regular expression {self.pattern!r} does not compile: {error}") from error
        object.__setattr__(self, "_compiled", compiled)

    @property
    def default_order(self) -> TagOrder:
        return TagOrder.CREATED

    def _admits(self, tag: str) -> bool:
        return self._compiled.search(tag) is not None


@dataclass(frozen=True)
class SemverPolicy(TagPolicy):
    """Tags that read as versions and satisfy the constraint."""

    text: str
    constraint: VersionConstraint

    @property
    def default_order(self) -> TagOrder:
        return TagOrder.SEMVER

    def _admits(self, tag: str) -> bool:
        version = parse_tag_version(tag)
        return version is not None and self.constraint.admits(version)


def parse_policy(text: str) -> TagPolicy:
    """Read a policy annotation value; raise ``PolicyError`` for anything that would not mean what it says."""
    stripped = text.strip()
    if stripped.startswith(SEMVER_PREFIX):
        return SemverPolicy(stripped, parse_constraint(stripped.removeprefix(SEMVER_PREFIX)))
    for prefix in REGEX_PREFIXES:
        if stripped.startswith(prefix):
            pattern = stripped.removeprefix(prefix)
            if not pattern:
                raise PolicyError(f"{prefix} needs a regular expression after it")
            return RegexPolicy(stripped, pattern)
    pattern = stripped.removeprefix(GLOB_PREFIX)
    if not pattern:
        raise PolicyError("empty tag pattern: use glob:* to accept any tag")
    if ":" in pattern:
        prefix = pattern.partition(":")[0]
        raise PolicyError(
            f"unknown policy prefix {prefix + ':'!r} (tags cannot contain ':'); "
            f"use {SEMVER_PREFIX}, {GLOB_PREFIX}, {REGEX_PREFIXES[0]} or {REGEX_PREFIXES[1]}"
        )
    return GlobPolicy(stripped, pattern)
