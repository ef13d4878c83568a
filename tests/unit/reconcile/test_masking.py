"""Masking the values that came from Secrets in helm's error text: every spelling, and nothing short."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.reconcile.masking import MASK, MIN_SECRET_LENGTH, go_float, masker_for, secret_strings

PEM = "-----BEGIN KEY-----\nMIIBVQIBADANBgkq\nhkiG9w0BAQEFAASC\n-----END KEY-----\n"


@pytest.mark.parametrize(
    ("values", "text", "expected"),
    [
        pytest.param(
            {"db": {"password": "hunter2-password"}},
            'Service "web" is invalid: metadata.labels: Invalid value: "hunter2-password": a valid label must',
            'Service "web" is invalid: metadata.labels: Invalid value: "***": a valid label must',
            id="api-server-quotes-it",
        ),
        pytest.param(
            {"label": 'say "hi" \\ bye'},
            'Invalid value: "say \\"hi\\" \\\\ bye"',
            'Invalid value: "***"',
            id="go-quoted",
        ),
        pytest.param(
            {"token": "<a&b>-token"},
            '{"token":"\\u003ca\\u0026b\\u003e-token"}',
            '{"token":"***"}',
            id="go-json-html-escaped",
        ),
        pytest.param(
            {"word": "pässwörd"},
            'value "p\\u00e4ssw\\u00f6rd" and pässwörd',
            'value "***" and ***',
            id="non-ascii-escaped-and-not",
        ),
        pytest.param(
            {"port": 9876543},
            "spec.ports[0].port: Invalid value: 9876543: must be between 1 and 65535; rendered 9.876543e+06",
            "spec.ports[0].port: Invalid value: ***: must be between 1 and 65535; rendered ***",
            id="a-number-as-yaml-reads-it-and-as-go-prints-it",
        ),
        pytest.param(
            {"key": PEM},
            "bad key line MIIBVQIBADANBgkq in block",
            "bad key line *** in block",
            id="one-line-of-a-multi-line-value",
        ),
        pytest.param(
            {"key": "hunter2-password"},
            f"data: {base64.b64encode(b'hunter2-password').decode()}",
            f"data: {MASK}",
            id="base64-of-it",
        ),
        pytest.param(
            {"word": "it's-secret"},
            "message: 'it''s-secret'",
            "message: '***'",
            id="yaml-single-quoted",
        ),
        pytest.param(
            {"a": "secret", "b": "secret-and-more"},
            "x secret-and-more y secret z",
            "x *** y *** z",
            id="the-longer-value-masked-whole",
        ),
        pytest.param(
            {"replicas": 3, "enabled": True, "tier": "prod", "port": 80, "nothing": None, "ratio": 0.5},
            "Deployment prod: replicas 3 enabled true port 80 ratio 0.5",
            "Deployment prod: replicas 3 enabled true port 80 ratio 0.5",
            id="short-values-and-booleans-are-left-alone",
        ),
        pytest.param(
            {"verylongkeyname": "short"},
            "verylongkeyname is wrong",
            "verylongkeyname is wrong",
            id="keys-are-not-secrets",
        ),
        pytest.param(
            {"list": ["first-secret", {"deep": ["second-secret"]}]},
            "first-secret, second-secret",
            "***, ***",
            id="lists-and-depth",
        ),
        pytest.param(None, "anything at all", "anything at all", id="an-empty-layer"),
    ],
)
def test_masking(values: Any, text: str, expected: str) -> None:
    assert masker_for([values])(text) == expected


def test_without_secret_layers_nothing_is_masked() -> None:
    masker = masker_for([])
    assert masker.pattern is None
    assert masker('Invalid value: "hunter2"') == 'Invalid value: "hunter2"'


def test_the_minimum_length_is_where_masking_starts() -> None:
    shortest, shorter = "x" * MIN_SECRET_LENGTH, "y" * (MIN_SECRET_LENGTH - 1)
    assert secret_strings({"a": shortest, "b": shorter, "c": 10 ** (MIN_SECRET_LENGTH - 1)}) == {
        shortest,
        str(10 ** (MIN_SECRET_LENGTH - 1)),
    }


@pytest.mark.parametrize(
    ("number", "printed"),
    [
        pytest.param(9876543.0, "9.876543e+06", id="exponent-from-a-million"),
        pytest.param(1000000.0, "1e+06", id="shortest-digits"),
        pytest.param(999999.9, "999999.9", id="below-a-million"),
        pytest.param(123456.0, "123456", id="integral"),
        pytest.param(0.00001, "1e-05", id="small"),
        pytest.param(0.5, "0.5", id="fraction"),
    ],
)
def test_go_float(number: float, printed: str) -> None:
    assert go_float(number) == printed


SECRET = st.text(
    st.characters(blacklist_characters="*", blacklist_categories=("Cs",)), min_size=MIN_SECRET_LENGTH
)


@given(secret=SECRET, before=st.text(max_size=40), after=st.text(max_size=40))
def test_a_secret_value_never_survives_masking(secret: str, before: str, after: str) -> None:
    masked = masker_for([{"value": secret}])(before + secret + after)
    if len(secret.strip()) >= MIN_SECRET_LENGTH:
        assert secret.strip() not in masked
    else:
        assert masked == before + secret + after


def test_a_masker_never_shows_what_it_masks() -> None:
    masker = masker_for([{"password": "hunter2-password"}])
    assert "hunter2" not in repr(masker)
    assert "hunter2" not in str(masker)
