"""``helmrelease diff``'s comparison: objects paired like helm-diff pairs them, unified hunks, nothing secret shown."""

from __future__ import annotations

import base64

import pytest

from helmrelease.cli.output import dump_yaml
from helmrelease.reconcile.manifest_diff import Change, ObjectKey, diff_manifests
from helmrelease.reconcile.masking import masker_for

CONFIG_MAP = """---
# Source: app/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: web
data:
  message: "{message}"
  file: |
    line one
    line two
"""
DEPLOYMENT = """---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: apps
spec:
  replicas: {replicas}
"""


def secret(**data: str) -> str:
    lines = "".join(f"  {key}: {base64.b64encode(value.encode()).decode()}\n" for key, value in data.items())
    return f"---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\ndata:\n{lines}"


def diff(before: str, after: str, **kwargs: object) -> list:  # type: ignore[type-arg]
    return diff_manifests(before, after, namespace="apps", dump=dump_yaml, **kwargs)  # type: ignore[arg-type]


def test_equal_manifests_have_no_diff_even_when_written_differently() -> None:
    before = CONFIG_MAP.format(message="hi") + DEPLOYMENT.format(replicas=1)
    after = DEPLOYMENT.format(replicas=1).replace("replicas: 1", "replicas:   1") + CONFIG_MAP.format(
        message="hi"
    )
    assert diff(before, after) == []


def test_a_changed_value_is_one_hunk_under_a_helm_diff_header() -> None:
    [changed] = diff(CONFIG_MAP.format(message="one"), CONFIG_MAP.format(message="two"))
    assert changed.change is Change.CHANGED
    assert changed.key == ObjectKey("apps", "web", "ConfigMap", "")
    text = changed.text()
    assert text.splitlines()[0] == "apps, web, ConfigMap (v1) has changed:"
    assert "-  message: one\n+  message: two\n" in text
    assert text.splitlines()[1].startswith("@@ ")


def test_a_multi_line_value_diffs_line_by_line() -> None:
    after = CONFIG_MAP.format(message="x").replace("line two", "line 2")
    [changed] = diff(CONFIG_MAP.format(message="x"), after)
    assert "-    line two\n+    line 2\n" in changed.text()


def test_objects_added_and_removed_and_their_order() -> None:
    before = DEPLOYMENT.format(replicas=1)
    after = CONFIG_MAP.format(message="x") + DEPLOYMENT.format(replicas=1).replace("name: web", "name: api")
    diffs = diff(before, after)
    assert [(d.key.name, d.key.kind, d.change) for d in diffs] == [
        ("api", "Deployment", Change.ADDED),
        ("web", "ConfigMap", Change.ADDED),
        ("web", "Deployment", Change.REMOVED),
    ]
    assert diffs[2].text().splitlines()[0] == "apps, web, Deployment (apps) has been removed:"
    assert all(line.startswith("-") for line in diffs[2].lines[1:])


def test_an_api_version_move_within_a_group_is_a_change_of_the_same_object() -> None:
    after = DEPLOYMENT.format(replicas=1).replace("apps/v1", "apps/v2")
    [changed] = diff(DEPLOYMENT.format(replicas=1), after)
    assert changed.change is Change.CHANGED


def test_secret_values_are_never_shown_but_a_changed_key_is() -> None:
    before = secret(password="hunter2-old", user="admin-user")
    after = secret(password="hunter2-new", user="admin-user", token="fresh-token")
    [changed] = diff(before, after)
    text = changed.text()
    for value in ("hunter2-old", "hunter2-new", "admin-user", "fresh-token"):
        assert value not in text
        assert base64.b64encode(value.encode()).decode() not in text
    assert "-  password: '*** (11 bytes, old value)'\n+  password: '*** (11 bytes, new value)'\n" in text
    assert "+  token: '*** (11 bytes)'" in text
    assert "user" not in "".join(line for line in changed.lines if line[0] in "+-")


def test_a_secret_whose_values_did_not_change_has_no_diff() -> None:
    assert diff(secret(password="same-value"), secret(password="same-value")) == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("stringData:\n  password: plain-text-secret\n", id="string-data"),
        pytest.param("data: not-a-map-at-all\n", id="garbage-data"),
    ],
)
def test_every_shape_of_secret_data_is_masked(body: str) -> None:
    manifest = f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n{body}"
    [added] = diff("", manifest)
    assert "plain-text-secret" not in added.text()
    assert "not-a-map-at-all" not in added.text()
    assert "***" in added.text()


def test_values_from_secrets_are_masked_wherever_the_chart_put_them() -> None:
    masker = masker_for([{"message": "s3cret-from-a-secret"}])
    [changed] = diff(
        CONFIG_MAP.format(message="old"), CONFIG_MAP.format(message="s3cret-from-a-secret"), mask=masker
    )
    assert "s3cret-from-a-secret" not in changed.text()
    assert "-  message: old\n+  message: ***\n" in changed.text()


def test_a_changed_value_from_a_secret_shows_as_a_changed_line_masked_on_both_sides() -> None:
    masker = masker_for([{"message": "s3cret-value-one"}, {"message": "s3cret-value-two"}])
    before, after = (
        CONFIG_MAP.format(message="s3cret-value-one"),
        CONFIG_MAP.format(message="s3cret-value-two"),
    )
    [changed] = diff(before, after, mask=masker)
    assert "-  message: ***\n+  message: ***\n" in changed.text()
    assert "s3cret" not in changed.text()
