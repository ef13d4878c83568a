"""Image references: parsing as written, formatting back, canonical names for Docker Hub."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.images.reference import (
    CanonicalName,
    ImageRef,
    ImageReferenceError,
    check_tag,
    is_valid_tag,
    parse_image_ref,
)

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("nginx", ImageRef("nginx"), id="name-only"),
        pytest.param("nginx:1.25", ImageRef("nginx", tag="1.25"), id="name-tag"),
        pytest.param("repo/image:version", ImageRef("repo/image", tag="version"), id="user-repo-tag"),
        pytest.param(
            "docker.io/bitnami/mongodb:4.0.3", ImageRef("bitnami/mongodb", "docker.io", "4.0.3"), id="hub"
        ),
        pytest.param("localhost/app", ImageRef("app", "localhost"), id="localhost"),
        pytest.param("localhost:5000/app:1", ImageRef("app", "localhost:5000", "1"), id="localhost-port"),
        pytest.param("myreg:5000/team/app:1", ImageRef("team/app", "myreg:5000", "1"), id="host-port-no-dot"),
        pytest.param(
            "quay.io/prometheus/prometheus:v2.3.1",
            ImageRef("prometheus/prometheus", "quay.io", "v2.3.1"),
            id="quay",
        ),
        pytest.param("ghcr.io/a/b/c/d:x_Y.z-1", ImageRef("a/b/c/d", "ghcr.io", "x_Y.z-1"), id="deep-path"),
        pytest.param(f"nginx@{DIGEST}", ImageRef("nginx", digest=DIGEST), id="digest-only"),
        pytest.param(
            f"nginx:1.25@{DIGEST}", ImageRef("nginx", tag="1.25", digest=DIGEST), id="tag-and-digest"
        ),
        pytest.param("[::1]:5000/app:2", ImageRef("app", "[::1]:5000", "2"), id="ipv6"),
        pytest.param("10.0.0.1:5000/app", ImageRef("app", "10.0.0.1:5000"), id="ip-port"),
        pytest.param("my.app", ImageRef("my.app"), id="dotted-single-component"),
        pytest.param("team/my-app__x.y", ImageRef("team/my-app__x.y"), id="separators"),
        pytest.param(
            "Registry.Example.com/app", ImageRef("app", "Registry.Example.com"), id="uppercase-host"
        ),
    ],
)
def test_parse(text: str, expected: ImageRef) -> None:
    assert parse_image_ref(text) == expected
    assert str(parse_image_ref(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(" nginx", id="leading-space"),
        pytest.param("nginx ", id="trailing-space"),
        pytest.param("Nginx", id="uppercase-repo"),
        pytest.param("nginx:", id="empty-tag"),
        pytest.param("nginx:-x", id="tag-leading-dash"),
        pytest.param("nginx:.x", id="tag-leading-dot"),
        pytest.param("nginx:" + "a" * 129, id="tag-too-long"),
        pytest.param("nginx@", id="empty-digest"),
        pytest.param("nginx@sha256:abc", id="short-digest"),
        pytest.param("nginx@sha256:" + "g" * 64, id="non-hex-digest"),
        pytest.param("repo//image", id="empty-component"),
        pytest.param("/image", id="leading-slash"),
        pytest.param("image/", id="trailing-slash"),
        pytest.param("repo/-image", id="component-leading-dash"),
        pytest.param("a:b:c", id="two-colons"),
        pytest.param("reg.io:port/app", id="non-numeric-port"),
        pytest.param("-reg.io/app", id="host-leading-dash"),
        pytest.param("repo/image:1.0:2.0", id="tag-twice"),
        pytest.param("a" * 256, id="name-too-long"),
        pytest.param("repo/im age", id="inner-space"),
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ImageReferenceError):
        parse_image_ref(text)


def test_repository_that_reads_as_registry_is_rejected_without_registry() -> None:
    with pytest.raises(ImageReferenceError, match="would read as registry"):
        ImageRef("example.com/app")


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param("nginx", "docker.io/library/nginx", id="library"),
        pytest.param("nginx", "index.docker.io/nginx", id="index"),
        pytest.param("nginx", "registry-1.docker.io/library/nginx", id="api-host"),
        pytest.param("bitnami/mongodb:4.0", "docker.io/bitnami/mongodb:4.1", id="user-repo-tags-differ"),
        pytest.param("DOCKER.IO/bitnami/mongodb", "bitnami/mongodb", id="host-case"),
        pytest.param(f"quay.io/a/b@{DIGEST}", "quay.io/a/b:1", id="digest-vs-tag"),
    ],
)
def test_same_image(left: str, right: str) -> None:
    assert parse_image_ref(left).same_image(parse_image_ref(right))


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param("nginx", "quay.io/nginx", id="other-registry"),
        pytest.param("library/nginx", "other/nginx", id="other-namespace"),
        pytest.param("localhost:5000/app", "localhost:5001/app", id="other-port"),
    ],
)
def test_different_image(left: str, right: str) -> None:
    assert not parse_image_ref(left).same_image(parse_image_ref(right))


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        pytest.param("nginx", CanonicalName("docker.io", "library/nginx"), id="official"),
        pytest.param("bitnami/mongodb", CanonicalName("docker.io", "bitnami/mongodb"), id="user"),
        pytest.param("quay.io/nginx", CanonicalName("quay.io", "nginx"), id="no-library-elsewhere"),
        pytest.param("localhost:5000/a/b", CanonicalName("localhost:5000", "a/b"), id="local"),
    ],
)
def test_canonical(text: str, canonical: CanonicalName) -> None:
    assert parse_image_ref(text).canonical == canonical


def test_with_tag_keeps_the_spelling() -> None:
    ref = parse_image_ref("docker.io/library/nginx:1.0")
    assert str(ref.with_tag("1.1")) == "docker.io/library/nginx:1.1"
    with pytest.raises(ImageReferenceError):
        ref.with_tag("not a tag")


@pytest.mark.parametrize(
    ("tag", "valid"),
    [
        ("v1.2.3", True),
        ("latest", True),
        ("_x", True),
        ("1", True),
        ("a" * 128, True),
        ("", False),
        ("-1", False),
        ("a/b", False),
        ("a:b", False),
        ("a" * 129, False),
    ],
)
def test_tag_validity(tag: str, valid: bool) -> None:
    assert is_valid_tag(tag) is valid
    if valid:
        assert check_tag(tag) == tag
    else:
        with pytest.raises(ImageReferenceError):
            check_tag(tag)


_alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_separator = st.sampled_from([".", "_", "__", "-", "--"])
_component = st.builds(
    lambda head, rest: head + "".join(sep + part for sep, part in rest),
    _alnum,
    st.lists(st.tuples(_separator, _alnum), max_size=2),
)
_host_label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,5}[a-zA-Z0-9])?", fullmatch=True)
_registry = st.one_of(
    st.just("localhost"),
    st.builds(lambda labels: ".".join(labels), st.lists(_host_label, min_size=2, max_size=3)),
    st.builds(lambda host, port: f"{host}:{port}", _host_label, st.integers(1, 65535)),
)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_digest = st.builds(lambda hex_: f"sha256:{hex_}", st.from_regex(r"[0-9a-f]{64}", fullmatch=True))


@st.composite
def image_refs(draw: st.DrawFn) -> ImageRef:
    registry = draw(st.none() | _registry)
    components = draw(st.lists(_component, min_size=1, max_size=3))
    if registry is None and len(components) > 1 and ("." in components[0] or components[0] == "localhost"):
        components[0] = components[0].replace(".", "-") + "x"
    return ImageRef(
        repository="/".join(components),
        registry=registry,
        tag=draw(st.none() | _tag),
        digest=draw(st.none() | _digest),
    )


@given(image_refs())
def test_format_then_parse_round_trips(ref: ImageRef) -> None:
    assert parse_image_ref(str(ref)) == ref


@given(st.text(max_size=40))
def test_parse_never_fails_with_anything_but_reference_error(text: str) -> None:
    try:
        ref = parse_image_ref(text)
    except ImageReferenceError:
        return
    assert str(ref) == text
