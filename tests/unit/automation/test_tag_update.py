"""``helmrelease images update``'s edit (moved out of the CLI), and the one manifest walk it shares with write-back."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from tests.unit.automation.fakes import release

from helmrelease.adapters.files import manifest_files
from helmrelease.automation.tag_update import declared_targets, find_declarations, update_image_tag
from helmrelease.automation.watched import read_release, tag_move
from helmrelease.automation.writeback import edit_tree
from helmrelease.cli import main
from helmrelease.images.manifests import EditStatus, ReleaseId

MONITORING = """\
apiVersion: helm.fluxcd.io/v1
kind: HelmRelease
metadata:
  name: {name}
  namespace: ops
  annotations:
    fluxcd.io/tag.alertmanager: glob:v0.15.*
spec:
  values:
    alertmanager:
      image: quay.io/prom/alertmanager:{tag}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "releases").mkdir()
    (tmp_path / "releases" / "monitoring.yaml").write_text(
        MONITORING.format(name="monitoring", tag="v0.15.0")
    )
    (tmp_path / "releases" / "other.yml").write_text(MONITORING.format(name="other", tag="v0.15.0"))
    (tmp_path / "charts" / "app" / "templates").mkdir(parents=True)
    (tmp_path / "charts" / "app" / "templates" / "cm.yaml").write_text(
        "name: {{ .Release.Name }}-x\n  bad: [\n"
    )
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "hidden.yaml").write_text(MONITORING.format(name="other", tag="v0.15.0"))
    (tmp_path / "README.md").write_text(MONITORING.format(name="other", tag="v0.15.0"))
    return tmp_path


def test_manifest_files_walks_yaml_and_skips_dot_dirs(repo: Path) -> None:
    assert [path.relative_to(repo).as_posix() for path in manifest_files(repo)] == [
        "charts/app/templates/cm.yaml",
        "releases/monitoring.yaml",
        "releases/other.yml",
    ]
    assert list(manifest_files(repo / "README.md")) == [repo / "README.md"]


def test_update_image_tag_is_reusable(repo: Path) -> None:
    report = update_image_tag(
        repo, release=ReleaseId("ops", "other"), container="alertmanager", tag="v0.15.3"
    )
    assert report.status is EditStatus.UPDATED
    assert [file_edit.path.name for file_edit in report.edits] == ["other.yml"]
    assert [path.name for path, _ in report.unreadable] == ["cm.yaml"]
    assert report.refused == ()
    assert "quay.io/prom/alertmanager:v0.15.3" in (repo / "releases" / "other.yml").read_text()


def test_declarations_and_their_targets(repo: Path) -> None:
    declarations = find_declarations(repo, ReleaseId("ops", "other"), "default")
    assert [entry.release for entry in declarations] == [ReleaseId("ops", "other")]  # .git and README skipped
    [(settings, target)] = declared_targets(declarations, "alertmanager")
    assert (target.policy_text, str(target.image.ref)) == (
        "glob:v0.15.*",
        "quay.io/prom/alertmanager:v0.15.0",
    )
    assert settings.policy_text_for("alertmanager") == "glob:v0.15.*"
    assert declared_targets(declarations, "nosuch") == []


def test_the_cli_and_git_write_back_see_the_same_files(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """In one repository with symlinks inside and out, both edit exactly the real file inside, once."""
    repository, outside = tmp_path_factory.mktemp("repository"), tmp_path_factory.mktemp("outside")
    declaration = MONITORING.format(name="monitoring", tag="v0.15.0")
    (repository / "apps").mkdir()
    (repository / "apps" / "monitoring.yaml").write_text(declaration)
    (repository / "apps" / "link.yaml").symlink_to(repository / "apps" / "monitoring.yaml")
    (repository / "linked-apps").symlink_to(repository / "apps")
    (outside / "monitoring.yaml").write_text(declaration)
    (repository / "outside.yaml").symlink_to(outside / "monitoring.yaml")
    (repository / "outside-dir").symlink_to(outside)
    (repository / ".hidden").mkdir()
    (repository / ".hidden" / "monitoring.yaml").write_text(declaration)
    release_id = ReleaseId("ops", "monitoring")

    values = {"alertmanager": {"image": "quay.io/prom/alertmanager:v0.15.0"}}
    view = read_release(
        release("monitoring", values, {"fluxcd.io/tag.alertmanager": "glob:v0.15.*"}, namespace="ops")
    )
    [target] = [target for target in view.targets if target.container == "alertmanager"]
    written_back = edit_tree(repository, release_id, [tag_move(target, "v0.15.3")])

    argv = ["images", "update", str(repository), "--namespace", "ops", "--name", "monitoring"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(""))
        code = main([*argv, "--container", "alertmanager", "--tag", "v0.15.3"])
    printed = capsys.readouterr().out.splitlines()

    assert [file.path for file in written_back.files] == ["apps/monitoring.yaml"]
    assert code == 0
    assert [line.split(" ")[1].removesuffix(":") for line in printed] == [
        str(repository / "apps/monitoring.yaml")
    ]
    assert "v0.15.3" in (repository / "apps" / "monitoring.yaml").read_text()
    assert (outside / "monitoring.yaml").read_text() == declaration
    assert (repository / ".hidden" / "monitoring.yaml").read_text() == declaration
