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
it moves, so "newer than latest" means nothing. Nor is a string no registry would accept as a tag: a
registry's tag list is untrusted input, and a valid tag is at most 128 characters.

Patterns come from tenants, and one cycle matches every tag of every release in one event loop, so no
pattern may take more than linear time: ``regex:`` is RE2 (``google-re2``), the syntax of Go's ``regexp``
that Flux v1 used, and globs are compiled to RE2 too. RE2 refuses what it cannot run in linear time
(backreferences, lookaround, atomic groups, possessive quantifiers); such a pattern is a ``PolicyError``
saying so. A glob that no valid tag can match (``glob:[``: ``*`` is the only wildcard) parses, but
``warnings`` says why it will never move anything.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Final, Protocol, cast

import re2
import semver

from helmrelease.images.reference import is_valid_tag

SEMVER_PREFIX = "semver:"
GLOB_PREFIX = "glob:"
REGEX_PREFIXES = ("regex:", "regexp:")
DEFAULT_POLICY = "glob:*"
_LATEST = "latest"
#: Masterminds reads version numbers as uint64; a longer one is not a version (and ``int()`` of a huge
#: digit string is slow or refused).
_MAX_VERSION_NUMBER: Final = 2**64 - 1


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
    numbers = [_version_number(match[part] or "0") for part in ("major", "minor", "patch")]
    if None in numbers:
        return None
    major, minor, patch = cast(list[int], numbers)
    return semver.Version(major, minor, patch, prerelease=prerelease, build=match["build"])


def _version_number(digits: str) -> int | None:
    """The number, or None past uint64 (checked on the digits first: ``int()`` of 10 000 digits raises)."""
    if len(digits.lstrip("0")) > len(str(_MAX_VERSION_NUMBER)):
        return None
    number = int(digits)
    return number if number <= _MAX_VERSION_NUMBER else None


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
    parts = [match[f"{name}_{part}"] for part in ("major", "minor", "patch")]
    given: list[str] = []  # the parts before the first open one
    for part in parts:
        if part is None or part in _WILDCARDS:
            break
        given.append(part)
    wildcard = (_Wildcard.ALL, _Wildcard.MINOR, _Wildcard.PATCH, _Wildcard.NONE)[len(given)]
    numbers = [_constraint_number(part, match[name]) for part in given] + [0] * (3 - len(given))
    prerelease = match[f"{name}_prerelease"]
    if prerelease is not None and not _valid_prerelease(prerelease):
        raise PolicyError(f"{match[name]!r}: numeric pre-release parts may not start with 0")
    major, minor, patch = numbers
    return _Comparison(
        _OPERATORS[operator], semver.Version(major, minor, patch, prerelease=prerelease), wildcard
    )


def _constraint_number(digits: str, version: str) -> int:
    number = _version_number(digits)
    if number is None:
        raise PolicyError(f"{version!r}: version numbers are at most {_MAX_VERSION_NUMBER} (uint64)")
    return number


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

    @property
    def warnings(self) -> tuple[str, ...]:
        """Why a policy that parses will still never admit a tag (one sentence each; usually none)."""
        return ()

    def matches(self, tag: str) -> bool:
        """Whether ``tag`` may be chosen under this policy (``latest`` only when asked for by name).

        A string no registry accepts as a tag never is: it could not be written back, and it bounds what
        the pattern engine ever sees to 128 characters.
        """
        if not is_valid_tag(tag):
            return False
        if tag.lower() == _LATEST and not self._names_latest:
            return False
        return self._admits(tag)

    def __str__(self) -> str:
        return self.text


def _glob_matches(pieces: tuple[str, ...], tag: str) -> bool:
    """Whether ``tag`` is the pieces in order with anything between them (``*`` split them).

    Linear in the tag and pattern: the first and last pieces are anchored, and placing each middle piece
    at its leftmost occurrence leaves the most room for the rest, so nothing is ever tried twice.
    """
    if len(pieces) == 1:
        return tag == pieces[0]
    first, *middle, last = pieces
    if len(tag) < len(first) + len(last) or not tag.startswith(first) or not tag.endswith(last):
        return False
    position, end = len(first), len(tag) - len(last)
    for piece in middle:
        found = tag.find(piece, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


@dataclass(frozen=True)
class GlobPolicy(TagPolicy):
    """``*`` matches any run of characters (none included); everything else is literal, as in Flux v1."""

    text: str
    pattern: str
    _pieces: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pieces", tuple(self.pattern.split("*")))

    @property
    def default_order(self) -> TagOrder:
        return TagOrder.CREATED

    def _admits(self, tag: str) -> bool:
        return _glob_matches(self._pieces, tag)

    @property
    def _names_latest(self) -> bool:
        return self.pattern == _LATEST

    @property
    def warnings(self) -> tuple[str, ...]:
        if self._can_match:
            return ()
        if "*" not in self.pattern and is_valid_tag(self.pattern):
            return (
                f"glob pattern {self.pattern!r} matches no tag: {_LATEST!r} in any other case is never "
                f"a candidate (only glob:{_LATEST} names it)",
            )
        return (
            f"glob pattern {self.pattern!r} matches no tag: '*' is the only wildcard and every other "
            "character is literal, while a tag is letters, digits, '_', '.' and '-' (not first), "
            "at most 128 characters",
        )

    @property
    def _can_match(self) -> bool:
        """Whether some valid tag matches: the pattern with the stars left empty, or with one character
        put in for a leading star (what a literal ``.``/``-`` first needs); nothing else can help."""
        if "*" not in self.pattern:
            return self.matches(self.pattern)
        literal = self.pattern.replace("*", "")
        return is_valid_tag(literal) or (self.pattern.startswith("*") and is_valid_tag("0" + literal))


class _Pattern(Protocol):
    """What we use of a compiled ``re2`` pattern (the module has no type hints)."""

    def search(self, text: str) -> object | None: ...


#: RE2's memory budget for one pattern: a tag policy needs a fraction of it, and it bounds what the
#: re2 module's cache of 128 compiled patterns can hold to 128 MiB whatever tenants write.
RE2_MAX_MEMORY: Final = 1 << 20

#: What to do about the RE2 errors people meet coming from Python, Perl or PCRE.
_RE2_HINTS: Final = (
    (
        re.compile(r"invalid escape sequence: \\[1-9]|invalid perl operator: \(\?P(?:[=>]|$)"),
        "backreferences need backtracking, which RE2 (linear time) does not do",
    ),
    (
        re.compile(r"invalid perl operator: \(\?<?[=!]"),
        "lookahead and lookbehind need backtracking, which RE2 (linear time) does not do",
    ),
    (
        re.compile(r"invalid perl operator: \(\?>|bad repetition operator: [*+?]\+"),
        "atomic groups and possessive quantifiers are not RE2 syntax; write the pattern without them",
    ),
    (re.compile(r"invalid escape sequence: \\Z"), r"RE2 writes the end of the text \z (or $)"),
    (re.compile(r"invalid perl operator: \(\?[a-zA-Z]"), "RE2 flags are i, m, s and U"),
    (re.compile(r"invalid repetition size"), "RE2 counts repetitions up to 1000"),
    (re.compile(r"pattern too large"), f"a tag policy may use {RE2_MAX_MEMORY >> 20} MiB of RE2 memory"),
)


def _re2_error(pattern: str, error: Exception) -> PolicyError:
    """The user's pattern, RE2's reason and, for the usual surprises, what to write instead."""
    reason = error.args[0] if error.args else error
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    reason = str(reason)
    hint = next((text for expression, text in _RE2_HINTS if expression.search(reason)), None)
    return PolicyError(
        f"regular expression {pattern!r} does not compile (RE2 syntax, Go's regexp as in Flux v1): "
        + (f"{reason}; {hint}" if hint else reason)
    )


def compile_re2(pattern: str) -> _Pattern:
    """Compile with RE2: linear-time matching, its C++ error log off (the error is ours to report)."""
    options = re2.Options()
    options.log_errors = False
    options.max_mem = RE2_MAX_MEMORY
    try:
        return cast(_Pattern, re2.compile(pattern, options))
    except re2.error as error:
        raise _re2_error(pattern, error) from None
    except UnicodeEncodeError as error:  # a lone surrogate: not text RE2 (UTF-8) can hold
        raise PolicyError(f"regular expression {pattern!r} is not valid Unicode text: {error}") from None


@dataclass(frozen=True)
class RegexPolicy(TagPolicy):
    """RE2 search: unanchored unless the pattern says ``^…$``; matching time is linear in the tag."""

    text: str
    pattern: str
    _compiled: _Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", compile_re2(self.pattern))

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
