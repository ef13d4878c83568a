"""The push-notification parsers, on each sender's recorded sample bodies, edge rows, and garbage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helmrelease.automation.notifications import (
    MAX_IMAGES,
    PayloadError,
    Pushed,
    Sender,
    parse_notification,
    pushed_names,
)
from helmrelease.images.reference import CanonicalName

FIXTURES = Path(__file__).parents[2] / "fixtures" / "webhooks"


def sample(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def edited(name: str, edit: Any) -> bytes:
    document = json.loads(sample(name))
    edit(document)
    return json.dumps(document).encode()


def pushed(host: str, path: str, tag: str | None = None) -> Pushed:
    return Pushed(CanonicalName(host, path), tag)


@pytest.mark.parametrize(
    ("sender", "fixture", "event", "expected"),
    [
        pytest.param(
            Sender.DISTRIBUTION,
            "distribution-tag.json",
            None,
            (pushed("example.com", "library/test", "latest"),),
            id="distribution-tag-push",
        ),
        pytest.param(
            Sender.DISTRIBUTION,
            "distribution-v3-recorded.json",
            None,
            (pushed("127.0.0.1:53129", "team/app", "1.2.3"),),
            id="distribution-v3-recorded",
        ),
        pytest.param(Sender.DISTRIBUTION, "distribution.json", None, (), id="distribution-documented-no-tag"),
        pytest.param(Sender.DISTRIBUTION, "distribution-pull.json", None, (), id="distribution-pull"),
        pytest.param(
            Sender.DOCKERHUB,
            "dockerhub.json",
            None,
            (pushed("docker.io", "svendowideit/testhook", "latest"),),
            id="dockerhub",
        ),
        pytest.param(
            Sender.HARBOR,
            "harbor.json",
            None,
            (pushed("hub.harbor.com", "test-webhook/debian", "latest"),),
            id="harbor",
        ),
        pytest.param(
            Sender.HARBOR,
            "harbor-cloudevents.json",
            None,
            (pushed("localhost", "harbor/alpine"),),
            id="harbor-cloudevents-by-digest",
        ),
        pytest.param(
            Sender.GHCR,
            "ghcr-package.json",
            "package",
            (pushed("ghcr.io", "codertocat/hello-world"),),
            id="ghcr-package",
        ),
        pytest.param(
            Sender.GHCR,
            "ghcr-registry-package.json",
            "registry_package",
            (pushed("ghcr.io", "codertocat/hello-world"),),
            id="ghcr-registry-package",
        ),
        pytest.param(Sender.GHCR, "ghcr-package.json", "ping", (), id="ghcr-ping-or-other-event"),
        pytest.param(
            Sender.QUAY, "quay.json", None, (pushed("quay.io", "dgangaia/test", "latest"),), id="quay"
        ),
        pytest.param(
            Sender.QUAY,
            "quay-legacy.json",
            None,
            (pushed("quay.io", "devtable/ubuntu", "latest"),),
            id="quay-legacy-tag-map",
        ),
    ],
)
def test_recorded_samples(
    sender: Sender, fixture: str, event: str | None, expected: tuple[Pushed, ...]
) -> None:
    assert parse_notification(sender, sample(fixture), event=event) == expected


def _ghcr_tag(document: dict[str, Any]) -> None:
    version = document["package"]["package_version"]
    version["container_metadata"]["tag"]["name"] = "1.2.3"
    version["package_url"] = "ghcr.io/Codertocat/hello-world:1.2.3"


def _ghcr_no_url(document: dict[str, Any]) -> None:
    del document["package"]["package_version"]["package_url"]
    document["package"]["name"] = "Hello-World"


def _ghcr_npm(document: dict[str, Any]) -> None:
    document["package"]["package_type"] = "npm"
    document["package"]["ecosystem"] = "npm"


def _two_events(document: dict[str, Any]) -> None:
    event = document["events"][0]
    other = json.loads(json.dumps(event))
    other["target"]["tag"] = "1.0.1"
    other["target"]["url"] = "http://127.0.0.1:5000/v2/team/app/manifests/sha256:abc"
    other["target"]["repository"] = "team/app"
    document["events"] += [other, dict(other), {"action": "push"}, "garbage", {"target": "garbage"}]


def _request_host_only(document: dict[str, Any]) -> None:
    del document["events"][0]["target"]["url"]


def _bad_repository(document: dict[str, Any]) -> None:
    document["events"][0]["target"]["repository"] = "UPPER/Case"


@pytest.mark.parametrize(
    ("sender", "body", "event", "expected"),
    [
        pytest.param(
            Sender.GHCR,
            edited("ghcr-package.json", _ghcr_tag),
            "package",
            (pushed("ghcr.io", "codertocat/hello-world", "1.2.3"),),
            id="ghcr-with-a-tag",
        ),
        pytest.param(
            Sender.GHCR,
            edited("ghcr-package.json", _ghcr_no_url),
            "package",
            (pushed("ghcr.io", "codertocat/hello-world"),),
            id="ghcr-owner-and-name",
        ),
        pytest.param(Sender.GHCR, edited("ghcr-package.json", _ghcr_npm), "package", (), id="ghcr-npm"),
        pytest.param(
            Sender.GHCR,
            edited("ghcr-package.json", lambda d: d.update(action="deleted")),
            "package",
            (),
            id="ghcr-deleted",
        ),
        pytest.param(
            Sender.DISTRIBUTION,
            edited("distribution-tag.json", _two_events),
            None,
            (pushed("127.0.0.1:5000", "team/app", "1.0.1"), pushed("example.com", "library/test", "latest")),
            id="distribution-several-events-odd-ones-skipped",
        ),
        pytest.param(
            Sender.DISTRIBUTION,
            edited("distribution-tag.json", _request_host_only),
            None,
            (pushed("registrycluster.local", "library/test", "latest"),),
            id="distribution-request-host",
        ),
        pytest.param(
            Sender.DISTRIBUTION,
            edited("distribution-tag.json", _bad_repository),
            None,
            (),
            id="distribution-bad-name",
        ),
        pytest.param(Sender.DISTRIBUTION, b"{}", None, (), id="distribution-no-events"),
        pytest.param(
            Sender.HARBOR,
            edited("harbor.json", lambda d: d.update(type="PULL_ARTIFACT")),
            None,
            (),
            id="harbor-pull",
        ),
        pytest.param(
            Sender.HARBOR,
            edited("harbor-cloudevents.json", lambda d: d.update(type="harbor.artifact.pulled")),
            None,
            (),
            id="harbor-cloudevents-pull",
        ),
        pytest.param(
            Sender.HARBOR,
            edited(
                "harbor-cloudevents.json",
                lambda d: d["data"]["resources"][0].update(resource_url="harbor.dev/library/busybox:v1.0"),
            ),
            None,
            (pushed("harbor.dev", "library/busybox", "v1.0"),),
            id="harbor-cloudevents-tag",
        ),
        pytest.param(
            Sender.DOCKERHUB,
            edited("dockerhub.json", lambda d: d["repository"].update(repo_name="nginx")),
            None,
            (pushed("docker.io", "library/nginx", "latest"),),
            id="dockerhub-official-image",
        ),
        pytest.param(
            Sender.QUAY,
            edited("quay.json", lambda d: d.update(updated_tags=[])),
            None,
            (pushed("quay.io", "dgangaia/test"),),
            id="quay-no-tags",
        ),
    ],
)
def test_edge_rows(sender: Sender, body: bytes, event: str | None, expected: tuple[Pushed, ...]) -> None:
    assert parse_notification(sender, body, event=event) == expected


@pytest.mark.parametrize(
    ("sender", "body", "event", "message"),
    [
        pytest.param(Sender.DISTRIBUTION, b"not json", None, "not JSON", id="not-json"),
        pytest.param(Sender.DISTRIBUTION, b"[]", None, "the body is not a JSON object", id="a-list"),
        pytest.param(
            Sender.DISTRIBUTION, b'{"events": {}}', None, "events is not a list", id="events-object"
        ),
        pytest.param(Sender.DOCKERHUB, b"{}", None, "repository is not a JSON object", id="dockerhub-empty"),
        pytest.param(
            Sender.DOCKERHUB,
            b'{"repository": {"repo_name": "../x"}}',
            None,
            "not a Docker Hub repository",
            id="dockerhub-bad-name",
        ),
        pytest.param(Sender.HARBOR, b"{}", None, "type is missing", id="harbor-empty"),
        pytest.param(
            Sender.HARBOR,
            b'{"type": "PUSH_ARTIFACT", "event_data": {}}',
            None,
            "resources is not a list",
            id="harbor-no-resources",
        ),
        pytest.param(
            Sender.GHCR, b'{"action": "published"}', "package", "package is not", id="ghcr-no-package"
        ),
        pytest.param(
            Sender.GHCR,
            b'{"action": "published", "package": {"package_type": "CONTAINER"}}',
            "package",
            "names no container image",
            id="ghcr-no-image",
        ),
        pytest.param(Sender.QUAY, b"{}", None, "docker_url", id="quay-empty"),
        pytest.param(
            Sender.QUAY,
            b'{"docker_url": "quay.io/a/b", "updated_tags": "latest"}',
            None,
            "updated_tags",
            id="quay-tags-string",
        ),
        pytest.param(Sender.QUAY, b"\xff\xfe{", None, "not JSON", id="not-utf8"),
    ],
)
def test_malformed_bodies_are_payload_errors(
    sender: Sender, body: bytes, event: str | None, message: str
) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_notification(sender, body, event=event)


def test_a_notification_naming_too_many_images_is_refused() -> None:
    tags = [f"1.0.{n}" for n in range(MAX_IMAGES + 1)]
    body = json.dumps({"docker_url": "quay.io/a/b", "updated_tags": tags}).encode()
    with pytest.raises(PayloadError, match="more than"):
        parse_notification(Sender.QUAY, body)


def test_a_deeply_nested_body_is_refused() -> None:
    body = b'{"events": [' + b"[" * 500_000 + b"]" * 500_000 + b"]}"
    with pytest.raises(PayloadError, match="nests too deep"):
        parse_notification(Sender.DISTRIBUTION, body)


def test_a_body_nested_a_few_hundred_deep_is_read_like_any_other() -> None:
    body = b'{"events": [' + b"[" * 300 + b"]" * 300 + b"]}"
    assert parse_notification(Sender.DISTRIBUTION, body) == ()


def test_pushed_names_are_the_repositories() -> None:
    assert pushed_names([pushed("a.io", "x", "1"), pushed("a.io", "x", "2")]) == {CanonicalName("a.io", "x")}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "events",
        "action",
        "target",
        "tag",
        "url",
        "repository",
        "request",
        "host",
        "repo_name",
        "push_data",
        "type",
        "event_data",
        "resources",
        "resource_url",
        "package",
        "registry_package",
        "package_version",
        "package_url",
        "container_metadata",
        "name",
        "owner",
        "login",
        "package_type",
        "docker_url",
        "updated_tags",
    ]
)
_shaped = st.recursive(
    st.none()
    | st.text(max_size=30)
    | st.sampled_from(["push", "PUSH_ARTIFACT", "published", "docker", "quay.io/a/b"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_keys, children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300)
@given(
    sender=st.sampled_from(list(Sender)),
    event=st.sampled_from([None, "package", "registry_package", "ping"]),
    body=st.binary(max_size=200)
    | _json.map(lambda v: json.dumps(v).encode())
    | _shaped.map(lambda v: json.dumps(v).encode()),
)
def test_garbage_is_a_payload_error_or_valid_images(sender: Sender, event: str | None, body: bytes) -> None:
    try:
        result = parse_notification(sender, body, event=event)
    except PayloadError:
        return
    assert all(isinstance(item, Pushed) and item.name.host and item.name.path for item in result)
    assert len(set(result)) == len(result)
