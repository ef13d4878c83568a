"""Pure parts of the helm adapter: argument lists per helm major, versions, environment, output parsers."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML

from helmrelease.adapters import helm

V3, V4 = helm.HelmMajor.V3, helm.HelmMajor.V4
INSTALL, UPGRADE = helm.DeployAction.INSTALL, helm.DeployAction.UPGRADE
VALUES = Path("/private/values.json")
BASE = ["--namespace", "team", "--values", str(VALUES), "--timeout", "300s", "--output", "json"]


def deploy(major: helm.HelmMajor, action: helm.DeployAction, **options: Any) -> list[str]:
    return helm.deploy_arguments(
        major, action, "web", "team", "/cache/app", VALUES, helm.DeployOptions(**options)
    )


@pytest.mark.parametrize(
    ("major", "action", "options", "expected"),
    [
        pytest.param(V4, INSTALL, {}, ["install", "web", "/cache/app", *BASE], id="install-defaults"),
        pytest.param(
            V4,
            UPGRADE,
            {},
            ["upgrade", "web", "/cache/app", *BASE, "--history-max", "10", "--reset-values"],
            id="upgrade-defaults-reset-values",
        ),
        pytest.param(
            V3,
            UPGRADE,
            {"reset_values": False, "max_history": 3},
            ["upgrade", "web", "/cache/app", *BASE, "--history-max", "3", "--reuse-values"],
            id="upgrade-reuse-values",
        ),
        pytest.param(
            V4, INSTALL, {"wait": True}, ["install", "web", "/cache/app", *BASE, "--wait=watcher", "--wait-for-jobs"],
            id="v4-wait-is-the-watcher-strategy",
        ),
        pytest.param(
            V3, INSTALL, {"wait": True}, ["install", "web", "/cache/app", *BASE, "--wait", "--wait-for-jobs"],
            id="v3-wait",
        ),
        pytest.param(
            V4, INSTALL, {"force": True}, ["install", "web", "/cache/app", *BASE, "--force-replace"],
            id="v4-force-is-force-replace",
        ),
        pytest.param(V3, INSTALL, {"force": True}, ["install", "web", "/cache/app", *BASE, "--force"], id="v3-force"),
        pytest.param(
            V4,
            INSTALL,
            {"force_conflicts": True},
            ["install", "web", "/cache/app", *BASE, "--force-conflicts"],
            id="v4-force-conflicts",
        ),
        pytest.param(
            V3, INSTALL, {"force_conflicts": True}, ["install", "web", "/cache/app", *BASE],
            id="v3-has-no-server-side-apply-conflicts",
        ),
        pytest.param(
            V3,
            INSTALL,
            {"skip_crds": True, "disable_openapi_validation": True, "description": "by helmrelease"},
            [
                "install", "web", "/cache/app", *BASE,
                "--skip-crds", "--disable-openapi-validation", "--description", "by helmrelease",
            ],
            id="crds-validation-description",
        ),
        pytest.param(
            V4,
            INSTALL,
            {"version": "1.2.3", "timeout": 42},
            ["install", "web", "/cache/app", "--namespace", "team", "--values", str(VALUES), "--timeout", "42s",
             "--output", "json", "--version", "1.2.3"],
            id="version-and-timeout",
        ),
    ],
)  # fmt: skip
def test_deploy_arguments(
    major: helm.HelmMajor, action: helm.DeployAction, options: dict[str, Any], expected: list[str]
) -> None:
    assert deploy(major, action, **options) == expected


@pytest.mark.parametrize("major", [V3, V4], ids=["v3", "v4"])
@pytest.mark.parametrize("action", [INSTALL, UPGRADE], ids=["install", "upgrade"])
def test_deploy_never_creates_namespaces_or_installs_on_upgrade(
    major: helm.HelmMajor, action: helm.DeployAction
) -> None:
    every_flag = deploy(major, action, wait=True, force=True, skip_crds=True, force_conflicts=True)
    assert "--create-namespace" not in every_flag
    assert "--install" not in every_flag
    assert not any(flag.startswith("--set") for flag in every_flag)


@pytest.mark.parametrize(
    ("major", "options", "expected"),
    [
        pytest.param(
            V4, helm.RollbackOptions(), ["rollback", "web", *["--namespace", "team", "--timeout", "300s"],
                                         "--history-max", "10"],
            id="previous-revision",
        ),
        pytest.param(
            V3,
            helm.RollbackOptions(revision=4, timeout=60, force=True, recreate=True, disable_hooks=True, wait=True),
            ["rollback", "web", "4", "--namespace", "team", "--timeout", "60s", "--history-max", "10",
             "--wait", "--wait-for-jobs", "--force", "--recreate-pods", "--no-hooks"],
            id="v3-every-flag",
        ),
        pytest.param(
            V4,
            helm.RollbackOptions(revision=4, timeout=60, force=True, recreate=True, disable_hooks=True, wait=True),
            ["rollback", "web", "4", "--namespace", "team", "--timeout", "60s", "--history-max", "10",
             "--wait=watcher", "--wait-for-jobs", "--force-replace", "--no-hooks"],
            id="v4-every-flag-without-recreate-pods",
        ),
    ],
)  # fmt: skip
def test_rollback_arguments(
    major: helm.HelmMajor, options: helm.RollbackOptions, expected: list[str]
) -> None:
    assert helm.rollback_arguments(major, "web", "team", options) == expected


def test_test_uninstall_and_repository_arguments() -> None:
    assert helm.release_test_arguments("web", "team", 120) == [
        "test",
        "web",
        "--namespace",
        "team",
        "--timeout",
        "120s",
    ]
    assert helm.uninstall_arguments("web", "team", 30, keep_history=True) == [
        "uninstall",
        "web",
        "--namespace",
        "team",
        "--timeout",
        "30s",
        "--keep-history",
    ]
    assert helm.repository_update_arguments(V3, "source") == [
        "repo",
        "update",
        "source",
        "--fail-on-repo-update-fail",
    ]
    assert helm.repository_update_arguments(V4, "source") == [
        "repo",
        "update",
        "source",
    ]  # v4 rejects the flag
    assert helm.pull_arguments(
        "oci://r/charts/app", Path("/d"), version="1.0.0", plain_http=True, ca_file=Path("/ca.pem")
    ) == ["pull", "oci://r/charts/app", "--destination", "/d", "--version", "1.0.0", "--plain-http",
          "--ca-file", "/ca.pem"]  # fmt: skip


@pytest.mark.parametrize("value", ["", "-n", "--kubeconfig=/etc/passwd", "-"], ids=repr)
def test_positional_refuses_what_helm_would_read_as_a_flag(value: str) -> None:
    with pytest.raises(ValueError, match="refusing argument"):
        helm.positional(value)
    with pytest.raises(ValueError, match="refusing argument"):
        helm.deploy_arguments(V4, INSTALL, value, "team", "/cache/app", VALUES, helm.DeployOptions())


@given(st.text(min_size=1).filter(lambda text: not text.startswith("-")))
def test_positional_passes_everything_else_unchanged(value: str) -> None:
    assert helm.positional(value) == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("v4.3.1", V4, id="v4"),
        pytest.param("v4.3", V4, id="v4-minor-only"),
        pytest.param("v3.22.0+g1234abc\n", V3, id="v3-with-build-metadata"),
        pytest.param("3.12.0", V3, id="without-v"),
    ],
)
def test_helm_version(text: str, expected: helm.HelmMajor) -> None:
    assert helm.parse_helm_version(text) is expected


@pytest.mark.parametrize("text", ["v2.17.0", "v5.0.0", "", "unknown"], ids=repr)
def test_unsupported_helm_versions_are_refused(text: str) -> None:
    with pytest.raises(helm.HelmError, match="helm v3 or v4 is required"):
        helm.parse_helm_version(text)


def test_impersonation_names_only_the_service_account_user() -> None:
    # The apiserver adds system:serviceaccounts[:team] itself; naming groups would need impersonate on groups.
    assert helm.Impersonation("team", "deployer").arguments() == [
        "--kube-as-user", "system:serviceaccount:team:deployer",
    ]  # fmt: skip


def test_environment_is_explicit() -> None:
    settings = helm.HelmSettings(home=Path("/h"), temp_root=Path("/t"), kubeconfig=Path("/k/config"))
    ours = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "KUBECONFIG": "/somebody/elses",
        "HELM_DRIVER": "memory",
        "HELM_NAMESPACE": "kube-system",
        "AWS_SECRET_ACCESS_KEY": "x",
        "HTTPS_PROXY": "http://proxy:3128",
    }
    assert settings.environment(ours, {"HELM_REGISTRY_CONFIG": "/t/r.json"}) == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "HTTPS_PROXY": "http://proxy:3128",
        "HELM_CACHE_HOME": "/h/cache",
        "HELM_CONFIG_HOME": "/h/config",
        "HELM_DATA_HOME": "/h/data",
        "TMPDIR": "/t",
        "KUBECONFIG": "/k/config",
        "HELM_REGISTRY_CONFIG": "/t/r.json",
    }


def test_in_cluster_environment_keeps_the_service_address_and_sets_no_kubeconfig() -> None:
    settings = helm.HelmSettings(home=Path("/h"), temp_root=Path("/t"))
    env = settings.environment({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"})
    assert env["KUBERNETES_SERVICE_HOST"] == "10.0.0.1"
    assert "KUBECONFIG" not in env


def test_values_file_is_private_and_removed(tmp_path: Path) -> None:
    values = {"password": "hunter2", "nested": {"list": [1, 2]}}
    with helm.private_values_file(tmp_path, values) as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert path.parent.parent == tmp_path
        assert json.loads(path.read_text()) == values
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


# (text, what must be in the file): UTF-8 as itself where YAML reads it raw, a JSON escape where it would not.
UNICODE_VALUES = [
    pytest.param("🚀", "🚀", id="emoji-outside-the-bmp"),
    pytest.param("👩\u200d💻", "👩\u200d💻", id="zwj-sequence"),
    pytest.param("e\u0301", "e\u0301", id="combining-mark"),
    pytest.param(
        "\u05e9\u05dc\u05d5\u05dd \u202b\u0645\u0631\u062d\u0628\u0627\u202c",
        "\u05e9\u05dc\u05d5\u05dd \u202b\u0645\u0631\u062d\u0628\u0627\u202c",
        id="rtl-and-embedding-marks",
    ),
    pytest.param(
        "\U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522 \U0010fffd",
        "\U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522 \U0010fffd",
        id="astral-and-private-use",
    ),
    pytest.param("a\x00b", "a\\u0000b", id="nul"),
    pytest.param("a\tb\nc", "a\\tb\\nc", id="c0-controls"),
    pytest.param("a\x7fb", "a\\u007fb", id="del"),
    pytest.param("a\x80\x9fb", "a\\u0080\\u009fb", id="c1-controls"),
    pytest.param("a\x85b", "a\\u0085b", id="nel-which-yaml-folds"),
    pytest.param("a\u2028b\u2029c", "a\\u2028b\\u2029c", id="line-and-paragraph-separators"),
    pytest.param("\ufeffa", "\\ufeffa", id="bom"),
    pytest.param("a\ufffe\uffffb", "a\\ufffe\\uffffb", id="noncharacters"),
]


@pytest.mark.parametrize(("text", "written"), UNICODE_VALUES)
def test_values_file_keeps_every_character_helm_can_read(tmp_path: Path, text: str, written: str) -> None:
    values = {"message": text, text: [text, {"nested": text}]}
    with helm.private_values_file(tmp_path, values) as path:
        raw = path.read_bytes()
    content = raw.decode("utf-8")
    assert f'"message": "{written}"' in content
    assert re.search(r"\\u[dD][89a-fA-F]", content) is None  # no surrogate pair
    assert json.loads(raw) == values
    assert YAML(typ="safe").load(content) == values  # what helm does with a values file: read it as YAML


@given(
    st.recursive(st.text(), lambda children: st.dictionaries(st.text(), children, max_size=3), max_leaves=6)
)
def test_values_json_reads_back_as_yaml_whatever_the_text(value: Any) -> None:
    values = {"v": value}
    content = helm.values_json(values).decode("utf-8")
    assert YAML(typ="safe").load(content) == values


def test_values_file_is_removed_when_the_call_fails(tmp_path: Path) -> None:
    with pytest.raises(helm.Timeout), helm.private_values_file(tmp_path, {"a": 1}):
        raise helm.Timeout("upgrade", "late")
    assert list(tmp_path.iterdir()) == []


INSTALL_OUTPUT = {
    "name": "big",
    "namespace": "team",
    "version": 2,
    "info": {"status": "deployed", "description": "Upgrade complete"},
    "chart": {"metadata": {"name": "app", "version": "0.2.0", "appVersion": "1.0.0"}},
    "manifest": "---\napiVersion: v1\nkind: ConfigMap\n",
}
METADATA_OUTPUT = {
    "name": "t",
    "chart": "tested",
    "version": "0.1.0",
    "appVersion": "",
    "namespace": "team",
    "revision": 1,
    "status": "deployed",
    "deployedAt": "2026-11-26T12:11:11Z",
}


def test_release_from_install_output_and_from_metadata() -> None:
    assert helm.parse_release(INSTALL_OUTPUT) == helm.Release(
        "big", "team", 2, "deployed", "app", "0.2.0", "1.0.0", "---\napiVersion: v1\nkind: ConfigMap\n"
    )
    assert helm.parse_metadata(METADATA_OUTPUT) == helm.Release(
        "t", "team", 1, "deployed", "tested", "0.1.0", ""
    )


def test_history() -> None:
    entries = [
        {"revision": 1, "updated": "2026-11-26T12:08:31Z", "status": "superseded", "chart": "app-0.1.0",
         "app_version": "1.0.0", "description": "Install complete"},
        {"revision": 2, "updated": "2026-11-26T12:09:00Z", "status": "failed", "chart": "app-0.2.0",
         "app_version": "1.0.0", "description": "Upgrade \"big\" failed: context canceled"},
    ]  # fmt: skip
    assert [(r.revision, r.status, r.chart) for r in helm.parse_history(entries)] == [
        (1, "superseded", "app-0.1.0"),
        (2, "failed", "app-0.2.0"),
    ]


@pytest.mark.parametrize(
    ("description", "target"),
    [
        pytest.param("Rollback to 1", 1, id="helm-v3-and-v4"),
        pytest.param("Rollback to 12", 12, id="two-digits"),
        pytest.param("Upgrade complete", None, id="not-a-rollback"),
        pytest.param("Rollback to previous", None, id="no-number"),
        pytest.param("upgrade by HelmRelease apps/Rollback to 3", None, id="ours-mentioning-it"),
    ],
)
def test_a_rollback_revision_names_its_target(description: str, target: int | None) -> None:
    """Helm describes the revision a rollback makes as "Rollback to <N>" (captured from v3.22 and v4.3)."""
    entry = {"revision": 3, "status": "deployed", "description": description}
    assert helm.parse_history([entry])[0].rollback_target == target


def test_test_hooks_from_status() -> None:
    status = {
        "hooks": [
            {"name": "t-test", "kind": "Pod", "events": ["test"], "last_run": {"phase": "Succeeded"}},
            {"name": "migrate", "kind": "Job", "events": ["pre-upgrade"], "last_run": {"phase": "Succeeded"}},
            {"name": "never-ran", "kind": "Pod", "events": ["test-success"]},
            {"name": "fresh", "kind": "Pod", "events": ["test"], "last_run": {}},
        ]
    }
    assert helm.parse_test_hooks(status) == (
        helm.TestHook("Pod", "t-test", "Succeeded"),
        helm.TestHook("Pod", "fresh", ""),
    )
    assert helm.parse_test_hooks({}) == ()


@pytest.mark.parametrize(
    "stdout",
    [
        pytest.param(b'{"name": "x"}\n', id="plain"),
        pytest.param(b'Pulled: r/charts/app:0.1.0\nDigest: sha256:ab\n{"name": "x"}\n', id="v4-oci-preamble"),
    ],
)
def test_json_document(stdout: bytes) -> None:
    assert helm.json_document(stdout) == {"name": "x"}


def test_output_without_json_is_an_error() -> None:
    with pytest.raises(helm.HelmError, match="no JSON"):
        helm.json_document(b"Pulled: x\n")


def test_only_package(tmp_path: Path) -> None:
    (tmp_path / "app-0.1.0.tgz").write_bytes(b"")
    assert helm.only_package(tmp_path) == tmp_path / "app-0.1.0.tgz"
    (tmp_path / "other-0.1.0.tgz").write_bytes(b"")
    with pytest.raises(helm.HelmError, match="expected one chart package"):
        helm.only_package(tmp_path)


def test_owner_labels_go_on_install_and_upgrade() -> None:
    labels = {"helm.fluxcd.io/owner-namespace": "team", "helm.fluxcd.io/owner-name": "web"}
    for action in (INSTALL, UPGRADE):
        arguments = deploy(V4, action, labels=labels)
        index = arguments.index("--labels")
        assert arguments[index + 1] == "helm.fluxcd.io/owner-name=web,helm.fluxcd.io/owner-namespace=team"


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param({"owner": "a,b=c"}, id="comma-in-value"),
        pytest.param({"a=b": "c"}, id="equals-in-key"),
        pytest.param({"owner": "x" * 64}, id="value-too-long"),
        pytest.param({"Upper.Case/name": "x"}, id="prefix-not-dns"),
        pytest.param({"": "x"}, id="empty-key"),
    ],
)
def test_labels_that_could_be_misread_are_refused(labels: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="not a valid release label"):
        deploy(V4, INSTALL, labels=labels)


def test_an_empty_label_value_is_valid() -> None:
    assert helm.label_argument({"a": "", "b": "x"}) == "a=,b=x"
