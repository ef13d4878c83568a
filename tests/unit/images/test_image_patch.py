"""JSON patches for in-cluster tag updates: test-then-replace, pointer escaping."""

from __future__ import annotations

import pytest

from helmrelease.images.detect import NotAutomatableError, ValueChange, detect_images
from helmrelease.images.patch import changes_patch, image_tag_patch, json_pointer


@pytest.mark.parametrize(
    ("keys", "base", "pointer"),
    [
        pytest.param(("image", "tag"), "", "/image/tag", id="simple"),
        pytest.param(("a/b", "tag"), "", "/a~1b/tag", id="slash"),
        pytest.param(("a~b",), "", "/a~0b", id="tilde"),
        pytest.param(("~/",), "", "/~0~1", id="tilde-then-slash"),
        pytest.param(("~1",), "", "/~01", id="literal-tilde-one"),
        pytest.param(("",), "", "/", id="empty-key"),
        pytest.param((), "/spec/values", "/spec/values", id="no-keys"),
        pytest.param(("x",), "/spec/values", "/spec/values/x", id="base"),
    ],
)
def test_json_pointer(keys: tuple[str, ...], base: str, pointer: str) -> None:
    assert json_pointer(keys, base=base) == pointer


def test_changes_patch_tests_before_each_replace() -> None:
    changes = [ValueChange(("image", "tag"), "1.0", "1.1"), ValueChange(("sub/x", "image"), "a:1", "a:2")]
    assert changes_patch(changes) == [
        {"op": "test", "path": "/spec/values/image/tag", "value": "1.0"},
        {"op": "replace", "path": "/spec/values/image/tag", "value": "1.1"},
        {"op": "test", "path": "/spec/values/sub~1x/image", "value": "a:1"},
        {"op": "replace", "path": "/spec/values/sub~1x/image", "value": "a:2"},
    ]


@pytest.mark.parametrize(
    ("values", "container", "tag", "patch"),
    [
        pytest.param(
            {"image": {"repository": "bitnami/mongodb", "tag": "4.0.3"}},
            "chart-image",
            "4.0.10",
            [
                {"op": "test", "path": "/spec/values/image/tag", "value": "4.0.3"},
                {"op": "replace", "path": "/spec/values/image/tag", "value": "4.0.10"},
            ],
            id="separate-tag",
        ),
        pytest.param(
            {"prometheus": {"image": "prom/prometheus:v2.3.1"}},
            "prometheus",
            "v2.3.2",
            [
                {"op": "test", "path": "/spec/values/prometheus/image", "value": "prom/prometheus:v2.3.1"},
                {"op": "replace", "path": "/spec/values/prometheus/image", "value": "prom/prometheus:v2.3.2"},
            ],
            id="combined-reference",
        ),
    ],
)
def test_image_tag_patch(
    values: dict[str, object], container: str, tag: str, patch: list[dict[str, str]]
) -> None:
    image = detect_images(values).find(container)
    assert image is not None
    assert image_tag_patch(image, tag) == patch


def test_custom_values_pointer() -> None:
    image = detect_images({"image": "a:1"}).images[0]
    assert image_tag_patch(image, "2", values_pointer="/values")[1]["path"] == "/values/image"


def test_not_automatable_image_has_no_patch() -> None:
    image = detect_images({"image": "a"}).images[0]
    with pytest.raises(NotAutomatableError):
        image_tag_patch(image, "2")
