"""WWW-Authenticate, Link and Retry-After parsing: tables for what registries send, hypothesis beyond."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.adapters.registry.headers import (
    Challenge,
    RateBudget,
    parse_next_link,
    parse_rate_budget,
    parse_www_authenticate,
    preferred_challenge,
    retry_after_seconds,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(
            [
                'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                'scope="repository:library/nginx:pull"'
            ],
            [
                (
                    "bearer",
                    {
                        "realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:library/nginx:pull",
                    },
                )
            ],
            id="docker-hub",
        ),
        pytest.param(
            ['Basic realm="helmrelease-test"'], [("basic", {"realm": "helmrelease-test"})], id="basic"
        ),
        pytest.param(
            ['Bearer realm="https://ghcr.io/token", service="ghcr.io", scope="repository:a/b:pull,push"'],
            [
                (
                    "bearer",
                    {
                        "realm": "https://ghcr.io/token",
                        "service": "ghcr.io",
                        "scope": "repository:a/b:pull,push",
                    },
                )
            ],
            id="spaces-and-comma-in-quoted-scope",
        ),
        pytest.param(
            ["BEARER Realm=https://r.example/token,Service=r.example"],
            [("bearer", {"realm": "https://r.example/token", "service": "r.example"})],
            id="unquoted-values-and-case",
        ),
        pytest.param(
            ['Bearer realm="a\\"b\\\\c"'], [("bearer", {"realm": 'a"b\\c'})], id="escaped-quote-and-backslash"
        ),
        pytest.param(
            ['Basic realm="x", Bearer realm="https://t.example/token",error="insufficient_scope"'],
            [
                ("basic", {"realm": "x"}),
                ("bearer", {"realm": "https://t.example/token", "error": "insufficient_scope"}),
            ],
            id="two-challenges-in-one-header",
        ),
        pytest.param(
            ['Basic realm="x"', 'Bearer realm="y"'],
            [("basic", {"realm": "x"}), ("bearer", {"realm": "y"})],
            id="two-headers",
        ),
        pytest.param(["Negotiate"], [("negotiate", {})], id="scheme-only"),
        pytest.param([""], [], id="empty"),
        pytest.param(['="broken'], [], id="garbage"),
    ],
)
def test_www_authenticate_parsing(values: list[str], expected: list[tuple[str, dict[str, str]]]) -> None:
    parsed = parse_www_authenticate(values)
    assert [(challenge.scheme, dict(challenge.params)) for challenge in parsed] == expected


@pytest.mark.parametrize(
    ("challenges", "expected_scheme"),
    [
        pytest.param(
            [Challenge("basic", {"realm": "x"}), Challenge("bearer", {"realm": "y"})],
            "bearer",
            id="bearer-wins",
        ),
        pytest.param([Challenge("bearer", {})], None, id="bearer-without-realm-is-unusable"),
        pytest.param([Challenge("bearer", {}), Challenge("basic", {})], "basic", id="falls-back-to-basic"),
        pytest.param([Challenge("negotiate", {})], None, id="unknown-scheme"),
        pytest.param([], None, id="none"),
    ],
)
def test_preferred_challenge(challenges: list[Challenge], expected_scheme: str | None) -> None:
    chosen = preferred_challenge(challenges)
    assert (chosen.scheme if chosen else None) == expected_scheme


_tokens = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+!#$&'*^`|", min_size=1
)
_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)))


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(
    st.lists(
        st.tuples(_tokens, st.dictionaries(_tokens.map(str.lower), _values, max_size=4)),
        min_size=1,
        max_size=3,
    )
)
def test_www_authenticate_round_trips_any_quoted_params(challenges: list[tuple[str, dict[str, str]]]) -> None:
    header = ", ".join(
        f"{scheme} " + ", ".join(f"{name}={_quote(value)}" for name, value in params.items())
        for scheme, params in challenges
    )
    parsed = parse_www_authenticate([header])
    assert [(c.scheme, dict(c.params)) for c in parsed] == [(s.lower(), p) for s, p in challenges]


@given(st.lists(st.text(), max_size=3))
def test_www_authenticate_never_raises(values: list[str]) -> None:
    assert all(isinstance(challenge, Challenge) for challenge in parse_www_authenticate(values))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(
            '</v2/app/tags/list?last=b&n=2>; rel="next"', "/v2/app/tags/list?last=b&n=2", id="distribution"
        ),
        pytest.param(
            "<https://r.example/v2/a/tags/list?n=2&last=x>; rel=next",
            "https://r.example/v2/a/tags/list?n=2&last=x",
            id="absolute-unquoted",
        ),
        pytest.param(
            '<https://x/prev>; rel="prev", <https://x/next>; rel="next"', "https://x/next", id="second-link"
        ),
        pytest.param(
            '<https://x/a>; title="next page"; REL="first next"', "https://x/a", id="rel-list-and-case"
        ),
        pytest.param('<https://x/a,b>; rel="next"', "https://x/a,b", id="comma-inside-uri"),
        pytest.param('<https://x/prev>; rel="prev"', None, id="no-next"),
        pytest.param('<https://x/a>; rel="nextpage"', None, id="similar-rel"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
        pytest.param("rel=next", None, id="no-target"),
    ],
)
def test_next_link(header: str | None, expected: str | None) -> None:
    assert parse_next_link(header) == expected


@given(
    st.text(alphabet=st.characters(exclude_characters="<>\"'"), min_size=1).filter(lambda t: t.strip() == t)
)
def test_next_link_round_trips_any_target(target: str) -> None:
    assert parse_next_link(f'<{target}>; rel="next"') == target


@given(st.one_of(st.none(), st.text()))
def test_next_link_never_raises(header: str | None) -> None:
    result = parse_next_link(header)
    assert result is None or isinstance(result, str)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("120", 120.0, id="seconds"),
        pytest.param(" 0 ", 0.0, id="zero-with-spaces"),
        pytest.param("Sat, 01 Mar 2025 12:00:30 GMT", 30.0, id="http-date"),
        pytest.param("Sat, 01 Mar 2025 11:00:00 GMT", 0.0, id="date-in-the-past"),
        pytest.param("Sat, 01 Mar 2025 12:01:00", 60.0, id="date-without-zone-is-utc"),
        pytest.param("-5", None, id="negative"),
        pytest.param("1.5", None, id="fraction"),
        pytest.param("soon", None, id="garbage"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header, NOW) == expected


@given(st.integers(min_value=0, max_value=10**12))
def test_retry_after_seconds_round_trip(seconds: int) -> None:
    assert retry_after_seconds(str(seconds), NOW) == seconds


@given(st.integers(min_value=0, max_value=10**7))
def test_retry_after_date_round_trip(seconds: int) -> None:
    header = format_datetime(NOW + timedelta(seconds=seconds), usegmt=True)
    assert retry_after_seconds(header, NOW) == seconds


@given(st.text())
def test_retry_after_never_raises_and_is_never_negative(header: str) -> None:
    result = retry_after_seconds(header, NOW)
    assert result is None or result >= 0


@pytest.mark.parametrize(
    ("remaining", "reset", "expected"),
    [
        pytest.param("76;w=21600", None, RateBudget(76, 21600.0), id="docker-hub"),
        pytest.param("76; W=60", None, RateBudget(76, 60.0), id="window-any-case"),
        pytest.param("50", "30", RateBudget(50, 30.0), id="ietf-draft"),
        pytest.param("50;w=60", "7", RateBudget(50, 7.0), id="reset-beats-window"),
        pytest.param("0", None, RateBudget(0, None), id="spent-no-horizon"),
        pytest.param("100;w=3600, 5;w=60", None, RateBudget(5, 60.0), id="lowest-of-several"),
        pytest.param("10", "1735689600", RateBudget(10, None), id="epoch-reset-is-not-a-delay"),
        pytest.param("10", "soon", RateBudget(10, None), id="unreadable-reset"),
        pytest.param(None, "30", None, id="no-remaining"),
        pytest.param("", None, None, id="empty"),
        pytest.param("-1", None, None, id="negative"),
        pytest.param("many", None, None, id="not-a-number"),
    ],
)
def test_parse_rate_budget(remaining: str | None, reset: str | None, expected: RateBudget | None) -> None:
    assert parse_rate_budget(remaining, reset) == expected


@given(st.text(max_size=60), st.one_of(st.none(), st.text(max_size=30)))
def test_parse_rate_budget_never_raises(remaining: str, reset: str | None) -> None:
    budget = parse_rate_budget(remaining, reset)
    assert budget is None or (budget.remaining >= 0 and (budget.seconds is None or budget.seconds >= 0))
