"""Automation annotations: both prefixes, exact "true", precedence with warnings, tag orders."""

from __future__ import annotations

from datetime import timedelta

import pytest

from helmrelease.images.annotations import AutomationSettings, read_automation_settings
from helmrelease.images.policy import PolicyError, SemverPolicy, TagOrder


@pytest.mark.parametrize(
    ("annotations", "automated", "locked", "ignore"),
    [
        pytest.param({}, False, False, False, id="none"),
        pytest.param({"fluxcd.io/automated": "true"}, True, False, False, id="fluxcd-automated"),
        pytest.param({"flux.weave.works/automated": "true"}, True, False, False, id="weave-automated"),
        pytest.param({"fluxcd.io/locked": "true"}, False, True, False, id="locked"),
        pytest.param({"flux.weave.works/ignore": "true"}, False, False, True, id="ignore"),
        pytest.param({"fluxcd.io/automated": "True"}, False, False, False, id="capital-true-is-off"),
        pytest.param({"fluxcd.io/automated": "yes"}, False, False, False, id="yes-is-off"),
        pytest.param({"fluxcd.io/automated": "false"}, False, False, False, id="false"),
        pytest.param({"fluxcd.io/automated": True}, False, False, False, id="yaml-bool-is-off"),
        pytest.param({"fluxcd.io/automated": " true"}, False, False, False, id="padded-is-off"),
        pytest.param({"fluxcd.io/ignore": "sync_only"}, False, False, False, id="sync-only-is-not-true"),
        pytest.param(
            {"fluxcd.io/automated": "true", "flux.weave.works/automated": "false"},
            True,
            False,
            False,
            id="fluxcd-wins",
        ),
        pytest.param(
            {"fluxcd.io/automated": "false", "flux.weave.works/automated": "true"},
            False,
            False,
            False,
            id="fluxcd-wins-off",
        ),
    ],
)
def test_flags(annotations: dict[str, object], automated: bool, locked: bool, ignore: bool) -> None:
    settings = read_automation_settings(annotations)
    assert (settings.automated, settings.locked, settings.ignore) == (automated, locked, ignore)


@pytest.mark.parametrize(
    ("annotations", "warning"),
    [
        pytest.param(
            {"fluxcd.io/automated": "True"},
            """fluxcd.io/automated: 'True' is not "true" or "false", so automated is off""",
            id="capital",
        ),
        pytest.param({"fluxcd.io/locked": "yes"}, "locked is off", id="yes"),
        pytest.param(
            {"fluxcd.io/automated": "yes please"},
            """fluxcd.io/automated: 'yes please' is not "true" or "false", so automated is off""",
            id="yes-please-issue-example",
        ),
        pytest.param({"fluxcd.io/automated": ""}, "'' is not", id="empty"),
        pytest.param({"fluxcd.io/automated": "False"}, "'False' is not", id="capital-false"),
        pytest.param({"flux.weave.works/locked": "1"}, "flux.weave.works/locked: '1' is not", id="weave-one"),
        pytest.param(
            {"fluxcd.io/ignore": "always"},
            """'always' is not "true", "false" or "sync_only", so ignore is off""",
            id="ignore-lists-sync-only",
        ),
        pytest.param({"fluxcd.io/automated": True}, 'is not "true" or "false"', id="yaml-bool"),
        pytest.param(
            {"fluxcd.io/automated": "true", "flux.weave.works/automated": "false"},
            "conflicts with fluxcd.io/automated",
            id="conflict",
        ),
        pytest.param(
            {"fluxcd.io/tag.app": "semver:~1", "flux.weave.works/tag.app": "glob:*"},
            "using fluxcd.io/tag.app",
            id="policy-conflict",
        ),
        pytest.param(
            {"filter.fluxcd.io/app": "glob:a*", "flux.weave.works/tag.app": "glob:b*"},
            "using filter.fluxcd.io/app",
            id="filter-over-weave",
        ),
        pytest.param({"fluxcd.io/tag-order.app": "newest"}, "is not a tag order", id="bad-order"),
        pytest.param({"fluxcd.io/tag.app": 1.2}, "not a string", id="non-string-policy"),
        pytest.param(
            {"fluxcd.io/locked_msg": "a", "flux.weave.works/locked_msg": "b"},
            "conflicts",
            id="message-conflict",
        ),
    ],
)
def test_warnings(annotations: dict[str, object], warning: str) -> None:
    assert any(warning in text for text in read_automation_settings(annotations).warnings)


@pytest.mark.parametrize(
    "annotations",
    [
        pytest.param(
            {"fluxcd.io/automated": "true", "flux.weave.works/automated": "true"}, id="agreeing-prefixes"
        ),
        pytest.param({"fluxcd.io/automated": "false"}, id="plain-false"),
        pytest.param({"fluxcd.io/locked": "false", "flux.weave.works/ignore": "false"}, id="other-falses"),
        pytest.param({"fluxcd.io/ignore": "sync_only"}, id="flux-v1-sync-only"),
        pytest.param({"fluxcd.io/tag.a": "glob:*", "filter.fluxcd.io/a": "glob:*"}, id="agreeing-policies"),
        pytest.param({"fluxcd.io/tag-order.a": "numerical", "kustomize.io/x": "y"}, id="unrelated"),
    ],
)
def test_no_warnings(annotations: dict[str, object]) -> None:
    assert read_automation_settings(annotations).warnings == ()


@pytest.mark.parametrize(
    ("annotations", "container", "policy"),
    [
        pytest.param(
            {"flux.weave.works/tag.chart-image": "semver:~4.0"},
            "chart-image",
            "semver:~4.0",
            id="spec-top-level",
        ),
        pytest.param({"flux.weave.works/tag.nats": "regex:^0.6.*"}, "nats", "regex:^0.6.*", id="spec-regex"),
        pytest.param({"fluxcd.io/tag.app": "glob:1.*"}, "app", "glob:1.*", id="fluxcd"),
        pytest.param({"filter.fluxcd.io/app": "glob:2.*"}, "app", "glob:2.*", id="filter"),
        pytest.param(
            {"fluxcd.io/tag.app": "glob:1.*", "filter.fluxcd.io/app": "glob:2.*"},
            "app",
            "glob:1.*",
            id="fluxcd-over-filter",
        ),
        pytest.param(
            {"flux.weave.works/tag.app": "glob:3.*", "filter.fluxcd.io/app": "glob:2.*"},
            "app",
            "glob:2.*",
            id="filter-over-weave",
        ),
        pytest.param({"fluxcd.io/tag.other": "glob:1.*"}, "app", "glob:*", id="default"),
        pytest.param({"fluxcd.io/tag.": "glob:1.*"}, "", "glob:*", id="empty-container-ignored"),
    ],
)
def test_policy_text(annotations: dict[str, object], container: str, policy: str) -> None:
    assert read_automation_settings(annotations).policy_text_for(container) == policy


def test_policy_for_parses_and_raises() -> None:
    settings = read_automation_settings({"fluxcd.io/tag.a": "semver:~1", "fluxcd.io/tag.b": "regex:("})
    assert isinstance(settings.policy_for("a"), SemverPolicy)
    with pytest.raises(PolicyError):
        settings.policy_for("b")


@pytest.mark.parametrize(
    ("annotations", "policy", "order"),
    [
        pytest.param({}, "semver:*", TagOrder.SEMVER, id="semver-default"),
        pytest.param({}, "glob:*", TagOrder.CREATED, id="glob-default"),
        pytest.param(
            {"fluxcd.io/tag-order.app": "alphabetical"}, "glob:*", TagOrder.ALPHABETICAL, id="alphabetical"
        ),
        pytest.param({"fluxcd.io/tag-order.app": "numerical"}, "glob:*", TagOrder.NUMERICAL, id="numerical"),
        pytest.param({"fluxcd.io/tag-order.app": "semver"}, "glob:v*", TagOrder.SEMVER, id="semver-for-glob"),
        pytest.param(
            {"fluxcd.io/tag-order.app": "created"}, "semver:*", TagOrder.CREATED, id="created-for-semver"
        ),
        pytest.param({"fluxcd.io/tag-order.app": "Semver"}, "glob:*", TagOrder.CREATED, id="case-matters"),
        pytest.param(
            {"fluxcd.io/tag-order.other": "numerical"}, "glob:*", TagOrder.CREATED, id="other-container"
        ),
    ],
)
def test_order(annotations: dict[str, object], policy: str, order: TagOrder) -> None:
    settings = read_automation_settings({**annotations, "fluxcd.io/tag.app": policy})
    assert settings.order_for("app", settings.policy_for("app")) is order


def test_lock_details() -> None:
    settings = read_automation_settings(
        {
            "fluxcd.io/locked": "true",
            "fluxcd.io/locked_msg": "incident 42",
            "flux.weave.works/locked_user": "ana",
        }
    )
    assert (settings.locked, settings.locked_msg, settings.locked_user) == (True, "incident 42", "ana")


def test_none_is_defaults() -> None:
    assert read_automation_settings(None) == AutomationSettings()


@pytest.mark.parametrize(
    ("annotations", "containers", "expected"),
    [
        pytest.param(
            {"fluxcd.io/tag.web": "semver:~1"},
            ("chart-image", "api"),
            (
                "fluxcd.io/tag.web names container 'web', but the release has no image of that name "
                "(its images: chart-image, api); the annotation applies to nothing",
            ),
            id="misspelled-policy",
        ),
        pytest.param(
            {"filter.fluxcd.io/web": "glob:*", "fluxcd.io/tag-order.web": "semver"},
            (),
            (
                "filter.fluxcd.io/web names container 'web', but the release has no image of that name "
                "(its images: none found in .spec.values); the annotation applies to nothing",
                "fluxcd.io/tag-order.web names container 'web', but the release has no image of that name "
                "(its images: none found in .spec.values); the annotation applies to nothing",
            ),
            id="filter-and-order-without-images",
        ),
        pytest.param(
            {"fluxcd.io/tag.web": "glob:*", "flux.weave.works/tag.web": "glob:1.*"},
            ("api",),
            (
                "fluxcd.io/tag.web names container 'web', but the release has no image of that name "
                "(its images: api); the annotation applies to nothing",
            ),
            id="only-the-key-in-force",
        ),
        pytest.param(
            {"fluxcd.io/tag.api": "glob:*", "fluxcd.io/tag-order.api": "semver"}, ("api",), (), id="known"
        ),
        pytest.param({"fluxcd.io/automated": "true"}, (), (), id="no-container-annotations"),
    ],
)
def test_annotations_for_containers_without_an_image_are_named(
    annotations: dict[str, object], containers: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    assert read_automation_settings(annotations).unmatched_containers(containers) == expected


@pytest.mark.parametrize(
    ("annotations", "pinned", "ages", "warning"),
    [
        pytest.param(
            {"image.helm.fluxcd.io/pin-digest.web": "true", "image.helm.fluxcd.io/min-age.web": "1h30m"},
            {"web"},
            {"web": timedelta(minutes=90)},
            None,
            id="both",
        ),
        pytest.param(
            {"image.helm.fluxcd.io/pin-digest.web": "yes"},
            set(),
            {},
            """image.helm.fluxcd.io/pin-digest.web: 'yes' is not "true" or "false", so the digest is not pinned""",
            id="pin-yes",
        ),
        pytest.param(
            {"image.helm.fluxcd.io/min-age.web": "1 day"},
            set(),
            {"web": timedelta.max},
            "image.helm.fluxcd.io/min-age.web: '1 day' is not a duration",
            id="min-age-unreadable-holds",
        ),
        pytest.param(
            {"image.helm.fluxcd.io/min-age.web": "-1h"},
            set(),
            {"web": timedelta.max},
            "image.helm.fluxcd.io/min-age.web: '-1h' is not a duration of zero or more",
            id="min-age-negative",
        ),
        pytest.param({"image.helm.fluxcd.io/min-age.web": "0"}, set(), {}, None, id="min-age-zero-is-none"),
    ],
)
def test_pin_digest_and_min_age(
    annotations: dict[str, object], pinned: set[str], ages: dict[str, timedelta], warning: str | None
) -> None:
    settings = read_automation_settings(annotations)
    assert (set(settings.pin_digest), dict(settings.min_ages)) == (pinned, ages)
    if warning is None:
        assert settings.warnings == ()
    else:
        [message] = settings.warnings
        assert message.startswith(warning)


def test_min_age_for_a_container_the_release_lacks_says_so() -> None:
    settings = read_automation_settings({"image.helm.fluxcd.io/min-age.wbe": "1h"})
    assert settings.unmatched_containers(["web"]) == (
        "image.helm.fluxcd.io/min-age.wbe names container 'wbe', but the release has no image of that name "
        "(its images: web); the annotation applies to nothing",
    )


def test_pause_and_record_are_read_as_text() -> None:
    settings = read_automation_settings(
        {
            "image.helm.fluxcd.io/paused.web": "1.0 set by kubectl-edit at T",
            "image.helm.fluxcd.io/written.web": "1.1",
        }
    )
    assert (dict(settings.paused), dict(settings.written)) == (
        {"web": "1.0 set by kubectl-edit at T"},
        {"web": "1.1"},
    )
