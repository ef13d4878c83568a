"""Finding images in values: the five shapes at two positions, aliases, and what is not automatable."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.images.detect import (
    DetectedImage,
    NotAutomatableError,
    TagField,
    TagSuffix,
    ValueChange,
    detect_images,
)
from helmrelease.images.reference import ImageRef, ImageReferenceError

DIGEST = "sha256:" + "b" * 64


def only(values: object, annotations: dict[str, object] | None = None) -> DetectedImage:
    detection = detect_images(values, annotations)
    assert detection.problems == ()
    assert len(detection.images) == 1
    return detection.images[0]


@pytest.mark.parametrize(
    ("values", "ref", "location"),
    [
        pytest.param(
            {"image": "repo/image:version"},
            ImageRef("repo/image", tag="version"),
            TagSuffix(("image",), "repo/image:version"),
            id="image-string",
        ),
        pytest.param(
            {"image": "repo/image", "tag": "version"},
            ImageRef("repo/image", tag="version"),
            TagField(("tag",), "version"),
            id="image-and-tag",
        ),
        pytest.param(
            {"registry": "docker.io", "image": "repo/image", "tag": "version"},
            ImageRef("repo/image", "docker.io", "version"),
            TagField(("tag",), "version"),
            id="registry-image-tag",
        ),
        pytest.param(
            {"registry": "quay.io", "image": "repo/image:version"},
            ImageRef("repo/image", "quay.io", "version"),
            TagSuffix(("image",), "repo/image:version"),
            id="registry-and-combined-image",
        ),
        pytest.param(
            {"image": {"repository": "repo/image", "tag": "version"}},
            ImageRef("repo/image", tag="version"),
            TagField(("image", "tag"), "version"),
            id="image-map",
        ),
        pytest.param(
            {"image": {"registry": "docker.io", "repository": "repo/image", "tag": "version"}},
            ImageRef("repo/image", "docker.io", "version"),
            TagField(("image", "tag"), "version"),
            id="image-map-with-registry",
        ),
        pytest.param(
            {"image": {"repository": "repo/image:version", "pullPolicy": "Always"}},
            ImageRef("repo/image", tag="version"),
            TagSuffix(("image", "repository"), "repo/image:version"),
            id="image-map-combined-repository",
        ),
        pytest.param(
            {"image": {"repository": "bitnami/mongodb", "tag": "4.0.3"}},
            ImageRef("bitnami/mongodb", tag="4.0.3"),
            TagField(("image", "tag"), "4.0.3"),
            id="spec-mongodb",
        ),
        pytest.param(
            {"image": "localhost:5000/app:1"},
            ImageRef("app", "localhost:5000", "1"),
            TagSuffix(("image",), "localhost:5000/app:1"),
            id="registry-with-port",
        ),
        pytest.param(
            {"image": "repo/image:1.0", "tag": ""},
            ImageRef("repo/image", tag="1.0"),
            TagSuffix(("image",), "repo/image:1.0"),
            id="empty-tag-means-chart-default",
        ),
        pytest.param(
            {"image": "repo/image:1.0", "tag": None, "registry": None},
            ImageRef("repo/image", tag="1.0"),
            TagSuffix(("image",), "repo/image:1.0"),
            id="null-siblings",
        ),
    ],
)
def test_top_level_shapes(values: dict[str, Any], ref: ImageRef, location: TagField | TagSuffix) -> None:
    image = only(values)
    assert image.container == "chart-image"
    assert image.ref == ref
    assert image.tag_location == location
    assert image.automatable


@pytest.mark.parametrize(
    ("values", "container", "path"),
    [
        pytest.param(
            {"subsystem": {"image": {"repository": "repo/image2", "tag": "v"}}},
            "subsystem",
            ("subsystem", "image", "tag"),
            id="map",
        ),
        pytest.param(
            {"prometheus": {"image": "prom/prometheus:v2.3.1"}},
            "prometheus",
            ("prometheus", "image"),
            id="string",
        ),
        pytest.param(
            {"nats": {"image": "nats-streaming", "tag": "0.6.0"}},
            "nats",
            ("nats", "tag"),
            id="string-and-tag",
        ),
        pytest.param(
            {"db": {"registry": "r.io", "image": "pg", "tag": "16"}},
            "db",
            ("db", "tag"),
            id="registry-image-tag",
        ),
    ],
)
def test_one_level_down(values: dict[str, Any], container: str, path: tuple[str, ...]) -> None:
    image = only(values)
    assert image.container == container
    assert image.tag_location is not None
    assert image.tag_location.path == path


def test_spec_example_with_two_images_in_order() -> None:
    values = {
        "persistent": True,
        "image": "repo/image1:version",
        "subsystem": {
            "image": {"repository": "repo/image2", "tag": "version", "imagePullPolicy": "IfNotPresent"},
            "port": 4040,
        },
    }
    detection = detect_images(values)
    assert [(i.container, str(i.ref)) for i in detection.images] == [
        ("chart-image", "repo/image1:version"),
        ("subsystem", "repo/image2:version"),
    ]


def test_results_are_chart_image_first_then_by_name() -> None:
    values = {"zeta": {"image": "z:1"}, "alpha": {"image": "a:1"}, "image": "c:1", "mid": {"image": "m:1"}}
    assert [image.container for image in detect_images(values).images] == [
        "chart-image",
        "alpha",
        "mid",
        "zeta",
    ]


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="empty"),
        pytest.param(None, id="none"),
        pytest.param(["image", "x:1"], id="list-values"),
        pytest.param({"image": {"tag": "1"}}, id="map-without-repository"),
        pytest.param({"image": {"repository": 5, "tag": "1"}}, id="numeric-repository"),
        pytest.param({"image": ["x:1"]}, id="image-list"),
        pytest.param({"image": 3}, id="image-number"),
        pytest.param({"a": {"b": {"image": "deep:1"}}}, id="too-deep"),
        pytest.param({"a": [{"image": "in-list:1"}]}, id="in-list"),
        pytest.param({"a": "image"}, id="scalar-section"),
        pytest.param({"repository": "x", "tag": "1"}, id="no-image-key"),
        pytest.param({1: {"image": "x:1"}}, id="non-string-key"),
    ],
)
def test_not_images(values: object) -> None:
    detection = detect_images(values)
    assert detection.images == ()
    assert detection.problems == ()


@pytest.mark.parametrize(
    ("values", "warning"),
    [
        pytest.param({"image": "repo/app", "tag": 1.2}, "reads as a float", id="float-tag"),
        pytest.param({"image": {"repository": "repo/app", "tag": 5}}, "reads as a int", id="int-tag"),
        pytest.param({"image": {"repository": "repo/app", "tag": True}}, "reads as a bool", id="bool-tag"),
        pytest.param({"image": "repo/app"}, "no tag", id="no-tag"),
        pytest.param({"image": {"repository": "repo/app"}}, "no tag", id="map-no-tag"),
        pytest.param({"image": f"repo/app@{DIGEST}"}, "pinned by digest", id="digest-only"),
        pytest.param({"image": f"repo/app:1.0@{DIGEST}"}, "pinned by digest", id="tag-and-digest"),
    ],
)
def test_reported_but_not_automatable(values: dict[str, Any], warning: str) -> None:
    image = only(values)
    assert not image.automatable
    assert any(warning in text for text in image.warnings)
    with pytest.raises(NotAutomatableError):
        image.tag_change("2.0")


def test_number_tag_keeps_the_image_without_a_tag() -> None:
    image = only({"image": "repo/app", "tag": 1.10})
    assert image.ref == ImageRef("repo/app")
    assert "quote it" in image.warnings[0]


def test_non_string_registry_is_ignored_with_a_warning() -> None:
    image = only({"image": "repo/app", "registry": 5, "tag": "1"})
    assert image.ref == ImageRef("repo/app", tag="1")
    assert image.automatable
    assert "not a string" in image.warnings[0]


@pytest.mark.parametrize(
    ("values", "container", "path", "message"),
    [
        pytest.param(
            {"image": "Repo/App:1"}, "chart-image", "image", "not a repository path", id="uppercase"
        ),
        pytest.param(
            {"image": "repo/app:1.0", "tag": "2.0"},
            "chart-image",
            "image",
            "already has a tag",
            id="tag-twice",
        ),
        pytest.param(
            {"image": f"repo/app@{DIGEST}", "tag": "2.0"},
            "chart-image",
            "image",
            "already has a tag or digest",
            id="digest-and-tag",
        ),
        pytest.param(
            {"s": {"image": {"repository": "x y", "tag": "1"}}},
            "s",
            "s.image.repository",
            "not a repository",
            id="space",
        ),
        pytest.param(
            {"image": "app", "tag": "bad tag"}, "chart-image", "image", "is not a tag", id="bad-tag"
        ),
        pytest.param(
            {"chart-image": {"image": "x:1"}},
            "chart-image",
            "chart-image",
            "means the top-level image",
            id="reserved-name",
        ),
    ],
)
def test_problems(values: dict[str, Any], container: str, path: str, message: str) -> None:
    detection = detect_images(values)
    assert detection.images == ()
    (problem,) = detection.problems
    assert (problem.container, problem.path) == (container, path)
    assert message in problem.message
    assert message in str(problem)


def test_problem_does_not_hide_other_images() -> None:
    detection = detect_images({"image": "BAD", "ok": {"image": "ok:1"}})
    assert [image.container for image in detection.images] == ["ok"]
    assert [problem.container for problem in detection.problems] == ["chart-image"]


ALIAS_VALUES = {
    "app": {
        "containers": {
            "web": {"repo": "team/web", "version": "1.4.0", "host": "quay.io", "ref": "team/web:2.0"}
        }
    },
    "numbers": {"tag": 1.5},
    "image": "top/level:9",
}


@pytest.mark.parametrize(
    ("annotations", "ref", "location"),
    [
        pytest.param(
            {
                "registry.fluxcd.io/web": "app.containers.web.host",
                "repository.fluxcd.io/web": "app.containers.web.repo",
                "tag.fluxcd.io/web": "app.containers.web.version",
            },
            ImageRef("team/web", "quay.io", "1.4.0"),
            TagField(("app", "containers", "web", "version"), "1.4.0"),
            id="registry-repository-tag",
        ),
        pytest.param(
            {
                "registry.fluxcd.io/web": "app.containers.web.host",
                "repository.fluxcd.io/web": "app.containers.web.ref",
            },
            ImageRef("team/web", "quay.io", "2.0"),
            TagSuffix(("app", "containers", "web", "ref"), "team/web:2.0"),
            id="registry-repository",
        ),
        pytest.param(
            {
                "repository.fluxcd.io/web": "app.containers.web.repo",
                "tag.fluxcd.io/web": "app.containers.web.version",
            },
            ImageRef("team/web", tag="1.4.0"),
            TagField(("app", "containers", "web", "version"), "1.4.0"),
            id="repository-tag",
        ),
        pytest.param(
            {"repository.fluxcd.io/web": "app.containers.web.ref"},
            ImageRef("team/web", tag="2.0"),
            TagSuffix(("app", "containers", "web", "ref"), "team/web:2.0"),
            id="repository-alone",
        ),
        pytest.param(
            {"repository.fluxcd.io/web": " app.containers.web.ref "},
            ImageRef("team/web", tag="2.0"),
            TagSuffix(("app", "containers", "web", "ref"), "team/web:2.0"),
            id="path-with-spaces",
        ),
    ],
)
def test_alias_combinations(
    annotations: dict[str, object], ref: ImageRef, location: TagField | TagSuffix
) -> None:
    detection = detect_images(ALIAS_VALUES, annotations)
    assert detection.problems == ()
    web = detection.find("web")
    assert web is not None
    assert (web.ref, web.tag_location) == (ref, location)
    repository_annotation = annotations["repository.fluxcd.io/web"]
    assert isinstance(repository_annotation, str)
    assert web.path == tuple(repository_annotation.strip().split("."))


def test_alias_overrides_detected_image_of_the_same_name() -> None:
    detection = detect_images(ALIAS_VALUES, {"repository.fluxcd.io/chart-image": "app.containers.web.ref"})
    chart = detection.find("chart-image")
    assert chart is not None
    assert str(chart.ref) == "team/web:2.0"
    assert len(detection.images) == 1


@pytest.mark.parametrize(
    ("annotations", "path", "message"),
    [
        pytest.param(
            {"repository.fluxcd.io/web": "app.nothing.here"},
            "app.nothing.here",
            "does not resolve",
            id="missing",
        ),
        pytest.param(
            {"repository.fluxcd.io/web": "image.deeper"},
            "image.deeper",
            "does not resolve",
            id="through-a-string",
        ),
        pytest.param({"repository.fluxcd.io/web": "app"}, "app", "not a string", id="resolves-to-map"),
        pytest.param(
            {
                "repository.fluxcd.io/web": "app.containers.web.repo",
                "tag.fluxcd.io/web": "app.containers.web.nope",
            },
            "app.containers.web.nope",
            "tag path does not resolve",
            id="missing-tag",
        ),
        pytest.param(
            {"tag.fluxcd.io/web": "app.containers.web.version"},
            "app.containers.web.version",
            "is required",
            id="no-repository",
        ),
        pytest.param(
            {"repository.fluxcd.io/web": "app..repo"}, "app..repo", "not a dotted path", id="empty-segment"
        ),
        pytest.param({"repository.fluxcd.io/web": 5}, "5", "not a dotted path", id="non-string-path"),
        pytest.param(
            {
                "repository.fluxcd.io/web": "app.containers.web.ref",
                "tag.fluxcd.io/web": "app.containers.web.version",
            },
            "app.containers.web.ref",
            "already has a tag",
            id="tag-twice",
        ),
    ],
)
def test_alias_problems(annotations: dict[str, object], path: str, message: str) -> None:
    detection = detect_images(ALIAS_VALUES, annotations)
    assert detection.find("web") is None
    (problem,) = detection.problems
    assert (problem.container, problem.path) == ("web", path)
    assert message in problem.message


def test_broken_alias_removes_the_detected_image_it_replaces() -> None:
    detection = detect_images(ALIAS_VALUES, {"repository.fluxcd.io/chart-image": "nope"})
    assert detection.find("chart-image") is None
    assert len(detection.problems) == 1


def test_alias_number_tag_is_a_warning() -> None:
    detection = detect_images(
        ALIAS_VALUES, {"repository.fluxcd.io/n": "app.containers.web.repo", "tag.fluxcd.io/n": "numbers.tag"}
    )
    image = detection.find("n")
    assert image is not None
    assert not image.automatable
    assert "numbers.tag is 1.5" in image.warnings[0]


@pytest.mark.parametrize(
    ("values", "tag", "change"),
    [
        pytest.param(
            {"image": "docker.io/library/nginx:1.0"},
            "1.1",
            ValueChange(("image",), "docker.io/library/nginx:1.0", "docker.io/library/nginx:1.1"),
            id="combined-keeps-spelling",
        ),
        pytest.param(
            {"image": "localhost:5000/app:1"},
            "2",
            ValueChange(("image",), "localhost:5000/app:1", "localhost:5000/app:2"),
            id="combined-with-port",
        ),
        pytest.param(
            {"s": {"image": {"repository": "r", "tag": "v1"}}},
            "v2",
            ValueChange(("s", "image", "tag"), "v1", "v2"),
            id="separate-tag",
        ),
    ],
)
def test_tag_change(values: dict[str, Any], tag: str, change: ValueChange) -> None:
    assert only(values).tag_change(tag) == change


def test_tag_change_rejects_an_invalid_tag() -> None:
    with pytest.raises(ImageReferenceError):
        only({"image": "app:1"}).tag_change("no spaces")


# --- pinned digests --------------------------------------------------------------------------------

PIN = {"image.helm.fluxcd.io/pin-digest.chart-image": "true"}
NEW = "sha256:" + "c" * 64


@pytest.mark.parametrize(
    ("values", "changes"),
    [
        pytest.param(
            {"image": "repo/app:1.0"},
            (ValueChange(("image",), "repo/app:1.0", f"repo/app:1.1@{NEW}"),),
            id="combined-gets-tag-at-digest",
        ),
        pytest.param(
            {"image": f"repo/app:1.0@{DIGEST}"},
            (ValueChange(("image",), f"repo/app:1.0@{DIGEST}", f"repo/app:1.1@{NEW}"),),
            id="combined-pinned-moves-both",
        ),
        pytest.param(
            {"image": "localhost:5000/app", "tag": f"1.0@{DIGEST}"},
            (ValueChange(("tag",), f"1.0@{DIGEST}", f"1.1@{NEW}"),),
            id="tag-value-gets-tag-at-digest",
        ),
        pytest.param(
            {"image": {"repository": "repo/app", "tag": "1.0", "digest": ""}},
            (ValueChange(("image", "tag"), "1.0", "1.1"), ValueChange(("image", "digest"), "", NEW)),
            id="sibling-digest-value",
        ),
        pytest.param(
            {"image": {"repository": "repo/app", "tag": "1.1", "digest": DIGEST}},
            (ValueChange(("image", "digest"), DIGEST, NEW),),
            id="same-tag-only-the-digest",
        ),
        pytest.param(
            {"image": {"repository": "repo/app", "tag": "1.0", "digest": None}},
            (ValueChange(("image", "tag"), "1.0", "1.1"), ValueChange(("image", "digest"), "", NEW)),
            id="null-digest-value",
        ),
    ],
)
def test_pinned_changes(values: dict[str, Any], changes: tuple[ValueChange, ...]) -> None:
    [image] = detect_images(values, PIN).images
    assert image.automatable
    assert image.pinned_changes("1.1", NEW) == changes


def test_a_sibling_digest_is_the_image_digest() -> None:
    [image] = detect_images({"image": {"repository": "repo/app", "tag": "1.0", "digest": DIGEST}}, PIN).images
    assert (image.ref.tag, image.ref.digest) == ("1.0", DIGEST)


def test_a_digest_in_both_places_is_a_problem() -> None:
    values = {"image": {"repository": f"repo/app@{DIGEST}", "tag": "1.0", "digest": DIGEST}}
    detection = detect_images(values, PIN)
    assert detection.images == ()
    assert len(detection.problems) == 1


def test_a_digest_without_a_tag_stays_unautomated_even_when_pinning() -> None:
    [image] = detect_images({"image": f"repo/app@{DIGEST}"}, PIN).images
    assert not image.automatable
    assert image.warnings == (f"pinned by digest {DIGEST} with no tag, so no tag policy can apply",)


def test_pinned_changes_refuse_a_bad_digest() -> None:
    [image] = detect_images({"image": "repo/app:1.0"}, PIN).images
    with pytest.raises(ImageReferenceError):
        image.pinned_changes("1.1", "sha256:short")


_TAGS = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_DIGESTS = st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)
_PINNED_SHAPES = [
    {"image": "reg.example.com:5000/team/app:1.0"},
    {"image": f"reg.example.com:5000/team/app:1.0@{DIGEST}"},
    {"image": "reg.example.com:5000/team/app", "tag": "1.0"},
    {"image": {"repository": "team/app", "tag": "1.0", "digest": ""}},
    {"image": {"registry": "reg.example.com", "repository": "team/app", "tag": "1.0", "digest": DIGEST}},
]


@given(st.sampled_from(_PINNED_SHAPES), _TAGS, _DIGESTS)
def test_pinned_changes_read_back_as_exactly_that_tag_and_digest(
    values: dict[str, Any], tag: str, digest: str
) -> None:
    [image] = detect_images(values, PIN).images
    moved = copy.deepcopy(values)
    for change in image.pinned_changes(tag, digest):
        node = moved
        for key in change.path[:-1]:
            node = node[key]
        assert node[change.path[-1]] == change.old
        node[change.path[-1]] = change.new
    [after] = detect_images(moved, PIN).images
    assert (after.ref.name, after.ref.tag, after.ref.digest) == (image.ref.name, tag, digest)
    assert after.automatable
