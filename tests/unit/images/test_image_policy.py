"""Tag policies: Masterminds v3 constraints, globs, regular expressions, and the ``latest`` rule."""

from __future__ import annotations

import re

import pytest
import semver
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.images.policy import (
    GlobPolicy,
    PolicyError,
    RegexPolicy,
    SemverPolicy,
    TagOrder,
    parse_constraint,
    parse_policy,
    parse_tag_version,
)

# (constraint, version, admitted): Masterminds/semver v3 constraint tests, plus the examples of our specs.
MASTERMINDS_CASES = [
    ("=2.0.0", "1.2.3", False),
    ("=2.0.0", "2.0.0", True),
    ("=2.0", "1.2.3", False),
    ("=2.0", "2.0.0", True),
    ("=2.0", "2.0.1", True),
    ("= 2.0", "2.0.0", True),
    ("4.1", "4.1.0", True),
    ("4.1.x", "4.1.3", True),
    ("1.x", "1.4", True),
    ("!=4.1.0", "4.1.0", False),
    ("!=4.1.0", "4.1.1", True),
    ("!=4.1", "4.1.0", False),
    ("!=4.1", "4.1.1", False),
    ("!=4.1", "5.1.0-alpha.1", False),
    ("!=4.1-alpha", "4.1.0", True),
    ("!=4.1-alpha", "4.1.0-alpha", False),
    ("!=4.1-alpha", "4.1.1-alpha", False),
    ("!=4.1", "5.1.0", True),
    ("!=4.x", "5.1.0", True),
    ("!=4.x", "4.1.0", False),
    ("!=4.1.x", "4.2.0", True),
    ("!=4.2.x", "4.2.3", False),
    ("<11", "0.1.0", True),
    ("<11", "11.1.0", False),
    ("<1.1", "0.1.0", True),
    ("<1.1", "1.1.0", False),
    ("<1.1", "1.1.1", False),
    ("<1.x", "1.1.1", False),
    ("<1.x", "0.1.1", True),
    ("<1.x", "2.0.0", False),
    ("<2.x", "1.1.1", True),
    ("<1.1.x", "1.2.1", False),
    ("<1.1.x", "1.1.500", False),
    ("<1.1.x", "1.0.500", True),
    ("<1.2.x", "1.1.1", True),
    ("<=11", "1.2.3", True),
    ("<=11", "12.2.3", False),
    ("<=11", "11.2.3", True),
    ("<=1.1", "1.2.3", False),
    ("<=1.1", "0.1.0", True),
    ("<=1.1", "1.1.0", True),
    ("<=1.1", "1.1.1", True),
    ("<=1.1", "0.1.0-alpha", False),
    ("<=1.1-a", "0.1.0-alpha", True),
    ("<=1.x", "1.1.0", True),
    ("<=2.x", "3.0.0", False),
    ("<=1.1.x", "1.2.500", False),
    ("<=4.5", "3.4.0", True),
    ("<=4.5", "3.7.0", True),
    ("<=4.5", "4.6.3", False),
    (">1.1", "4.1.0", True),
    (">1.1", "1.1.0", False),
    (">0", "0", False),
    (">0", "1", True),
    (">0", "0.0.1-alpha", False),
    (">0.0", "0.0.1-alpha", False),
    (">0-0", "0.0.1-alpha", False),
    (">0.0-0", "0.0.1-alpha", False),
    (">0", "0.0.0-alpha", False),
    (">0-0", "0.0.0-alpha", False),
    (">0.0.0-0", "0.0.0-alpha", True),
    (">1.2.3-alpha.1", "1.2.3-alpha.2", True),
    (">1.2.3-alpha.1", "1.3.3-alpha.2", True),
    (">11", "11.1.0", False),
    (">11.1", "11.1.0", False),
    (">11.1", "11.1.1", False),
    (">11.1", "11.2.1", True),
    (">=11", "11.1.2", True),
    (">=11.1", "11.1.2", True),
    (">=11.1", "11.0.2", False),
    (">=1.1", "4.1.0", True),
    (">=1.1", "4.1.0-beta", False),
    (">=1.1", "1.1.0", True),
    (">=1.1", "0.0.9", False),
    (">=0", "0.0.1-alpha", False),
    (">=0.0", "0.0.1-alpha", False),
    (">=0-0", "0.0.1-alpha", True),
    (">=0.0-0", "0.0.1-alpha", True),
    (">=0", "0.0.0-alpha", False),
    (">=0-0", "0.0.0-alpha", True),
    (">=0.0.0-0", "0.0.0-alpha", True),
    (">=0.0.0-0", "1.2.3", True),
    (">=0.0.0-0", "3.4.5-beta.1", True),
    ("=>1.1", "1.1.0", True),
    ("=<1.1", "1.1.0", True),
    ("<0", "0.0.0-alpha", False),
    ("<0-z", "0.0.0-alpha", True),
    (">=0", "0", True),
    ("=0", "1", False),
    ("*", "1", True),
    ("*", "4.5.6", True),
    ("*", "1.2.3-alpha.1", False),
    ("*-0", "1.2.3-alpha.1", True),
    ("x", "1.2.3", True),
    ("X", "0.0.1", True),
    ("2.*", "1", False),
    ("2.*", "3.4.5", False),
    ("2.*", "2.1.1", True),
    ("2.1.*", "2.1.1", True),
    ("2.1.*", "2.2.1", False),
    ("2", "1", False),
    ("2", "3.4.5", False),
    ("2", "2.1.1", True),
    ("2.1", "2.1.1", True),
    ("2.1", "2.2.1", False),
    ("0.x.x", "1.2.3", False),
    ("0.0.x", "1.2.3", False),
    ("0.0.0", "1.2.3", False),
    ("~0.0.0", "1.2.3", True),
    ("~*", "2.1.1", True),
    ("~1.2.3", "1.2.4", True),
    ("~1.2.3", "1.3.4", False),
    ("~1.2.3", "1.2.5", True),
    ("~1.2.3", "1.2.2", False),
    ("~1.2", "1.2.4", True),
    ("~1.2", "1.3.4", False),
    ("~1", "1.2.4", True),
    ("~1", "2.3.4", False),
    ("~1", "2.1.1", False),
    ("~1", "1.3.5", True),
    ("~1", "1.4", True),
    ("~1", "1.3.5-beta", False),
    ("~1.x", "2.1.1", False),
    ("~1.x", "1.3.5", True),
    ("~1.x", "1.3.5-beta", False),
    ("~1.1", "1.1.1", True),
    ("~1.1", "1.1.1-alpha", False),
    ("~1.1", "1.2.3", False),
    ("~1.3", "2.4.5", False),
    ("~1.1-alpha", "1.1.1-beta", True),
    ("~1.1.1-beta", "1.1.1-alpha", False),
    ("~1.1.1-beta", "1.1.1", True),
    ("~1.3.6-alpha", "1.3.5-beta", False),
    ("~1.3.5-alpha", "1.3.5-beta", True),
    ("~1.3.5-beta", "1.3.5-alpha", False),
    ("~0.2.3", "0.2.5", True),
    ("~0.2.3", "0.3.5", False),
    ("~1.2.3-beta.2", "1.2.3-beta.4", True),
    ("~1.2.3-beta.2", "1.2.4-beta.2", True),
    ("~1.2.3-beta.2", "1.3.4-beta.2", False),
    ("~>1.2", "1.2.9", True),
    ("~>1.2", "1.3.0", False),
    ("^1.2.3", "1.8.9", True),
    ("^1.2.3", "2.8.9", False),
    ("^1.2.3", "1.2.1", False),
    ("^1.1.0", "2.1.0", False),
    ("^1.2.0", "2.2.1", False),
    ("^1.2.0", "1.2.1-alpha.1", False),
    ("^1.2.0-alpha.0", "1.2.1-alpha.1", True),
    ("^1.2.0-alpha.0", "1.2.1-alpha.0", True),
    ("^1.2.0-alpha.2", "1.2.0-alpha.1", False),
    ("^1.2", "1.8.9", True),
    ("^1.2", "2.8.9", False),
    ("^1", "1.8.9", True),
    ("^1", "2.8.9", False),
    ("^1.1", "1.1.1", True),
    ("^1.1", "1.1.1-alpha", False),
    ("^1.1", "4.3.2", False),
    ("^1.1.1-alpha", "1.1.1-beta", True),
    ("^1.1.1-beta", "1.1.1-alpha", False),
    ("^1.x", "1.1.1", True),
    ("^2.x", "1.1.1", False),
    ("^1.x", "2.1.1", False),
    ("^1.x", "1.1.1-beta1", False),
    ("^1.1.2-alpha", "1.2.1-beta1", True),
    ("^1.2.x-alpha", "1.1.1-beta1", False),
    ("^0.2.3", "0.2.5", True),
    ("^0.2.3", "0.5.6", False),
    ("^0.2", "0.2.5", True),
    ("^0.2", "0.5.6", False),
    ("^0.0.3", "0.0.3", True),
    ("^0.0.3", "0.0.4", False),
    ("^0.0", "0.0.3", True),
    ("^0.0", "0.1.4", False),
    ("^0.0", "1.0.4", False),
    ("^0", "0.2.3", True),
    ("^0", "1.1.4", False),
    ("^0.0.0", "1.2.3", False),
    ("^0.0.1", "0.0.1", True),
    ("^0.0.1", "0.3.1", False),
    ("^0.0.1", "0.1.3", False),
    ("^0.2.3-beta.2", "0.2.3-beta.4", True),
    ("^0.2.3-beta.2", "0.2.4-beta.2", True),
    ("^0.2.3-beta.2", "0.3.4-beta.2", False),
    ("^0.2.3-beta.2", "0.2.3-beta.2", True),
    ("^*", "4.0.0", True),
    (">1.1, <2", "1.1.1", False),
    (">1.1, <2", "1.2.1", True),
    (">1.1, <3", "4.3.2", False),
    (">=1.1, <2, !=1.2.3", "1.2.3", False),
    (">1.1 <2", "1.1.1", False),
    (">1.1 <2", "1.2.1", True),
    (">1.1    <3", "4.3.2", False),
    (">=1.1    <2    !=1.2.3", "1.2.3", False),
    (">=1.1, <2, !=1.2.3 || > 3", "4.1.2", True),
    (">=1.1, <2, !=1.2.3 || > 3", "3.1.2", False),
    (">=1.1, <2, !=1.2.3 || >= 3", "3.0.0", True),
    (">=1.1, <2, !=1.2.3 || > 3", "3.0.0", False),
    (">=1.1, <2, !=1.2.3 || > 3", "1.2.3", False),
    (">=1.1 <2 !=1.2.3 || > 3", "4.1.2", True),
    ("> 1.1, <     2", "1.1.1", False),
    (">   1.1, <2", "1.2.1", True),
    (">= 1.1 <2 != 1.2.3 || >= 3", "3.0.0", True),
    ("1.1 - 2", "1.1.1", True),
    ("1.5.0 - 4.5", "3.7.0", True),
    ("1.2 - 1.4.5", "1.4.5", True),
    ("1.2 - 1.4.5", "1.4.6", False),
    ("1.2 - 1.4.5", "1.1.9", False),
    ("3 - 4 || => 3.0, < 4", "4.9.9", True),
    ("1.1-3", "4.3.2", False),
    ("12.3.34 ~1.2.3", "1.2.3", False),
    ("v1.2.3", "1.2.3", True),
    # The examples of helm-integration.md and image-automation.md.
    ("~4.0", "4.0.3", True),
    ("~4.0", "4.0.10", True),
    ("~4.0", "4.1.0", False),
    ("~2.3", "2.3.1", True),
    ("~2.3", "2.4.0", False),
    ("~1.2.3", "1.2.99", True),
    ("~1.2.3", "1.3.0", False),
    ("^0.2.3", "0.2.3", True),
    ("^0.2.3", "0.3.0", False),
    (">=1.2.3-0", "1.2.3-rc.1", True),
    (">=1.2.3-0", "2.0.0-beta", True),
    (">=1.2.3-0 <2.0.0", "1.5.0-beta", False),
    (">=1.2.3-0 <2.0.0", "1.5.0", True),
    (">=1.2.3", "1.2.4-rc.1", False),
]


def _id(case: tuple[str, str, bool]) -> str:
    constraint, version, admitted = case
    return f"{constraint}|{version}|{'yes' if admitted else 'no'}"


@pytest.mark.parametrize(
    ("constraint", "version", "admitted"), MASTERMINDS_CASES, ids=[_id(case) for case in MASTERMINDS_CASES]
)
def test_constraint(constraint: str, version: str, admitted: bool) -> None:
    parsed_version = parse_tag_version(version)
    assert parsed_version is not None
    assert parse_constraint(constraint).admits(parsed_version) is admitted


@pytest.mark.parametrize(
    "constraint",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("foo", id="word"),
        pytest.param(">= bar", id="operator-word"),
        pytest.param("BAR >= 1.2.3", id="word-first"),
        pytest.param("12.3.4.1234", id="four-parts"),
        pytest.param("12.23.4.1234", id="four-parts-2"),
        pytest.param("12.3.34~ 1.2.3", id="operator-glued-after"),
        pytest.param(">1 ||", id="empty-alternative"),
        pytest.param("|| >1", id="leading-or"),
        pytest.param(">1,", id="trailing-comma"),
        pytest.param(">1,,<2", id="double-comma"),
        pytest.param(", >1", id="leading-comma"),
        pytest.param(">>1", id="double-operator"),
        pytest.param("1.2 -1.4", id="half-range"),
        pytest.param("1x", id="mixed-wildcard"),
        pytest.param(">1.2abc", id="trailing-letters"),
        pytest.param("1.2.3-01", id="leading-zero-prerelease"),
        pytest.param("~", id="operator-alone"),
    ],
)
def test_constraint_rejects(constraint: str) -> None:
    with pytest.raises(PolicyError):
        parse_constraint(constraint)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        pytest.param("1.2.3", semver.Version(1, 2, 3), id="full"),
        pytest.param("v1.2.3", semver.Version(1, 2, 3), id="v-prefix"),
        pytest.param("1.2", semver.Version(1, 2, 0), id="partial-minor"),
        pytest.param("v2", semver.Version(2, 0, 0), id="partial-major"),
        pytest.param("1.2.3-rc.1+build.5", semver.Version(1, 2, 3, "rc.1", "build.5"), id="pre-and-build"),
        pytest.param("01.2.3", semver.Version(1, 2, 3), id="leading-zero-core-is-loose"),
        pytest.param("1.2.3-0", semver.Version(1, 2, 3, "0"), id="zero-prerelease"),
        pytest.param("1.2.3-alpine", semver.Version(1, 2, 3, "alpine"), id="flavour-suffix"),
        pytest.param("latest", None, id="latest"),
        pytest.param("V1.2.3", None, id="capital-v"),
        pytest.param("1.2.3.4", None, id="four-parts"),
        pytest.param("1.2.3-01", None, id="leading-zero-prerelease"),
        pytest.param("1.2.3-", None, id="empty-prerelease"),
        pytest.param("1.2.3-a..b", None, id="empty-identifier"),
        pytest.param("18446744073709551615.0.0", semver.Version(2**64 - 1, 0, 0), id="uint64-max"),
        pytest.param("18446744073709551616.0.0", None, id="past-uint64"),
        pytest.param("1." + "0" * 40 + "2", semver.Version(1, 2, 0), id="leading-zeros-are-not-size"),
        pytest.param("main-abc123", None, id="branch-build"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_tag_version(tag: str, expected: semver.Version | None) -> None:
    assert parse_tag_version(tag) == expected


@pytest.mark.parametrize(
    ("policy", "tag", "matches"),
    [
        pytest.param("glob:*", "anything", True, id="glob-star"),
        pytest.param("*", "v1", True, id="bare-star"),
        pytest.param("glob:*", "latest", False, id="star-skips-latest"),
        pytest.param("glob:*", "LATEST", False, id="star-skips-latest-any-case"),
        pytest.param("glob:latest", "latest", True, id="glob-latest-names-it"),
        pytest.param("latest", "latest", True, id="bare-latest-is-glob-latest"),
        pytest.param("glob:latest", "LATEST", False, id="glob-is-case-sensitive-for-latest"),
        pytest.param("glob:latest*", "latest", False, id="latest-prefix-is-not-the-exact-pattern"),
        pytest.param("glob:v0.15.*", "v0.15.0", True, id="spec-glob"),
        pytest.param("glob:v0.15.*", "v0.16.0", False, id="spec-glob-no"),
        pytest.param("glob:v0.15.*", "v0.15.", True, id="star-matches-nothing"),
        pytest.param("glob:master-*", "master-a.b_c", True, id="star-matches-any-run"),
        pytest.param("glob:*-alpine", "1.2-alpine", True, id="suffix"),
        pytest.param("glob:V1*", "v1.0", False, id="case-sensitive"),
        pytest.param("glob:1.?", "1.2", False, id="question-mark-is-literal"),
        pytest.param("glob:1.?", "1.?", False, id="question-mark-is-literal-and-no-tag-has-it"),
        pytest.param("glob:[ab]", "a", False, id="brackets-are-literal"),
        pytest.param("glob:a*b*c", "aXXbYYc", True, id="several-stars"),
        pytest.param("glob:a*b*c", "aXXcYYb", False, id="several-stars-order"),
        pytest.param("glob:1.2", "1.2.3", False, id="whole-tag"),
        pytest.param("regex:^0.6.*", "0.6.0", True, id="spec-regex"),
        pytest.param("regex:^0.6.*", "0.7.0", False, id="spec-regex-no"),
        pytest.param("regexp:^0.6.*", "0.6.1", True, id="regexp-alias"),
        pytest.param("regex:rc", "1.0-rc1", True, id="regex-unanchored"),
        pytest.param("regex:^v[0-9]+$", "v12", True, id="regex-anchored"),
        pytest.param("regex:^v[0-9]+$", "v12a", False, id="regex-anchored-no"),
        pytest.param("regex:.*", "latest", False, id="regex-skips-latest"),
        pytest.param("regex:^latest$", "latest", False, id="regex-cannot-name-latest"),
        pytest.param("regex:(?i)^V1", "v1.2", True, id="regex-re2-flags"),
        pytest.param("regex:^v\\d+$", "v12", True, id="regex-re2-digit-class"),
        pytest.param("regex:^[[:alpha:]]+$", "main", True, id="regex-re2-posix-class"),
        pytest.param("glob:*", "a/b", False, id="not-a-tag-slash"),
        pytest.param("glob:*", "-rc", False, id="not-a-tag-leading-dash"),
        pytest.param("regex:.", "a" * 129, False, id="not-a-tag-too-long"),
        pytest.param("regex:.", "a\nb", False, id="not-a-tag-newline"),
        pytest.param("glob:*", "\ud800", False, id="not-a-tag-lone-surrogate"),
        pytest.param("semver:~4.0", "4.0.3", True, id="spec-semver"),
        pytest.param("semver:~4.0", "v4.0.9", True, id="semver-v-tag"),
        pytest.param("semver:~4.0", "4.1.0", False, id="semver-outside"),
        pytest.param("semver:~4.0", "4.0", True, id="semver-partial-tag"),
        pytest.param("semver:*", "latest", False, id="semver-latest"),
        pytest.param("semver:*", "main", False, id="semver-non-version"),
        pytest.param("semver:*", "1.0.0-rc.1", False, id="semver-star-no-prerelease"),
        pytest.param("semver:~2.3", "v2.3.1", True, id="spec-prometheus"),
        pytest.param("  semver:~2.3  ", "v2.3.1", True, id="surrounding-space"),
    ],
)
def test_policy_matches(policy: str, tag: str, matches: bool) -> None:
    assert parse_policy(policy).matches(tag) is matches


@pytest.mark.parametrize(
    ("policy", "kind", "order"),
    [
        ("glob:*", GlobPolicy, TagOrder.CREATED),
        ("v1.*", GlobPolicy, TagOrder.CREATED),
        ("regex:^a", RegexPolicy, TagOrder.CREATED),
        ("regexp:^a", RegexPolicy, TagOrder.CREATED),
        ("semver:^1", SemverPolicy, TagOrder.SEMVER),
    ],
)
def test_policy_kind_and_default_order(policy: str, kind: type, order: TagOrder) -> None:
    parsed = parse_policy(policy)
    assert isinstance(parsed, kind)
    assert parsed.default_order is order
    assert str(parsed) == policy


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        pytest.param("", "empty tag pattern", id="empty"),
        pytest.param("glob:", "empty tag pattern", id="empty-glob"),
        pytest.param("regex:", "needs a regular expression", id="empty-regex"),
        pytest.param("regex:(", "does not compile", id="bad-regex"),
        pytest.param("regexp:[a-", "does not compile", id="bad-regexp"),
        pytest.param("semver:~" + "1" * 30, "at most 18446744073709551615", id="semver-past-uint64"),
        pytest.param("semver:>=1." + "9" * 5000, "(uint64)", id="semver-too-many-digits-for-int"),
        pytest.param("semver:", "empty", id="empty-semver"),
        pytest.param("semver:~>foo", "cannot read", id="bad-semver"),
        pytest.param("semvr:~1", "unknown policy prefix 'semvr:'", id="typo-prefix"),
        pytest.param("glob:a:b", "unknown policy prefix 'a:'", id="colon-in-glob"),
    ],
)
def test_policy_errors(policy: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(policy)


_version_part = st.one_of(st.integers(0, 30).map(str), st.sampled_from(["x", "X", "*"]))
_version = st.builds(
    lambda parts, pre, v: ("v" if v else "") + ".".join(parts) + (f"-{pre}" if pre else ""),
    st.lists(_version_part, min_size=1, max_size=3),
    st.sampled_from(["", "alpha", "beta.2", "0", "rc-1"]),
    st.booleans(),
)
_operator = st.sampled_from(["", "=", "!=", ">", "<", ">=", "=>", "<=", "=<", "~", "~>", "^"])
_comparison = st.builds(
    lambda op, space, version: op + space + version, _operator, st.sampled_from(["", " "]), _version
)
_alternative = st.builds(
    lambda first, rest: first + "".join(sep + item for sep, item in rest),
    _comparison,
    st.lists(st.tuples(st.sampled_from([" ", ",", ", ", "  "]), _comparison), max_size=3),
)
_constraint = st.builds(
    lambda alternatives: " || ".join(alternatives), st.lists(_alternative, min_size=1, max_size=3)
)
_tags = st.builds(
    lambda nums, pre: ".".join(map(str, nums)) + (f"-{pre}" if pre else ""),
    st.lists(st.integers(0, 30), min_size=1, max_size=3),
    st.sampled_from(["", "alpha", "beta.2", "0", "rc-1"]),
)


@given(_constraint, _tags)
def test_generated_constraints_parse_and_decide(constraint: str, tag: str) -> None:
    version = parse_tag_version(tag)
    assert version is not None
    assert isinstance(parse_constraint(constraint).admits(version), bool)


@given(_constraint, _constraint, _tags)
def test_or_is_the_union_of_its_alternatives(left: str, right: str, tag: str) -> None:
    version = parse_tag_version(tag)
    assert version is not None
    either = parse_constraint(f"{left} || {right}").admits(version)
    assert either == (parse_constraint(left).admits(version) or parse_constraint(right).admits(version))


@given(_alternative, _alternative, _tags)
def test_comma_is_the_intersection(left: str, right: str, tag: str) -> None:
    version = parse_tag_version(tag)
    assert version is not None
    both = parse_constraint(f"{left}, {right}").admits(version)
    assert both == (parse_constraint(left).admits(version) and parse_constraint(right).admits(version))


@given(st.text(max_size=30))
def test_parser_only_raises_policy_error(text: str) -> None:
    try:
        policy = parse_policy(text)
    except PolicyError:
        return
    assert isinstance(policy.matches("1.2.3"), bool)


@given(
    st.text(alphabet="ab*.-", min_size=1, max_size=8),
    st.builds(str.__add__, st.sampled_from("ab"), st.text(alphabet="ab.-", max_size=10)),
)
def test_glob_agrees_with_its_regular_expression(pattern: str, tag: str) -> None:
    """The backtracking translation is fine for 11 characters; the linear matcher must agree with it."""
    expected = re.fullmatch(".*".join(re.escape(piece) for piece in pattern.split("*")), tag) is not None
    assert parse_policy(f"glob:{pattern}").matches(tag) is expected


# --- hostile patterns: each decides at once (the timeout turns a regression into a failure, not a hang) ---

A36 = "a" * 36


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("policy", "tag", "matches"),
    [
        pytest.param("regex:^(a+)+$", A36 + "-", False, id="nested-plus-issue-example"),
        pytest.param("regex:^(a+)+$", A36, True, id="nested-plus-matching"),
        pytest.param("regexp:^(a|a)+$", "a" * 100 + "-", False, id="overlapping-alternatives"),
        pytest.param("regex:^(a|aa)+$", "a" * 120 + "_", False, id="ambiguous-alternatives"),
        pytest.param("regex:^(a*)*b$", "a" * 120, False, id="star-of-star"),
        pytest.param("regex:^(.*a){20}$", "a" * 100 + "-", False, id="polynomial-repetition"),
        pytest.param("regex:^([a-z0-9]+-?)+$", "a" * 100 + "_", False, id="optional-separator"),
        pytest.param("regex:^(\\w+\\.?)+$", "a" * 100 + "-", False, id="word-runs"),
        pytest.param("glob:" + "*a" * 40 + "*b", "a" * 128, False, id="glob-many-stars"),
        pytest.param("glob:" + "*a" * 40 + "*b", "a" * 127 + "b", True, id="glob-many-stars-matching"),
        pytest.param("glob:*" + "a*" * 60, "a" * 59 + "b" * 69, False, id="glob-stars-short-of-pieces"),
        pytest.param("semver:>=1.0.0", "1." + "0" * 120 + "-", False, id="semver-long-tag"),
    ],
)
def test_catastrophic_patterns_decide_at_once(policy: str, tag: str, matches: bool) -> None:
    compiled = parse_policy(policy)
    for _ in range(200):  # a cycle matches every tag of a repository: hundreds
        assert compiled.matches(tag) is matches


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        pytest.param(
            "^(a)\\1$", "invalid escape sequence: \\1; backreferences need backtracking", id="backref"
        ),
        pytest.param("(?P<v>a)(?P=v)", "backreferences need backtracking", id="named-backref"),
        pytest.param("^v(?=1)", "invalid perl operator: (?=; lookahead and lookbehind", id="lookahead"),
        pytest.param("^(?!rc)", "lookahead and lookbehind", id="negative-lookahead"),
        pytest.param("(?<=v)1", "lookahead and lookbehind", id="lookbehind"),
        pytest.param("(?<!v)1", "lookahead and lookbehind", id="negative-lookbehind"),
        pytest.param("(?>a+)b", "atomic groups and possessive quantifiers", id="atomic-group"),
        pytest.param("a++b", "atomic groups and possessive quantifiers", id="possessive"),
        pytest.param("^1\\Z", "RE2 writes the end of the text \\z (or $)", id="python-end-of-text"),
        pytest.param("(?x) ^ 1", "RE2 flags are i, m, s and U", id="verbose-flag"),
        pytest.param("a{1001}", "RE2 counts repetitions up to 1000", id="repetition-count"),
        pytest.param(
            "\\pL{1000}", "pattern too large - compile failed; a tag policy may use 1 MiB", id="too-big"
        ),
        pytest.param("(", "missing ): (", id="plain-syntax-error"),
    ],
)
def test_patterns_re2_refuses_say_which_and_why(pattern: str, reason: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(f"regex:{pattern}")
    message = str(raised.value)
    assert message.startswith(f"regular expression {pattern!r} does not compile (RE2 syntax, Go's regexp")
    assert reason in message


@pytest.mark.parametrize(
    ("pattern", "never"),
    [
        pytest.param("[", True, id="bracket-issue-example"),
        pytest.param("v1.[0-9]*", True, id="character-class-is-literal"),
        pytest.param("1.?", True, id="question-mark-is-literal"),
        pytest.param("*/*", True, id="slash"),
        pytest.param("-rc*", True, id="leading-dash-without-star"),
        pytest.param(".*", True, id="leading-dot-without-star"),
        pytest.param("a" * 129, True, id="too-long"),
        pytest.param("*" + "a" * 128, False, id="longest-after-a-star"),
        pytest.param("*-" + "a" * 127, True, id="too-long-once-a-first-character-is-added"),
        pytest.param("LATEST", True, id="latest-in-capitals"),
        pytest.param("*-alpine", False, id="leading-star-then-dash"),
        pytest.param("*", False, id="star"),
        pytest.param("latest", False, id="latest-names-it"),
        pytest.param("v1.*", False, id="ordinary"),
    ],
)
def test_a_glob_no_tag_can_match_says_so(pattern: str, never: bool) -> None:
    policy = parse_policy(f"glob:{pattern}")
    assert bool(policy.warnings) is never
    if never:
        assert policy.warnings[0].startswith(f"glob pattern {pattern!r} matches no tag: ")
