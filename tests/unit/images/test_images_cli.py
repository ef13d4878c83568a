"""``helmrelease images scan | filter | update`` through the real entry point."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from helmrelease.cli import main

RELEASE = """\
apiVersion: helm.fluxcd.io/v1
kind: HelmRelease
metadata:
  name: monitoring
  namespace: ops
  annotations:
    flux.weave.works/automated: "true"
    flux.weave.works/tag.prometheus: semver:~2.3
    flux.weave.works/tag.alertmanager: glob:v0.15.*
    flux.weave.works/tag.nats: regex:^0.6.*
spec:
  values:
    prometheus:
      image: prom/prometheus:v2.3.1   # server
    alertmanager:
      image: quay.io/prom/alertmanager:v0.15.0
    nats:
      image:
        repository: nats-streaming
        tag: 0.6.0
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str], stdin: str = "") -> tuple[int, str, str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_scan_prints_one_object_per_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "hr.yaml"
    file.write_text(RELEASE)
    code, out, err = run(["images", "scan", str(file)], capsys)
    assert (code, err) == (0, "")
    records = json.loads(out)
    assert [(r["container"], r["image"], r["path"], r["tag_path"]) for r in records] == [
        ("alertmanager", "quay.io/prom/alertmanager:v0.15.0", "alertmanager.image", "alertmanager.image"),
        ("nats", "nats-streaming:0.6.0", "nats.image", "nats.image.tag"),
        ("prometheus", "prom/prometheus:v2.3.1", "prometheus.image", "prometheus.image"),
    ]
    assert records[0] == {
        "namespace": "ops",
        "name": "monitoring",
        "container": "alertmanager",
        "image": "quay.io/prom/alertmanager:v0.15.0",
        "registry": "quay.io",
        "repository": "prom/alertmanager",
        "tag": "v0.15.0",
        "digest": None,
        "path": "alertmanager.image",
        "tag_path": "alertmanager.image",
        "automatable": True,
        "automated": True,
        "policy": "glob:v0.15.*",
        "warnings": [],
    }


def test_scan_reads_stdin_and_reports_problems_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    text = RELEASE.replace("tag: 0.6.0", "tag: 0.6").replace("prom/prometheus", "Prom/Prometheus")
    text = text.replace("regex:^0.6.*", "regex:(")
    code, out, err = run(["images", "scan", "-"], capsys, stdin=text)
    assert code == 0
    (nats,) = json.loads(out)[1:]
    assert nats["automatable"] is False
    assert nats["tag"] is None
    assert any("reads as a float" in warning for warning in nats["warnings"])
    assert any("does not parse" in warning for warning in nats["warnings"])
    assert "ops/monitoring: prometheus at prometheus.image:" in err


def test_scan_of_a_file_without_helmreleases_is_an_empty_array(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "cm.yaml"
    file.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert run(["images", "scan", str(file)], capsys) == (0, "[]\n", "")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("a: [\n", "not valid YAML", id="bad-yaml"),
        pytest.param(None, "No such file", id="missing"),
    ],
)
def test_scan_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    file = tmp_path / "hr.yaml"
    if content is not None:
        file.write_text(content)
    code, out, err = run(["images", "scan", str(file)], capsys)
    assert (code, out) == (2, "")
    assert message in err


def test_scan_warns_about_annotations(capsys: pytest.CaptureFixture[str]) -> None:
    text = RELEASE.replace('automated: "true"', "automated: 'True'")
    code, _, err = run(["images", "scan", "-"], capsys, stdin=text)
    assert code == 0
    assert 'flux.weave.works/automated: \'True\' is not "true" or "false", so automated is off' in err


@pytest.mark.parametrize(
    ("policy", "tags", "code", "output"),
    [
        pytest.param(
            "semver:~4.0",
            "4.0.3\n4.0.10\nlatest\n4.1.0\n4.0.9\n",
            0,
            "4.0.10\n4.0.9\n4.0.3\n",
            id="semver-best-first",
        ),
        pytest.param("semver:*", "v1.0.0\n1.0.0\n0.9\n", 0, "1.0.0\nv1.0.0\n0.9\n", id="semver-ties-by-tag"),
        pytest.param(
            "glob:v0.15.*", "v0.15.2\nv0.16.0\nv0.15.0\n", 0, "v0.15.2\nv0.15.0\n", id="glob-input-order"
        ),
        pytest.param(
            "regex:^0.6", "0.6.1\n0.5\n 0.6.0 \n\n0.6.1\n", 0, "0.6.1\n0.6.0\n", id="regex-strips-and-dedupes"
        ),
        pytest.param("*", "latest\nmain\n", 0, "main\n", id="any-but-latest"),
        pytest.param("latest", "latest\nmain\n", 0, "latest\n", id="latest-by-name"),
        pytest.param("semver:^9", "1.0.0\n", 1, "", id="none-eligible"),
        pytest.param("semver:*", "", 1, "", id="no-input"),
    ],
)
def test_filter(policy: str, tags: str, code: int, output: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["images", "filter", policy], capsys, stdin=tags) == (code, output, "")


@pytest.mark.parametrize("policy", ["semver:~>x.y", "regex:(", "semvr:1", ""])
def test_filter_bad_policy(policy: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["images", "filter", policy], capsys, stdin="1.0.0\n")
    assert (code, out) == (2, "")
    assert err.startswith("helmrelease images filter: ")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "releases").mkdir()
    (tmp_path / "releases" / "monitoring.yaml").write_text(RELEASE)
    (tmp_path / "releases" / "other.yml").write_text(RELEASE.replace("name: monitoring", "name: other"))
    (tmp_path / "charts" / "app" / "templates").mkdir(parents=True)
    (tmp_path / "charts" / "app" / "templates" / "cm.yaml").write_text(
        "name: {{ .Release.Name }}-x\n  bad: [\n"
    )
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "hidden.yaml").write_text(RELEASE)
    (tmp_path / "README.md").write_text(RELEASE)
    return tmp_path


def update_args(path: Path, *extra: str, container: str = "prometheus", tag: str = "v2.3.2") -> list[str]:
    return [
        "images",
        "update",
        str(path),
        "--namespace",
        "ops",
        "--name",
        "monitoring",
        "--container",
        container,
        "--tag",
        tag,
        *extra,
    ]


def test_update_edits_only_the_tag_in_the_matching_file(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(update_args(repo), capsys)
    assert code == 0
    changed = repo / "releases" / "monitoring.yaml"
    assert (
        out
        == f"updated {changed}: ops/monitoring prometheus: prom/prometheus:v2.3.1 -> prom/prometheus:v2.3.2\n"
    )
    assert "skipped" in err
    assert "cm.yaml" in err
    assert (repo / "releases" / "monitoring.yaml").read_text() == RELEASE.replace(
        "v2.3.1   # server", "v2.3.2   # server"
    )
    assert (repo / "releases" / "other.yml").read_text() == RELEASE.replace("name: monitoring", "name: other")
    assert (repo / ".git" / "hidden.yaml").read_text() == RELEASE


def test_update_a_single_file_and_again_is_unchanged(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = repo / "releases" / "monitoring.yaml"
    assert run(update_args(file, container="nats", tag="0.6.1"), capsys)[0] == 0
    assert "tag: 0.6.1\n" in file.read_text()
    code, out, _ = run(update_args(file, container="nats", tag="0.6.1"), capsys)
    assert code == 0
    assert out.startswith("unchanged ")


def test_update_keeps_crlf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "hr.yaml"
    file.write_bytes(RELEASE.replace("\n", "\r\n").encode())
    assert run(update_args(file), capsys)[0] == 0
    assert file.read_bytes() == RELEASE.replace("v2.3.1", "v2.3.2").replace("\n", "\r\n").encode()


@pytest.mark.parametrize(
    ("argv_change", "code", "message"),
    [
        pytest.param({"--name": "nope"}, 1, "no HelmRelease ops/nope", id="no-release"),
        pytest.param(
            {"--namespace": "default"}, 1, "no HelmRelease default/monitoring", id="wrong-namespace"
        ),
        pytest.param({"--container": "nope"}, 1, "has no image 'nope'", id="no-container"),
        pytest.param({"--tag": "bad tag"}, 2, "is not a tag", id="bad-tag"),
    ],
)
def test_update_failures(
    repo: Path, capsys: pytest.CaptureFixture[str], argv_change: dict[str, str], code: int, message: str
) -> None:
    argv = update_args(repo)
    for option, value in argv_change.items():
        argv[argv.index(option) + 1] = value
    before = (repo / "releases" / "monitoring.yaml").read_text()
    result, out, err = run(argv, capsys)
    assert (result, out) == (code, "")
    assert message in err
    assert (repo / "releases" / "monitoring.yaml").read_text() == before


def test_update_refuses_what_it_cannot_edit_safely(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "hr.yaml"
    text = RELEASE.replace("tag: 0.6.0", "tag: &v 0.6.0\n    copy: *v")
    file.write_text(text)
    code, out, err = run(update_args(file, container="nats", tag="0.6.1"), capsys)
    assert (code, out) == (2, "")
    assert "refused" in err
    assert file.read_text() == text


def test_update_of_a_non_automatable_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "hr.yaml"
    file.write_text(RELEASE.replace("tag: 0.6.0", "tag: 0.6"))
    code, _, err = run(update_args(file, container="nats", tag="0.6.1"), capsys)
    assert code == 2
    assert "not-automatable" in err


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        pytest.param("missing.yaml", None, 2, id="missing-path"),
        pytest.param("broken.yaml", "a: [\n", 2, id="single-file-not-yaml"),
    ],
)
def test_update_bad_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str | None, code: int
) -> None:
    if content is not None:
        (tmp_path / name).write_text(content)
    result, out, _ = run(update_args(tmp_path / name), capsys)
    assert (result, out) == (code, "")


def test_update_requires_a_tag_source(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["images", "update", ".", "--namespace", "a", "--name", "b", "--container", "c"])
    assert raised.value.code == 2
    assert "--tag" in capsys.readouterr().err


def test_list_without_a_kubeconfig_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["images", "list", "--kubeconfig", str(tmp_path / "missing")], capsys)
    assert (code, out) == (3, "")
    assert err == f"helmrelease images list: the kubeconfig {tmp_path / 'missing'} does not exist\n"
