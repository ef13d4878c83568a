"""Drift detection: what counts as a user's change to a release's objects, and what is the apiserver's doing."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from helmrelease.reconcile import drift
from helmrelease.reconcile.drift import (
    LABEL_MAX,
    PATH_MAX,
    PATHS_SHOWN,
    SUMMARY_OBJECTS,
    Drift,
    ManifestObject,
    drift_summary,
    find_drift,
    manifest_identities,
    parse_manifest,
)

MANIFEST = """\
---
# Source: app/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: web
data:
  message: "hello"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: other
  labels: {app: web}
spec:
  replicas: 1
  template:
    spec:
      containers:
        - name: app
          image: example/app:1.0.0
          ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80, targetPort: 8080}]
"""


def _objects() -> dict[str, ManifestObject]:
    return {obj.kind: obj for obj in parse_manifest(MANIFEST, "apps")}


def test_parse_manifest_fills_the_release_namespace_and_keeps_explicit_ones() -> None:
    objects = parse_manifest(MANIFEST, "apps")
    assert [(o.kind, o.name, o.namespace) for o in objects] == [
        ("ConfigMap", "web", "apps"),
        ("Deployment", "web", "other"),
        ("Service", "web", "apps"),
    ]


@pytest.mark.parametrize(
    "manifest",
    [
        pytest.param("", id="empty"),
        pytest.param("---\n# only a comment\n", id="comment-only"),
        pytest.param("- a list\n", id="not-a-mapping"),
        pytest.param("kind: ConfigMap\nmetadata: {name: x}\n", id="no-apiVersion"),
        pytest.param("a: [unclosed\n", id="broken-yaml"),
        pytest.param("apiVersion: v1\nkind: List\nmetadata: {name: x}\nitems: []\n", id="list-kind"),
    ],
)
def test_parse_manifest_skips_what_is_not_an_object(manifest: str) -> None:
    assert parse_manifest(manifest, "ns") == []


def _identities(objects: list[ManifestObject]) -> list[tuple[str, str, str, str | None]]:
    return [(o.api_version, o.kind, o.name, o.namespace) for o in objects]


@pytest.mark.parametrize(
    "manifest",
    [
        pytest.param(MANIFEST, id="objects"),
        pytest.param("", id="empty"),
        pytest.param("---\n# only a comment\n", id="comment-only"),
        pytest.param("- a list\n", id="not-a-mapping"),
        pytest.param("kind: ConfigMap\nmetadata: {name: x}\n", id="no-apiVersion"),
        pytest.param("a: [unclosed\n", id="broken-yaml"),
        pytest.param("apiVersion: v1\nkind: List\nmetadata: {name: x}\nitems: []\n", id="list-kind"),
        pytest.param(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: 'on', namespace: \"1e3\"}\n", id="quoted"
        ),
    ],
)
@pytest.mark.parametrize("libyaml", [True, False], ids=["libyaml", "pure"])
def test_manifest_identities_are_those_parse_manifest_finds(
    manifest: str, libyaml: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not libyaml:
        monkeypatch.delattr(drift.pyyaml, "CSafeLoader")
    found = manifest_identities(manifest, "apps")
    assert _identities(found) == _identities(parse_manifest(manifest, "apps"))
    assert all(obj.body == {} for obj in found), "identities only: no document is kept"


def test_manifest_identities_of_endless_aliases_are_read_without_walking_them() -> None:
    laughs = "".join(f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}' if i else 'lol'] * 9)}]\n" for i in range(9))
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n" + laughs
    assert _identities(manifest_identities(manifest, "apps")) == [("v1", "ConfigMap", "x", "apps")]


def _live(kind: str, **changes: Any) -> dict[str, Any]:
    """The live object as an apiserver returns it: the manifest plus defaults, status and metadata."""
    import copy

    body = copy.deepcopy(dict(_objects()[kind].body))
    body.setdefault("metadata", {}).update(
        {
            "resourceVersion": "42",
            "uid": "u",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [],
        }
    )
    body["metadata"].setdefault("annotations", {})["helm.fluxcd.io/antecedent"] = "apps:helmrelease/web"
    body["status"] = {"observed": True}
    if kind == "Deployment":
        container = body["spec"]["template"]["spec"]["containers"][0]
        container["terminationMessagePath"] = "/dev/termination-log"
        container["ports"][0]["protocol"] = "TCP"
        body["spec"]["strategy"] = {"type": "RollingUpdate"}
    for dotted, value in changes.items():
        target = body
        *parents, last = dotted.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return body


_DELETE = object()


@pytest.mark.parametrize(
    ("kind", "changes", "expected"),
    [
        pytest.param("ConfigMap", {}, None, id="unchanged-configmap"),
        pytest.param("Deployment", {}, None, id="defaults-and-status-are-not-drift"),
        pytest.param("Service", {}, None, id="unchanged-service"),
        pytest.param("ConfigMap", {"data__message": "edited"}, (".data.message",), id="edited-data"),
        pytest.param("ConfigMap", {"data__extra": "added"}, None, id="added-key-is-not-drift"),
        pytest.param("ConfigMap", {"data": _DELETE}, (".data",), id="removed-data"),
        pytest.param("Deployment", {"spec__replicas": 3}, (".spec.replicas",), id="scaled"),
        pytest.param(
            "Deployment",
            {"spec__template__spec__containers__0__image": "example/app:hacked"},
            (".spec.template.spec.containers[0].image",),
            id="edited-image",
        ),
        pytest.param(
            "Deployment",
            {"spec__template__spec__containers": []},
            (".spec.template.spec.containers",),
            id="containers-removed",
        ),
        pytest.param(
            "Deployment", {"metadata__labels": {"app": "x"}}, (".metadata.labels.app",), id="label-edited"
        ),
        pytest.param("Service", {"spec__ports__0__port": "80"}, None, id="int-or-string-port"),
    ],
)
def test_find_drift(kind: str, changes: dict[str, Any], expected: tuple[str, ...] | None) -> None:
    drift = find_drift(_objects()[kind], _live(kind, **changes))
    assert (drift.paths if drift else None) == expected


def test_missing_object_is_drift() -> None:
    drift = find_drift(_objects()["ConfigMap"], None)
    assert drift is not None
    assert drift.missing
    assert drift.describe() == "ConfigMap apps/web is missing"


@pytest.mark.parametrize(
    "annotation", ["helm.fluxcd.io/driftDetection", "helm.toolkit.fluxcd.io/driftDetection"]
)
def test_opt_out_annotation(annotation: str) -> None:
    live = _live("ConfigMap", data__message="edited")
    live["metadata"]["annotations"][annotation] = "disabled"
    assert find_drift(_objects()["ConfigMap"], live) is None


def test_describe_lists_paths() -> None:
    drift = find_drift(_objects()["Deployment"], _live("Deployment", spec__replicas=2))
    assert drift is not None
    assert drift.describe() == "Deployment other/web changed at .spec.replicas"


# --- telling what drifted, bounded --------------------------------------------------------------------------


def _drift(name: str, paths: tuple[str, ...] = (), more: int = 0, *, missing: bool = False) -> Drift:
    obj = ManifestObject("v1", "ConfigMap", name, "apps", {})
    return Drift(obj, missing=missing, paths=paths, more=more)


@pytest.mark.parametrize(
    ("drifts", "expected"),
    [
        pytest.param([], None, id="nothing"),
        pytest.param(
            [_drift("a", (".data.x",))],
            "Drift in release apps/web: 1 object differs from the release manifest\n"
            "ConfigMap apps/a changed at .data.x",
            id="one",
        ),
        pytest.param(
            [_drift("a", (".data.x", ".data.y", ".data.z"), 40), _drift("b", missing=True)],
            "Drift in release apps/web: 2 objects differ from the release manifest\n"
            "ConfigMap apps/a changed at .data.x, .data.y, .data.z and 40 more\n"
            "ConfigMap apps/b is missing",
            id="more-fields",
        ),
        pytest.param(
            [_drift(f"o{n}", (".data.x",)) for n in range(7)],
            "Drift in release apps/web: 7 objects differ from the release manifest\n"
            + "".join(f"ConfigMap apps/o{n} changed at .data.x\n" for n in range(5))
            + "and 2 more objects",
            id="more-objects",
        ),
    ],
)
def test_drift_summary(drifts: list[Drift], expected: str | None) -> None:
    assert drift_summary("apps/web", drifts) == expected


def test_a_drift_keeps_the_first_paths_and_counts_the_rest() -> None:
    declared = {f"k{n}": "v" for n in range(5000)}
    obj = ManifestObject("v1", "ConfigMap", "big", "apps", {"data": declared})
    drift = find_drift(obj, {"data": dict.fromkeys(declared, "edited")})
    assert drift is not None
    assert (drift.paths, drift.more) == ((".data.k0", ".data.k1", ".data.k2"), 4997)


def test_a_long_path_is_shortened_keeping_its_end() -> None:
    key = "k" * 500
    drift = _drift("a", (f".data.{key}.leaf",))
    described = drift.describe()
    assert described.endswith(".leaf")
    assert "…" in described
    assert len(described) < len("ConfigMap apps/a changed at ") + PATH_MAX + 1


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=300),
            st.lists(st.text(min_size=1, max_size=400), max_size=PATHS_SHOWN),
            st.integers(0, 10**6),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_a_drift_summary_is_a_few_bounded_lines_whatever_drifted(
    found: list[tuple[str, list[str], int]],
) -> None:
    drifts = [_drift(name, tuple(paths), more, missing=not paths) for name, paths, more in found]
    summary = drift_summary("apps/web", drifts)
    assert summary is not None
    lines = summary.splitlines()
    assert len(lines) <= 1 + SUMMARY_OBJECTS + 1
    # Shortened before escaping: an escaped character takes at most 10 (\\U0001f600).
    bound = 10 * (LABEL_MAX + PATHS_SHOWN * (PATH_MAX + 2)) + 40
    assert all(len(line) <= bound for line in lines)


def test_control_characters_in_a_hostile_manifest_stay_on_one_line() -> None:
    drift = _drift("web\nConfigMap apps/fake is missing", (".data.a\rb", ".data.\x1b[31mred"))
    assert drift.describe() == (
        "ConfigMap apps/web\\nConfigMap apps/fake is missing changed at .data.a\\rb, .data.\\x1b[31mred"
    )


def test_a_manifest_whose_aliases_never_end_is_not_compared() -> None:
    """Helm itself refuses such a manifest; should one be stored, drift detection skips it rather than walk it."""
    laughs = "".join(f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}' if i else 'lol'] * 9)}]\n" for i in range(9))
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n" + laughs
    assert parse_manifest(manifest, "apps") == []


@pytest.mark.parametrize(
    "manifest",
    [
        MANIFEST,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {n: 1, f: 1.5, b: true, z: null, e: '', l: [1, x]}\n",
        "",
    ],
)
def test_packed_objects_unpack_to_what_was_parsed(manifest: str) -> None:
    objects = parse_manifest(manifest, "apps")
    packed = drift.pack_objects(objects)
    assert packed is not None
    assert list(drift.unpack_objects(packed)) == objects


@pytest.mark.parametrize(
    "body",
    [
        {"data": {1: "an integer key reads back as a string"}},
        {"data": {"when": datetime.date(2024, 1, 1)}},
        {"data": {"x": float("nan")}},
        {"data": {"x": b"binary"}},
    ],
    ids=["integer key", "timestamp", "nan", "binary"],
)
def test_objects_json_would_change_are_not_packed(body: dict[str, Any]) -> None:
    assert drift.pack_objects([ManifestObject("v1", "ConfigMap", "a", "apps", body)]) is None


def test_a_packed_manifest_is_smaller_than_its_text() -> None:
    packed = drift.pack_objects(parse_manifest(MANIFEST, "apps"))
    assert packed is not None
    assert len(packed) < len(MANIFEST.encode())


# The libyaml reading of a manifest must build what ruamel's YAML 1.2 reading builds, or leave it to ruamel.
def _ruamel(text: str) -> str:
    try:
        return repr(list(YAML(typ="safe", pure=True).load_all(text)))
    except Exception as error:
        return type(error).__name__


def _ours(text: str) -> str:
    try:
        return repr(drift._yaml12_documents(text))
    except Exception as error:
        return type(error).__name__


_PLAIN = st.text(alphabet="0123456789_.-+eEoxbOXBtrufalsnyYNTF~:<=!&* ", min_size=0, max_size=8)
_SCALAR = st.one_of(
    _PLAIN,
    _PLAIN.map(lambda text: f"'{text}'"),
    st.sampled_from(
        [
            "017", "0o17", "0x1F", "0b101", "1_000", "1e3", "1.5e+3", "-.inf", ".NaN", "1:20", "2001-12-14",
            "yes", "on", "TRUE", "~", "null", "", "!!str 1", "!!binary aGk=", "!foo x", "&a 1", "-0", "+5", "3.",
        ]
    ),
)  # fmt: skip


@st.composite
def _documents(draw: st.DrawFn) -> str:
    lines = []
    for index in range(draw(st.integers(1, 6))):
        key = draw(st.sampled_from(["a", "b", "<<", "a", "1", "true"])) + (
            "" if draw(st.booleans()) else str(index)
        )
        value = draw(_SCALAR)
        style = draw(st.sampled_from(["plain", "list", "flow"]))
        if style == "plain":
            lines.append(f"{key}: {value}")
        elif style == "list":
            lines.append(f"{key}:\n  - {value}\n  - {draw(_SCALAR)}")
        else:
            lines.append(f"{key}: {{k: {value}, l: [{draw(_SCALAR)}]}}")
    return "\n".join(lines) + "\n"


@settings(max_examples=1000)
@given(st.lists(_documents(), min_size=1, max_size=3))
def test_the_libyaml_reading_builds_what_ruamel_builds(documents: list[str]) -> None:
    text = "---\n" + "---\n".join(documents)
    assert _ours(text) == _ruamel(text)


@pytest.mark.parametrize(
    "text",
    ["a: 017\nb: 0o17\nc: 1_000\nd: 1e3\ne: .inf\nf: yes\ng: on\nh: ~\ni:\nj: 0x1F\nk: 1:20\nl: TRUE\n"],
)
def test_yaml_1_2_scalars_read_as_ruamel_reads_them(text: str) -> None:
    assert drift._yaml12_documents(text) == list(YAML(typ="safe", pure=True).load_all(text))


@pytest.mark.parametrize(
    "text",
    ["a: 2001-12-14\n", "<<: {a: 1}\n", "a: 1\na: 2\n", "a: !!binary aGk=\n", "%YAML 1.1\n---\na: yes\n"],
)
def test_what_the_libyaml_reading_does_not_cover_is_read_by_ruamel(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ruamel = list(YAML(typ="safe", pure=True).load_all(text)) if "a: 2" not in text else None
    read: list[str] = []
    real = drift.YAML

    def counting(**kwargs: Any) -> Any:
        read.append(text)
        return real(**kwargs)

    monkeypatch.setattr(drift, "YAML", counting)
    if ruamel is None:
        assert parse_manifest(text, "ns") == []  # repeated keys: ruamel refuses the manifest, as before
    else:
        assert drift._yaml12_documents(text) == ruamel
    assert read == [text]


def test_a_helm_manifest_is_read_by_libyaml_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drift, "YAML", None)  # calling ruamel would fail the test
    assert [obj.kind for obj in parse_manifest(MANIFEST, "apps")] == ["ConfigMap", "Deployment", "Service"]
