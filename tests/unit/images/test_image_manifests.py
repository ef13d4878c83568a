"""Comment-preserving tag edits: golden before/after texts, where only the tag's characters change."""

from __future__ import annotations

import difflib
import textwrap

import pytest

from helmrelease.images.manifests import (
    EditStatus,
    ManifestError,
    ReleaseId,
    UnsafeEditError,
    read_releases,
    set_image_tag,
)
from helmrelease.images.reference import ImageReferenceError

MONGODB = ReleaseId("default", "mongodb")


def manifest(values: str, *, metadata: str = "  name: mongodb\n", api: str = "helm.fluxcd.io/v1") -> str:
    return (
        f"apiVersion: {api}\nkind: HelmRelease\nmetadata:\n{metadata}spec:\n"
        f"  chart:\n    repository: https://charts.example.com/\n    name: mongodb\n    version: 1.0.0\n"
        f"  values:\n{textwrap.indent(textwrap.dedent(values), '    ')}"
    )


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(old) == len(new)
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


@pytest.mark.parametrize(
    ("values", "container", "tag", "before", "after"),
    [
        pytest.param(
            """\
            image:
              repository: bitnami/mongodb
              tag: 4.0.3
            """,
            "chart-image",
            "4.0.10",
            "      tag: 4.0.3\n",
            "      tag: 4.0.10\n",
            id="plain-tag",
        ),
        pytest.param(
            """\
            image:
              repository: bitnami/mongodb
              tag: "4.0"   # quoted on purpose
            """,
            "chart-image",
            "4.1",
            '      tag: "4.0"   # quoted on purpose\n',
            '      tag: "4.1"   # quoted on purpose\n',
            id="double-quoted-with-comment",
        ),
        pytest.param(
            """\
            image:
              repository: bitnami/mongodb
              tag: 'v4.0.3'
            """,
            "chart-image",
            "v4.0.4",
            "      tag: 'v4.0.3'\n",
            "      tag: 'v4.0.4'\n",
            id="single-quoted",
        ),
        pytest.param(
            """\
            image:
              repository: bitnami/mongodb
              tag: v4.0.3
            """,
            "chart-image",
            "4.1",
            "      tag: v4.0.3\n",
            '      tag: "4.1"\n',
            id="plain-that-would-read-as-float-gets-quoted",
        ),
        pytest.param(
            """\
            image:
              repository: bitnami/mongodb
              tag: v1
            """,
            "chart-image",
            "yes",
            "      tag: v1\n",
            '      tag: "yes"\n',
            id="plain-that-would-read-as-yaml11-bool-gets-quoted",
        ),
        pytest.param(
            """\
            image:
              repository: bitnami/mongodb
              tag: v1
            """,
            "chart-image",
            "2024-01-31",
            "      tag: v1\n",
            '      tag: "2024-01-31"\n',
            id="plain-that-would-read-as-date-gets-quoted",
        ),
        pytest.param(
            """\
            image: repo/image1:version # top
            """,
            "chart-image",
            "v2",
            "    image: repo/image1:version # top\n",
            "    image: repo/image1:v2 # top\n",
            id="combined-plain",
        ),
        pytest.param(
            """\
            prometheus:
              image: "docker.io/prom/prometheus:v2.3.1"
            """,
            "prometheus",
            "v2.3.2",
            '      image: "docker.io/prom/prometheus:v2.3.1"\n',
            '      image: "docker.io/prom/prometheus:v2.3.2"\n',
            id="combined-quoted-keeps-registry-spelling",
        ),
        pytest.param(
            """\
            nats: {image: {repository: nats-streaming, tag: 0.6.0}, port: 4222}
            """,
            "nats",
            "0.6.1",
            "    nats: {image: {repository: nats-streaming, tag: 0.6.0}, port: 4222}\n",
            "    nats: {image: {repository: nats-streaming, tag: 0.6.1}, port: 4222}\n",
            id="flow-mapping",
        ),
        pytest.param(
            """\
            app:
              image: localhost:5000/team/app
              tag: "1"
            """,
            "app",
            "2",
            '      tag: "1"\n',
            '      tag: "2"\n',
            id="image-and-tag-siblings",
        ),
        pytest.param(
            "image:\n  repository: bitnami/mongodb\n  tag:    4.0.3      \n",
            "chart-image",
            "4.0.4",
            "      tag:    4.0.3      \n",
            "      tag:    4.0.4      \n",
            id="odd-spacing-kept",
        ),
    ],
)
def test_golden_edits(values: str, container: str, tag: str, before: str, after: str) -> None:
    text = manifest(values)
    edit = set_image_tag(text, release=MONGODB, container=container, tag=tag)
    assert edit.status is EditStatus.UPDATED
    assert changed_lines(text, edit.text) == [(before, after)]


MULTI = """\
# Releases of the team. Keep this comment.
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: mongodb
data:
  image: repo/other:1.0
---
apiVersion: helm.fluxcd.io/v1
kind: HelmRelease
metadata:
  name: mongodb
  namespace: db
  annotations:
    fluxcd.io/automated: "true"
spec:
  values:
    image:
      repository: bitnami/mongodb
      tag: 4.0.3
---
apiVersion: flux.weave.works/v1beta1
kind: HelmRelease
metadata:
  name: mongodb
spec:
  values:
    image:
      repository: bitnami/mongodb   # legacy
      tag: 3.6.0
...
"""


@pytest.mark.parametrize(
    ("release", "default_namespace", "before", "after"),
    [
        pytest.param(
            ReleaseId("db", "mongodb"),
            "default",
            "      tag: 4.0.3\n",
            "      tag: 4.0.9\n",
            id="by-namespace",
        ),
        pytest.param(
            ReleaseId("default", "mongodb"),
            "default",
            "      tag: 3.6.0\n",
            "      tag: 4.0.9\n",
            id="legacy-default-ns",
        ),
        pytest.param(
            ReleaseId("team", "mongodb"),
            "team",
            "      tag: 3.6.0\n",
            "      tag: 4.0.9\n",
            id="caller-default-ns",
        ),
    ],
)
def test_multi_document(release: ReleaseId, default_namespace: str, before: str, after: str) -> None:
    edit = set_image_tag(
        MULTI, release=release, container="chart-image", tag="4.0.9", default_namespace=default_namespace
    )
    assert edit.status is EditStatus.UPDATED
    assert changed_lines(MULTI, edit.text) == [(before, after)]
    assert edit.text.startswith("# Releases of the team. Keep this comment.\n---\n")
    assert edit.text.endswith("...\n")


def test_same_release_twice_in_a_file_is_edited_in_both() -> None:
    text = manifest("image: a/b:1\n") + "---\n" + manifest("image: a/b:1 # again\n")
    edit = set_image_tag(text, release=MONGODB, container="chart-image", tag="2")
    assert len(edit.changes) == 2
    assert len(changed_lines(text, edit.text)) == 2


def test_crlf_line_endings_are_kept() -> None:
    text = manifest("image:\n  repository: a/b\n  tag: 1.0.0\nother: x\n").replace("\n", "\r\n")
    edit = set_image_tag(text, release=MONGODB, container="chart-image", tag="1.0.1")
    assert edit.text == text.replace("tag: 1.0.0", "tag: 1.0.1")


@pytest.mark.parametrize(
    ("text", "release", "container", "status", "detail"),
    [
        pytest.param(
            manifest("image: a/b:1\n"),
            ReleaseId("other", "mongodb"),
            "chart-image",
            EditStatus.NO_RELEASE,
            "no HelmRelease other/mongodb",
            id="wrong-namespace",
        ),
        pytest.param(
            manifest("image: a/b:1\n"),
            ReleaseId("default", "x"),
            "chart-image",
            EditStatus.NO_RELEASE,
            "no HelmRelease",
            id="wrong-name",
        ),
        pytest.param(
            manifest("image: a/b:1\n", api="helm.fluxcd.io/v2"),
            MONGODB,
            "chart-image",
            EditStatus.NO_RELEASE,
            "no HelmRelease",
            id="other-api-version",
        ),
        pytest.param(
            manifest("image: a/b:1\n"),
            MONGODB,
            "nope",
            EditStatus.NO_CONTAINER,
            "found: chart-image",
            id="no-container",
        ),
        pytest.param(
            manifest("image: a/b\n"),
            MONGODB,
            "chart-image",
            EditStatus.NOT_AUTOMATABLE,
            "no tag",
            id="no-tag",
        ),
        pytest.param(
            manifest("image: a/b\ntag: 1.2\n"),
            MONGODB,
            "chart-image",
            EditStatus.NOT_AUTOMATABLE,
            "float",
            id="float-tag",
        ),
        pytest.param(
            manifest("image: a/b:2\n"),
            MONGODB,
            "chart-image",
            EditStatus.UNCHANGED,
            "already at 2",
            id="already",
        ),
        pytest.param("", MONGODB, "chart-image", EditStatus.NO_RELEASE, "no HelmRelease", id="empty-file"),
    ],
)
def test_statuses(text: str, release: ReleaseId, container: str, status: EditStatus, detail: str) -> None:
    edit = set_image_tag(text, release=release, container=container, tag="2")
    assert edit.status is status
    assert detail in edit.detail
    assert edit.text == text
    assert edit.changes == ()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            "base: &v 1.0.0\nimage:\n  repository: a/b\n  tag: *v\n", "simple one-line string", id="alias"
        ),
        pytest.param(
            "image:\n  repository: a/b\n  tag: &v 1.0.0\ncopy: *v\n", "simple one-line string", id="anchor"
        ),
        pytest.param(
            "image:\n  repository: a/b\n  tag: |-\n    1.0.0\n", "simple one-line string", id="block-scalar"
        ),
        pytest.param(
            'image:\n  repository: a/b\n  tag: "1.0\\x2e0"\n', "simple one-line string", id="escape"
        ),
        pytest.param(
            "image:\n  repository: a/b\n  tag: !!str 1.0.0\n", "simple one-line string", id="explicit-tag"
        ),
        pytest.param("image: >-\n  a/b:1.0.0\n", "simple one-line string", id="folded"),
        pytest.param(
            "base: &b {repository: a/b, tag: 1.0.0}\nimage:\n  <<: *b\n  pullPolicy: Always\n",
            "no position recorded",
            id="merge-key",
        ),
        pytest.param(
            "base: &b {repository: a/b, tag: 1.0.0}\nimage: *b\n",
            "would change more than the tag",
            id="aliased-map-changes-its-anchor-too",
        ),
    ],
)
def test_unsafe_edits_are_refused(values: str, message: str) -> None:
    with pytest.raises(UnsafeEditError, match=message):
        set_image_tag(manifest(values), release=MONGODB, container="chart-image", tag="2.0.0")


def test_invalid_yaml_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match="not valid YAML") as raised:
        set_image_tag("a: [\n", release=MONGODB, container="chart-image", tag="2")
    assert not isinstance(raised.value, UnsafeEditError)


_HEAD = "apiVersion: helm.fluxcd.io/v1\nkind: HelmRelease\nmetadata:\n  name: mongodb\n  namespace: db\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(_HEAD + "spec: [\n", "not valid YAML: while parsing", id="unclosed"),
        pytest.param(
            _HEAD + "spec: {a: 1, a: 2}\n", "not valid YAML: while constructing", id="duplicate-key"
        ),
        pytest.param(_HEAD + "spec: *nothing\n", "undefined alias", id="undefined-alias"),
        pytest.param(_HEAD + "spec:\n  values: {t: !!int abc}\n", "ValueError", id="bad-tagged-int"),
        pytest.param(
            _HEAD + "spec:\n  values: {t: !!timestamp 2001-99-99}\n", "ValueError", id="bad-timestamp"
        ),
        pytest.param(
            _HEAD + "spec: " + "[" * 5000 + "]" * 5000 + "\n", "RecursionError", id="deep-while-parsing"
        ),
        pytest.param(
            _HEAD + "spec:\n  values: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
            "RecursionError",
            id="deep-maps",
        ),
        pytest.param(
            _HEAD
            + "spec:\n  values:\n"
            + "".join(
                f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}' if i else 'lol'] * 9)}]\n" for i in range(9)
            ),
            "aliases expand",
            id="billion-laughs",
        ),
    ],
)
def test_every_failure_to_read_a_file_is_a_manifest_error(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        read_releases(text)


def test_a_complex_annotation_key_is_not_an_annotation() -> None:
    (entry,) = read_releases(
        _HEAD.replace("namespace: db\n", "namespace: db\n  annotations:\n    ? [a]\n    : b\n    c: d\n")
    )
    assert entry.annotations == {"c": "d"}


def test_invalid_tag_is_rejected_before_reading() -> None:
    with pytest.raises(ImageReferenceError):
        set_image_tag("a: [\n", release=MONGODB, container="chart-image", tag="bad tag")


def test_read_releases_lists_images_per_release() -> None:
    releases = read_releases(MULTI)
    assert [str(entry.release) for entry in releases] == ["db/mongodb", "default/mongodb"]
    assert [entry.document_index for entry in releases] == [1, 2]
    assert releases[0].annotations == {"fluxcd.io/automated": "true"}
    assert [str(image.ref) for image in releases[0].detection.images] == ["bitnami/mongodb:4.0.3"]


def test_read_releases_sees_yaml_numbers_as_numbers() -> None:
    (entry,) = read_releases(manifest("image:\n  repository: a/b\n  tag: 1.10\n"))
    (image,) = entry.detection.images
    assert not image.automatable
    assert "1.1" in image.warnings[0]


def test_only_the_tag_differs_in_a_diff() -> None:
    text = MULTI
    edit = set_image_tag(text, release=ReleaseId("db", "mongodb"), container="chart-image", tag="4.0.4")
    diff = list(difflib.unified_diff(text.splitlines(), edit.text.splitlines(), lineterm="", n=0))
    assert diff[2:] == ["@@ -21 +21 @@", "-      tag: 4.0.3", "+      tag: 4.0.4"]
