"""Reading a HelmRelease object: holds, policies, credentials settings, shared tag paths, value checks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.automation.fakes import release

from helmrelease.automation.watched import (
    DEFAULT_SERVICE_ACCOUNT,
    Hold,
    read_release,
    tag_move,
    values_hold,
)
from helmrelease.images.detect import ValueChange
from helmrelease.images.manifests import ReleaseId
from helmrelease.images.policy import TagOrder

IMAGE = {"image": {"repository": "reg.example.com/team/app", "tag": "1.0.0"}}


@pytest.mark.parametrize(
    ("annotations", "hold"),
    [
        pytest.param({"fluxcd.io/automated": "true"}, None, id="automated"),
        pytest.param({"flux.weave.works/automated": "true"}, None, id="automated-weave"),
        pytest.param({}, Hold.NOT_AUTOMATED, id="no-annotations"),
        pytest.param({"fluxcd.io/automated": "True"}, Hold.NOT_AUTOMATED, id="automated-not-exact"),
        pytest.param({"fluxcd.io/automated": "true", "fluxcd.io/locked": "true"}, Hold.LOCKED, id="locked"),
        pytest.param({"fluxcd.io/locked": "true"}, Hold.NOT_AUTOMATED, id="locked-not-automated"),
        pytest.param({"fluxcd.io/automated": "true", "fluxcd.io/ignore": "true"}, Hold.IGNORED, id="ignored"),
        pytest.param(
            {"fluxcd.io/automated": "true", "fluxcd.io/locked": "true", "fluxcd.io/ignore": "true"},
            Hold.IGNORED,
            id="ignore-wins",
        ),
    ],
)
def test_hold(annotations: dict[str, str], hold: Hold | None) -> None:
    assert read_release(release("hr", IMAGE, annotations)).hold is hold


@pytest.mark.parametrize(
    ("annotations", "suspend", "hold"),
    [
        pytest.param({"fluxcd.io/automated": "true"}, True, Hold.SUSPENDED, id="suspended"),
        pytest.param({"fluxcd.io/automated": "true"}, False, None, id="resumed"),
        pytest.param({"fluxcd.io/automated": "true"}, "true", None, id="not-a-boolean-is-not-suspended"),
        pytest.param({}, True, Hold.NOT_AUTOMATED, id="not-automated-says-that-first"),
        pytest.param(
            {"fluxcd.io/automated": "true", "fluxcd.io/ignore": "true"}, True, Hold.IGNORED, id="ignored"
        ),
        pytest.param(
            {"fluxcd.io/automated": "true", "fluxcd.io/locked": "true"}, True, Hold.SUSPENDED, id="and-locked"
        ),
    ],
)
def test_a_suspended_release_is_held(annotations: dict[str, str], suspend: object, hold: Hold | None) -> None:
    assert read_release(release("hr", IMAGE, annotations, suspend=suspend)).hold is hold


@pytest.mark.parametrize(
    ("annotations", "spec", "pull_secret", "account", "git"),
    [
        pytest.param({}, {}, None, DEFAULT_SERVICE_ACCOUNT, False, id="defaults"),
        pytest.param(
            {"image.helm.fluxcd.io/pull-secret": " regcred "},
            {},
            "regcred",
            "default",
            False,
            id="pull-secret",
        ),
        pytest.param(
            {"image.helm.fluxcd.io/pull-secret": ""}, {}, None, "default", False, id="empty-pull-secret"
        ),
        pytest.param({}, {"serviceAccountName": "deployer"}, None, "deployer", False, id="service-account"),
        pytest.param({}, {"serviceAccountName": ""}, None, "default", False, id="empty-service-account"),
        pytest.param({"image.helm.fluxcd.io/git-writeback": "true"}, {}, None, "default", True, id="git"),
        pytest.param(
            {"image.helm.fluxcd.io/git-writeback": "yes"}, {}, None, "default", False, id="git-not-exact"
        ),
    ],
)
def test_settings_of_our_own_annotations(
    annotations: dict[str, str], spec: dict[str, Any], pull_secret: str | None, account: str, git: bool
) -> None:
    view = read_release(release("hr", IMAGE, annotations, **spec))
    assert (view.pull_secret, view.service_account, view.git_writeback) == (pull_secret, account, git)
    assert view.release == ReleaseId("apps", "hr")
    assert view.uid == "uid-hr"


def test_targets_pair_images_with_policies_and_orders() -> None:
    view = read_release(
        release(
            "hr",
            {"image": "a/app:1.0.0", "worker": {"image": "a/worker:v2"}, "db": {"image": "a/db:1"}},
            {
                "fluxcd.io/tag.chart-image": "semver:~1.0",
                "fluxcd.io/tag.worker": "regex:^v",
                "fluxcd.io/tag-order.worker": "alphabetical",
                "fluxcd.io/tag.db": "semver:>>1",
            },
        )
    )
    assert [(t.container, t.policy_text, t.order) for t in view.targets] == [
        ("chart-image", "semver:~1.0", TagOrder.SEMVER),
        ("db", "semver:>>1", None),
        ("worker", "regex:^v", TagOrder.ALPHABETICAL),
    ]
    assert [t.container for t in view.changeable] == ["chart-image", "worker"]
    [policy_error] = view.policy_errors
    assert policy_error.startswith("db: tag policy 'semver:>>1' does not parse")
    assert policy_error.endswith("its tag is not updated")


def test_images_sharing_a_tag_path_are_not_changed_and_say_why() -> None:
    values = {"image": {"repository": "a/app", "tag": "1.0.0"}, "other": {"repo": "a/other"}}
    annotations = {"repository.fluxcd.io/other": "other.repo", "tag.fluxcd.io/other": "image.tag"}
    view = read_release(release("hr", values, annotations))
    assert [t.container for t in view.targets] == ["chart-image", "other"]
    assert view.changeable == ()
    assert sorted(view.warnings) == [
        "chart-image: its tag shares the value path image.tag with another image; neither is updated",
        "other: its tag shares the value path image.tag with another image; neither is updated",
    ]


def test_warnings_cover_annotations_problems_and_images() -> None:
    view = read_release(
        release(
            "hr",
            {"image": {"repository": "a/app", "tag": 1.2}, "web": {"image": "NOT VALID"}},
            {"fluxcd.io/automated": "yes"},
        )
    )
    assert len(view.warnings) == 3
    assert view.warnings[0].startswith('fluxcd.io/automated: \'yes\' is not "true" or "false"')
    assert view.warnings[1].startswith("web at web.image: ")
    assert view.warnings[2].startswith("chart-image: image.tag is 1.2, which YAML reads as a float")


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        pytest.param(
            {"fluxcd.io/tag.wbe": "semver:~1"},
            [
                "fluxcd.io/tag.wbe names container 'wbe', but the release has no image of that name "
                "(its images: chart-image, web, broken); the annotation applies to nothing"
            ],
            id="misspelled-container",
        ),
        pytest.param(
            {"fluxcd.io/tag.broken": "semver:~1"}, [], id="an-unreadable-image-is-still-a-container"
        ),
        pytest.param(
            {"fluxcd.io/tag.web": "glob:["},
            [
                "web: glob pattern '[' matches no tag: '*' is the only wildcard and every other character is "
                "literal, while a tag is letters, digits, '_', '.' and '-' (not first), at most 128 "
                "characters; its tag is not updated"
            ],
            id="glob-matching-nothing",
        ),
        pytest.param({"fluxcd.io/tag.web": "glob:v1.*"}, [], id="fine"),
    ],
)
def test_annotations_that_can_do_nothing_are_warnings(
    annotations: dict[str, str], expected: list[str]
) -> None:
    values = {
        "image": {"repository": "a/app", "tag": "1.0.0"},
        "web": {"image": "a/web:1.0.0"},
        "broken": {"image": "NOT VALID"},
    }
    view = read_release(release("hr", values, {"fluxcd.io/automated": "true", **annotations}))
    assert [w for w in view.warnings if not w.startswith("broken at")] == expected


@pytest.mark.parametrize(
    ("values", "changes", "holds"),
    [
        pytest.param({"image": {"tag": "1"}}, [ValueChange(("image", "tag"), "1", "2")], True, id="holds"),
        pytest.param({"image": {"tag": "3"}}, [ValueChange(("image", "tag"), "1", "2")], False, id="changed"),
        pytest.param({"image": "a:1"}, [ValueChange(("image", "tag"), "1", "2")], False, id="shape-changed"),
        pytest.param({}, [ValueChange(("tag",), "1", "2")], False, id="removed"),
        pytest.param(
            {"a": "1", "b": "x"},
            [ValueChange(("a",), "1", "2"), ValueChange(("b",), "1", "2")],
            False,
            id="one-of-two-changed",
        ),
    ],
)
def test_values_hold(values: dict[str, Any], changes: list[ValueChange], holds: bool) -> None:
    assert values_hold(release("hr", values), changes) is holds


def test_tag_move_summary_is_the_event_message() -> None:
    view = read_release(
        release(
            "hr",
            {"prometheus": {"image": "prom/prometheus:v2.3.1"}},
            {"fluxcd.io/tag.prometheus": "semver:~2.3"},
        )
    )
    move = tag_move(view.targets[0], "v2.3.2")
    assert move.summary == "prom/prometheus v2.3.1 → v2.3.2 (semver:~2.3)"
    assert move.change == ValueChange(
        ("prometheus", "image"), "prom/prometheus:v2.3.1", "prom/prometheus:v2.3.2"
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(
    metadata=st.dictionaries(st.sampled_from(["name", "namespace", "uid", "annotations"]), JSON),
    spec=st.dictionaries(st.sampled_from(["values", "serviceAccountName", "chart"]), JSON),
)
def test_any_object_reads_without_raising(metadata: dict[str, Any], spec: dict[str, Any]) -> None:
    view = read_release({"metadata": metadata, "spec": spec})
    assert isinstance(view.warnings, tuple)
    assert all(target.may_change for target in view.changeable)
