"""Registry documents and names: manifests, indexes, platform choice, build times, digests, tag pages."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.adapters.registry.formats import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    DocumentError,
    ImageIndex,
    ImageManifest,
    Platform,
    created_from_config,
    describe_error_body,
    is_image_config,
    parse_created,
    parse_image_manifest,
    parse_tag_page,
    parse_token,
    select_platform,
    verify_digest,
)
from helmrelease.adapters.registry.names import api_host, as_canonical, pull_scope
from helmrelease.images.reference import CanonicalName, ImageReferenceError

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("text", "host", "path", "api"),
    [
        pytest.param("nginx", "docker.io", "library/nginx", "registry-1.docker.io", id="official-image"),
        pytest.param(
            "bitnami/redis", "docker.io", "bitnami/redis", "registry-1.docker.io", id="hub-user-image"
        ),
        pytest.param(
            "index.docker.io/nginx", "docker.io", "library/nginx", "registry-1.docker.io", id="hub-alias"
        ),
        pytest.param("ghcr.io/org/app", "ghcr.io", "org/app", "ghcr.io", id="other-registry"),
        pytest.param("127.0.0.1:5000/app", "127.0.0.1:5000", "app", "127.0.0.1:5000", id="ip-and-port"),
        pytest.param("localhost/app", "localhost", "app", "localhost", id="localhost"),
    ],
)
def test_names_map_to_api_hosts(text: str, host: str, path: str, api: str) -> None:
    name = as_canonical(text)
    assert (name.host, name.path, api_host(name)) == (host, path, api)
    assert pull_scope(name) == f"repository:{path}:pull"


def test_canonical_names_pass_through() -> None:
    name = CanonicalName("quay.io", "org/app")
    assert as_canonical(name) is name


@pytest.mark.parametrize("text", ["nginx:1.25", "ghcr.io/org/app@sha256:" + "a" * 64, "UPPER/case", ""])
def test_names_with_tags_digests_or_bad_characters_are_refused(text: str) -> None:
    with pytest.raises(ImageReferenceError):
        as_canonical(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("linux/amd64", Platform("linux", "amd64"), id="os-arch"),
        pytest.param("linux/arm64/v8", Platform("linux", "arm64", "v8"), id="with-variant"),
        pytest.param("windows/amd64", Platform("windows", "amd64"), id="windows"),
    ],
)
def test_platform_parsing(text: str, expected: Platform) -> None:
    assert Platform.parse(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d", ""])
def test_bad_platforms_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="os/architecture"):
        Platform.parse(text)


def _config_descriptor(media_type: str = OCI_CONFIG) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": DIGEST_A, "size": 10}


def _entry(digest: str, os_name: str, arch: str, variant: str | None = None) -> dict[str, Any]:
    platform = {"os": os_name, "architecture": arch} | ({"variant": variant} if variant else {})
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": 1, "platform": platform}


@pytest.mark.parametrize(
    ("document", "content_type", "expected"),
    [
        pytest.param(
            {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": _config_descriptor()},
            None,
            ImageManifest(Descriptor(OCI_CONFIG, DIGEST_A, 10)),
            id="oci-manifest",
        ),
        pytest.param(
            {"schemaVersion": 2, "config": _config_descriptor(DOCKER_CONFIG)},
            DOCKER_MANIFEST + "; charset=utf-8",
            ImageManifest(Descriptor(DOCKER_CONFIG, DIGEST_A, 10)),
            id="docker-manifest-type-from-header",
        ),
        pytest.param(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [_entry(DIGEST_B, "linux", "arm64", "v8")],
            },
            None,
            ImageIndex((Descriptor(OCI_MANIFEST, DIGEST_B, 1, Platform("linux", "arm64", "v8")),)),
            id="oci-index",
        ),
        pytest.param(
            {"schemaVersion": 2, "manifests": []},
            DOCKER_MANIFEST_LIST,
            ImageIndex(()),
            id="empty-manifest-list",
        ),
        pytest.param(
            {"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": DIGEST_B, "size": 3}]},
            "application/json",
            ImageIndex((Descriptor(OCI_MANIFEST, DIGEST_B, 3),)),
            id="index-by-shape",
        ),
    ],
)
def test_manifest_parsing(document: dict[str, Any], content_type: str | None, expected: object) -> None:
    assert parse_image_manifest(_json(document), content_type) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"<html>login</html>", "not JSON", id="html"),
        pytest.param(b"[]", "not an object", id="array"),
        pytest.param(b"\xff\xfe", "not JSON", id="binary"),
        pytest.param(b"[" * 100_000, "not JSON", id="deeply-nested"),
        pytest.param(_json({"schemaVersion": 1, "fsLayers": []}), "schema 1", id="schema-1"),
        pytest.param(_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST}), "neither", id="no-config"),
        pytest.param(_json({"mediaType": OCI_INDEX, "manifests": {}}), "not a list", id="manifests-not-list"),
        pytest.param(
            _json({"config": {"mediaType": OCI_CONFIG, "digest": "sha256:../../etc", "size": 1}}),
            "digest",
            id="digest-path-injection",
        ),
        pytest.param(
            _json({"config": {"mediaType": OCI_CONFIG, "digest": "md5:" + "a" * 32, "size": 1}}),
            "digest",
            id="unknown-digest-algorithm",
        ),
        pytest.param(
            _json({"config": {"mediaType": OCI_CONFIG, "digest": DIGEST_A, "size": "10"}}),
            "size",
            id="size-string",
        ),
        pytest.param(
            _json({"config": {"mediaType": OCI_CONFIG, "digest": DIGEST_A, "size": True}}),
            "size",
            id="size-bool",
        ),
        pytest.param(
            _json(
                {
                    "manifests": [
                        {"mediaType": OCI_MANIFEST, "digest": DIGEST_A, "size": 1, "platform": "linux"}
                    ]
                }
            ),
            "platform",
            id="platform-not-object",
        ),
    ],
)
def test_malformed_manifests_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(DocumentError, match=message):
        parse_image_manifest(body, None)


MULTI_ARCH = ImageIndex(
    tuple(
        Descriptor(OCI_MANIFEST, "sha256:" + str(n) * 64, 1, platform)
        for n, platform in enumerate(
            [
                Platform("linux", "amd64"),
                Platform("linux", "arm", "v6"),
                Platform("linux", "arm", "v7"),
                Platform("linux", "arm64", "v8"),
                Platform("unknown", "unknown"),
                Platform("windows", "amd64"),
            ]
        )
    )
)


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        pytest.param(Platform("linux", "amd64"), Platform("linux", "amd64"), id="default"),
        pytest.param(Platform("linux", "arm", "v7"), Platform("linux", "arm", "v7"), id="exact-variant"),
        pytest.param(
            Platform("linux", "arm"), Platform("linux", "arm", "v6"), id="any-variant-when-none-asked"
        ),
        pytest.param(Platform("linux", "arm64"), Platform("linux", "arm64", "v8"), id="arm64-v8"),
        pytest.param(
            Platform("linux", "amd64", "v3"), Platform("linux", "amd64"), id="variant-falls-back-to-plain"
        ),
        pytest.param(Platform("linux", "arm", "v5"), None, id="missing-variant"),
        pytest.param(Platform("linux", "s390x"), None, id="missing-architecture"),
        pytest.param(Platform("windows", "amd64"), Platform("windows", "amd64"), id="other-os"),
    ],
)
def test_platform_selection(wanted: Platform, expected: Platform | None) -> None:
    chosen = select_platform(MULTI_ARCH, wanted)
    assert (chosen.platform if chosen else None) == expected


@pytest.mark.parametrize(
    ("media_type", "expected"),
    [
        pytest.param(OCI_CONFIG, True, id="oci"),
        pytest.param(DOCKER_CONFIG, True, id="docker"),
        pytest.param("", True, id="unspecified"),
        pytest.param("application/vnd.cncf.helm.config.v1+json", False, id="helm-chart"),
    ],
)
def test_image_config_media_types(media_type: str, expected: bool) -> None:
    assert is_image_config(Descriptor(media_type, DIGEST_A, 1)) is expected


T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param({"created": "2024-05-06T07:08:09.123456Z"}, T0, id="rfc3339"),
        pytest.param({"created": "2024-05-06T07:08:09.123456789Z"}, T0, id="nanoseconds"),
        pytest.param({"created": "2024-05-06T09:08:09.123456+02:00"}, T0, id="offset-normalised-to-utc"),
        pytest.param({"created": "2024-05-06T07:08:09.123456"}, T0, id="no-offset-is-utc"),
        pytest.param(
            {
                "created": "1970-01-01T00:00:00Z",
                "config": {"Labels": {"org.opencontainers.image.created": "2024-05-06T07:08:09.123456Z"}},
            },
            T0,
            id="epoch-placeholder-falls-back-to-label",
        ),
        pytest.param(
            {"config": {"Labels": {"org.opencontainers.image.created": "2024-05-06T07:08:09.123456Z"}}},
            T0,
            id="label-only",
        ),
        pytest.param({"created": "0001-01-01T00:00:00Z"}, None, id="go-zero-time"),
        pytest.param({"created": "yesterday"}, None, id="unparseable"),
        pytest.param({"created": 1714979289}, None, id="number"),
        pytest.param({"config": {"Labels": None}}, None, id="null-labels"),
        pytest.param({}, None, id="nothing"),
    ],
)
def test_created_from_config(config: dict[str, Any], expected: datetime | None) -> None:
    assert created_from_config(_json(config)) == expected


def test_config_that_is_not_json_is_malformed() -> None:
    with pytest.raises(DocumentError, match="image config is not JSON"):
        created_from_config(b"\x1f\x8b gzip")


@given(st.datetimes(min_value=datetime(1971, 1, 1), timezones=st.timezones()))
def test_created_round_trips_any_rfc3339_time(moment: datetime) -> None:
    assert parse_created(moment.isoformat()) == moment.astimezone(UTC)


@given(st.one_of(st.text(), st.integers(), st.none(), st.lists(st.text())))
def test_parse_created_never_raises(value: object) -> None:
    result = parse_created(value)
    assert result is None or result.tzinfo is UTC


def test_created_is_never_at_or_before_the_epoch() -> None:
    assert parse_created((datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=1)).isoformat()) is not None
    assert parse_created(datetime(1970, 1, 1, tzinfo=UTC).isoformat()) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(_json({"name": "a", "tags": ["1.0", "latest"]}), ["1.0", "latest"], id="tags"),
        pytest.param(_json({"name": "a", "tags": None}), [], id="null-tags"),
        pytest.param(_json({"name": "a"}), [], id="no-tags"),
        pytest.param(
            _json({"tags": ["v1 beta", "ünïcode", "a/b", ""]}),
            ["v1 beta", "ünïcode", "a/b", ""],
            id="odd-tags",
        ),
    ],
)
def test_tag_pages(body: bytes, expected: list[str]) -> None:
    assert parse_tag_page(body) == expected


@pytest.mark.parametrize(
    "body", [b"not json", _json({"tags": "1.0"}), _json({"tags": [1, 2]}), _json(["1.0"])], ids=str
)
def test_malformed_tag_pages(body: bytes) -> None:
    with pytest.raises(DocumentError):
        parse_tag_page(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(_json({"token": "t", "expires_in": 300}), ("t", 300.0), id="token"),
        pytest.param(_json({"access_token": "a"}), ("a", None), id="oauth2-without-lifetime"),
        pytest.param(_json({"token": "t", "expires_in": True}), ("t", None), id="bool-lifetime-ignored"),
        pytest.param(_json({"token": "t", "expires_in": -1}), ("t", None), id="negative-lifetime-ignored"),
    ],
)
def test_token_bodies(body: bytes, expected: tuple[str, float | None]) -> None:
    assert parse_token(body) == expected


@pytest.mark.parametrize(
    "body", [_json({"token": ""}), _json({}), b"<html>"], ids=["empty", "missing", "html"]
)
def test_token_bodies_without_token(body: bytes) -> None:
    with pytest.raises(DocumentError):
        parse_token(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            _json(
                {"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known", "detail": {}}]}
            ),
            "NAME_UNKNOWN: repository name not known",
            id="oci-error",
        ),
        pytest.param(
            _json({"errors": [{"code": "DENIED"}, {"code": "UNAUTHORIZED", "message": "x"}]}),
            "DENIED; UNAUTHORIZED: x",
            id="two-errors",
        ),
        pytest.param(_json({"errors": [{"code": "X" * 1000}]}), "X" * 299 + "…", id="bounded"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"<html>", None, id="html"),
        pytest.param(_json({"errors": "no"}), None, id="not-a-list"),
    ],
)
def test_error_bodies(body: bytes, expected: str | None) -> None:
    assert describe_error_body(body) == expected


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_digest_verification(algorithm: str) -> None:
    content = b'{"created":"2024-01-01T00:00:00Z"}'
    digest = f"{algorithm}:{hashlib.new(algorithm, content).hexdigest()}"
    verify_digest(content, digest)
    with pytest.raises(DocumentError, match="hashes to"):
        verify_digest(content + b" ", digest)


@given(st.binary(), st.binary(min_size=1))
def test_digest_verification_rejects_changed_content(content: bytes, change: bytes) -> None:
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    verify_digest(content, digest)
    with pytest.raises(DocumentError):
        verify_digest(content + change, digest)
