"""dockerconfigjson parsing and matching: which Secret entry answers for which image."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.adapters.credentials import BasicCredentials
from helmrelease.adapters.registry.credentials import (
    CredentialStore,
    DockerConfigError,
    parse_auth_key,
    parse_docker_config,
)
from helmrelease.adapters.registry.names import as_canonical


def _auth(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param("registry.example.com", ("registry.example.com", ""), id="host"),
        pytest.param("Registry.Example.com:5000", ("registry.example.com:5000", ""), id="port-and-case"),
        pytest.param("https://registry.example.com/v1/", ("registry.example.com", ""), id="legacy-v1-url"),
        pytest.param("http://registry.example.com/v2", ("registry.example.com", ""), id="v2-url"),
        pytest.param("https://index.docker.io/v1/", ("docker.io", ""), id="docker-login-default"),
        pytest.param("registry-1.docker.io", ("docker.io", ""), id="hub-api-host"),
        pytest.param("registry.hub.docker.com", ("docker.io", ""), id="hub-old-host"),
        pytest.param("registry.example.com/team/", ("registry.example.com", "team"), id="path-prefix"),
        pytest.param("*.example.com", ("*.example.com", ""), id="glob"),
    ],
)
def test_auth_key_parsing(key: str, expected: tuple[str, str]) -> None:
    assert parse_auth_key(key) == expected


MIXED_CONFIG: dict[str, Any] = {
    "auths": {
        "https://index.docker.io/v1/": {"auth": _auth("hub-user", "hub-pass")},
        "registry.example.com": {"username": "plain", "password": "p"},
        "registry.example.com/team-a": {"auth": _auth("team-a", "a")},
        "registry.example.com/team-a/special": {"auth": _auth("special", "s")},
        "*.mirror.example.com": {"auth": _auth("glob", "g")},
        "eu.mirror.example.com": {"auth": _auth("literal", "l")},
        "localhost:5000": {"auth": _auth("local", "l:with:colons")},
        "[::1]:5001": {"auth": _auth("ipv6", "v6")},
        "helper-only.example.com": {"identitytoken": "opaque"},
    }
}


@pytest.mark.parametrize(
    ("image", "expected_user"),
    [
        pytest.param("nginx", "hub-user", id="hub-official-image"),
        pytest.param("docker.io/bitnami/redis", "hub-user", id="hub-explicit"),
        pytest.param("index.docker.io/library/alpine", "hub-user", id="hub-alias"),
        pytest.param("registry.example.com/other/app", "plain", id="host-entry"),
        pytest.param("registry.example.com/team-a/app", "team-a", id="path-prefix-beats-host"),
        pytest.param("registry.example.com/team-a/special/app", "special", id="longest-prefix-wins"),
        pytest.param("registry.example.com/team-ab/app", "plain", id="prefix-matches-whole-components"),
        pytest.param("us.mirror.example.com/app", "glob", id="glob-label"),
        pytest.param("eu.mirror.example.com/app", "literal", id="literal-beats-glob"),
        pytest.param("a.b.mirror.example.com/app", None, id="glob-matches-one-label-only"),
        pytest.param("localhost:5000/app", "local", id="port"),
        pytest.param("localhost:5001/app", None, id="other-port"),
        pytest.param("localhost/app", None, id="no-port"),
        pytest.param("[::1]:5001/app", "ipv6", id="ipv6"),
        pytest.param("helper-only.example.com/app", None, id="entry-without-secret-is-skipped"),
        pytest.param("quay.io/app", None, id="unknown-host"),
    ],
)
def test_credentials_for_image(image: str, expected_user: str | None) -> None:
    found = CredentialStore.from_docker_configs(MIXED_CONFIG).credentials_for(as_canonical(image))
    assert (found.username if found else None) == expected_user


def test_passwords_keep_their_colons() -> None:
    found = CredentialStore.from_docker_configs(MIXED_CONFIG).credentials_for(
        as_canonical("localhost:5000/x")
    )
    assert found == BasicCredentials("local", "l:with:colons")


def test_earlier_config_wins_between_equal_entries() -> None:
    first = {"auths": {"ghcr.io": {"auth": _auth("first", "1")}}}
    second = {"auths": {"https://ghcr.io": {"auth": _auth("second", "2")}}}
    found = CredentialStore.from_docker_configs(first, second).credentials_for(as_canonical("ghcr.io/o/app"))
    assert found == BasicCredentials("first", "1")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param({"auth": _auth("a", "b"), "username": "x", "password": "y"}, ("a", "b"), id="auth-wins"),
        pytest.param({"username": "x", "password": "y"}, ("x", "y"), id="username-password"),
        pytest.param({"username": "token-only", "password": ""}, ("token-only", ""), id="empty-password"),
        pytest.param({"auth": ""}, None, id="empty-auth"),
        pytest.param({}, None, id="empty-entry"),
    ],
)
def test_entry_forms(entry: dict[str, str], expected: tuple[str, str] | None) -> None:
    entries = parse_docker_config({"auths": {"r.example": entry}})
    assert [(e.credentials.username, e.credentials.password) for e in entries] == (
        [expected] if expected else []
    )


def test_legacy_dockercfg_without_auths_wrapper() -> None:
    entries = parse_docker_config({"https://r.example/v1/": {"auth": _auth("old", "cfg")}})
    assert [(e.host_pattern, e.credentials.username) for e in entries] == [("r.example", "old")]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param({"auths": {"r.example": {"auth": "%%%"}}}, "not base64", id="auth-not-base64"),
        pytest.param(
            {"auths": {"r.example": {"auth": base64.b64encode(b"nocolon").decode()}}},
            "no 'username:password'",
            id="auth-without-colon",
        ),
        pytest.param({"auths": {"r.example": "user:pass"}}, "not an object", id="entry-not-object"),
        pytest.param({"auths": ["r.example"]}, "keyed by registry", id="auths-not-object"),
    ],
)
def test_bad_docker_configs_say_which_entry(config: dict[str, Any], message: str) -> None:
    with pytest.raises(DockerConfigError, match=message):
        parse_docker_config(config)


def test_password_stays_out_of_repr() -> None:
    credentials = BasicCredentials("robot", "s3cr3t")
    assert "s3cr3t" not in repr(credentials)
    assert "s3cr3t" not in repr(
        CredentialStore.from_docker_configs({"auths": {"r.example": {"auth": _auth("u", "s3cr3t")}}})
    )


@given(
    st.text(st.characters(exclude_characters=":", codec="utf-8"), min_size=1),
    st.text(st.characters(codec="utf-8")),
)
def test_auth_field_round_trips_any_username_and_password(username: str, password: str) -> None:
    entries = parse_docker_config({"auths": {"r.example": {"auth": _auth(username, password)}}})
    assert [entry.credentials for entry in entries] == [BasicCredentials(username, password)]
    assert entries[0].credentials.authorization == "Basic " + _auth(username, password)
