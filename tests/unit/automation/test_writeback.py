"""Git write-back edits: only the tag, only where the old tag still is; the commit names what it carries."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tests.unit.automation.fakes import FakeRepository, release

from helmrelease.adapters.git import Author
from helmrelease.automation.watched import TagMove, read_release, tag_move
from helmrelease.automation.writeback import (
    GitWriteback,
    UnparsableFiles,
    edit_manifest_text,
    edit_tree,
    unparsable_file,
    write_back,
)
from helmrelease.images.manifests import ManifestError, ReleaseId

RELEASE = ReleaseId("apps", "web")
MANIFEST = """\
apiVersion: helm.fluxcd.io/v1
kind: HelmRelease
metadata:
  name: web
  namespace: apps
spec:
  values:
    image:
      repository: reg.example.com/web   # the app
      tag: {web}
    worker:
      image: reg.example.com/worker:{worker}
"""


def moves(**new_tags: str) -> list[TagMove]:
    values = {
        "image": {"repository": "reg.example.com/web", "tag": "1.0.0"},
        "worker": {"image": "reg.example.com/worker:2.0.0"},
    }
    view = read_release(release("web", values, {"fluxcd.io/tag.chart-image": "semver:~1.0"}))
    containers = {"chart_image": "chart-image", "worker": "worker"}
    by_name = {target.container: target for target in view.targets}
    return [tag_move(by_name[containers[key]], tag) for key, tag in new_tags.items()]


@pytest.mark.parametrize(
    ("written", "new", "expected", "moved", "already", "note"),
    [
        pytest.param(
            {"web": "1.0.0", "worker": "2.0.0"},
            {"chart_image": "1.0.5"},
            {"web": "1.0.5", "worker": "2.0.0"},
            ("chart-image",),
            (),
            None,
            id="moves-the-tag",
        ),
        pytest.param(
            {"web": "1.0.0", "worker": "2.0.0"},
            {"chart_image": "1.0.5", "worker": "2.1.0"},
            {"web": "1.0.5", "worker": "2.1.0"},
            ("chart-image", "worker"),
            (),
            None,
            id="two-containers",
        ),
        pytest.param(
            {"web": "1.0.5", "worker": "2.0.0"},
            {"chart_image": "1.0.5"},
            {"web": "1.0.5", "worker": "2.0.0"},
            (),
            ("chart-image",),
            None,
            id="already-there",
        ),
        pytest.param(
            {"web": "1.0.3", "worker": "2.0.0"},
            {"chart_image": "1.0.5"},
            {"web": "1.0.3", "worker": "2.0.0"},
            (),
            (),
            "chart-image: the manifest has tag 1.0.3, not 1.0.0; left as is",
            id="someone-changed-it",
        ),
    ],
)
def test_edit_manifest_text(
    written: dict[str, str],
    new: dict[str, str],
    expected: dict[str, str],
    moved: tuple[str, ...],
    already: tuple[str, ...],
    note: str | None,
) -> None:
    edit = edit_manifest_text(MANIFEST.format(**written), RELEASE, moves(**new))
    assert edit.text == MANIFEST.format(**expected)
    assert (edit.moved, edit.already) == (moved, already)
    assert edit.notes == ((note,) if note else ())


def test_other_releases_and_namespaces_are_not_touched() -> None:
    text = MANIFEST.format(web="1.0.0", worker="2.0.0")
    for other in (ReleaseId("apps", "api"), ReleaseId("prod", "web")):
        edit = edit_manifest_text(text, other, moves(chart_image="1.0.5"))
        assert (edit.text, edit.moved, edit.notes) == (text, (), ())


def test_an_edit_that_cannot_be_proven_is_a_note() -> None:
    text = MANIFEST.format(web="&v 1.0.0\n    copy: *v", worker="2.0.0")
    edit = edit_manifest_text(text, RELEASE, moves(chart_image="1.0.5"))
    assert edit.text == text
    assert len(edit.notes) == 1
    assert edit.notes[0].startswith("chart-image: ")


def test_edit_tree_walks_the_sub_path_and_keeps_line_endings(tmp_path: Path) -> None:
    crlf = MANIFEST.format(web="1.0.0", worker="2.0.0").replace("\n", "\r\n")
    (tmp_path / "prod").mkdir()
    (tmp_path / "prod" / "web.yaml").write_bytes(crlf.encode())
    (tmp_path / "prod" / "broken.yaml").write_text("kind: HelmRelease\nname: web\n  bad: [\n")
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "web.yaml").write_text(MANIFEST.format(web="1.0.0", worker="2.0.0"))

    edit = edit_tree(tmp_path, RELEASE, moves(chart_image="1.0.5"), sub_path="prod")

    assert [changed.path for changed in edit.files] == ["prod/web.yaml"]
    assert edit.files[0].text == crlf.replace("tag: 1.0.0", "tag: 1.0.5")
    assert edit.moved == {"chart-image"}
    [unparsable] = edit.unparsable
    assert unparsable.path == "prod/broken.yaml"
    assert unparsable.error.startswith("not valid YAML: mapping values are not allowed here")
    assert "\n" not in unparsable.error


BROKEN = "kind: HelmRelease\nmetadata: {name: web}\nspec: [\n"


def warnings_about(caplog: pytest.LogCaptureFixture, path: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and path in record.getMessage()
    ]


async def test_an_unparsable_file_is_named_once_per_content_and_the_others_go_through(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "web.yaml").write_text(MANIFEST.format(web="1.0.0", worker="2.0.0"))
    (tmp_path / "broken.yaml").write_text(BROKEN)
    repository = FakeRepository(tmp_path)
    git = GitWriteback(repository)

    results = [await write_back(git, RELEASE, moves(chart_image="1.0.5")) for _ in range(2)]
    (tmp_path / "broken.yaml").write_text(BROKEN.replace("[", "{a: 1, a: 2}"))  # still broken, differently
    results.append(await write_back(git, RELEASE, moves(chart_image="1.0.5")))

    assert [[move.new_tag for move in result.committed] for result in results] == [["1.0.5"]] * 3
    warned = warnings_about(caplog, "broken.yaml")
    assert len(warned) == 2
    assert warned[0].startswith(
        "git write-back: skipped broken.yaml, which does not parse: not valid YAML: while parsing a flow node"
    )
    assert "found duplicate key" in warned[1]


def test_unparsable_files_are_remembered_by_path_and_content_within_a_bound() -> None:
    remembered = UnparsableFiles(limit=2)
    error = ManifestError("not valid YAML")

    def new(path: str, text: str) -> bool:
        return remembered.is_new(unparsable_file(path, text, error))

    assert [new("a.yaml", "x"), new("a.yaml", "x"), new("b.yaml", "x"), new("a.yaml", "y")] == [
        True,
        False,
        True,
        True,
    ]
    assert [new("b.yaml", "x"), new("c.yaml", "x")] == [False, True]  # c pushes out a, the least recent
    assert [new("b.yaml", "x"), new("a.yaml", "y")] == [False, True]
    assert len(remembered._reported) == 2


async def test_write_back_commits_only_the_moves_git_can_take(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(MANIFEST.format(web="1.0.0", worker="2.5.0"))
    repository = FakeRepository(tmp_path)
    bot = Author("Bot", "bot@example.com")

    result = await write_back(
        GitWriteback(repository, bot), RELEASE, moves(chart_image="1.0.5", worker="2.1.0")
    )

    assert [move.target.container for move in result.committed] == ["chart-image"]
    assert result.already == ()
    assert result.notes == ("web.yaml: worker: the manifest has tag 2.5.0, not 2.0.0; left as is",)
    assert repository.messages == [
        "Update image reg.example.com/web to 1.0.5 in apps/web\n\n"
        "apps/web chart-image: reg.example.com/web:1.0.0 → 1.0.5 (semver:~1.0)"
    ]
    assert repository.authors == [bot]
    assert repository.written[0].text == MANIFEST.format(web="1.0.5", worker="2.5.0")


async def test_write_back_of_a_release_git_does_not_hold(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text("kind: ConfigMap\n")
    repository = FakeRepository(tmp_path)
    result = await write_back(GitWriteback(repository), RELEASE, moves(chart_image="1.0.5"))
    assert (result.commit, result.in_git, repository.messages) == (None, (), [])
    assert result.notes == ("no manifest under the git path declares apps/web with these images",)


async def test_write_back_when_git_already_has_it(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(MANIFEST.format(web="1.0.5", worker="2.0.0"))
    repository = FakeRepository(tmp_path)
    result = await write_back(GitWriteback(repository), RELEASE, moves(chart_image="1.0.5"))
    assert result.commit is None
    assert [move.new_tag for move in result.in_git] == ["1.0.5"]
    assert (result.notes, repository.messages) == ((), [])


@pytest.mark.parametrize(
    ("all_releases", "annotated", "wanted"),
    [(False, False, False), (False, True, True), (True, False, True), (True, True, True)],
    ids=["off", "annotated", "all", "all-and-annotated"],
)
def test_which_releases_are_written_back(
    all_releases: bool, annotated: bool, wanted: bool, tmp_path: Path
) -> None:
    annotations = {"image.helm.fluxcd.io/git-writeback": "true"} if annotated else {}
    view = read_release(release("web", {}, annotations))
    assert GitWriteback(FakeRepository(tmp_path), all_releases=all_releases).wanted_for(view) is wanted


PINNED_MANIFEST = """\
apiVersion: helm.fluxcd.io/v1
kind: HelmRelease
metadata:
  name: web
  namespace: apps
  annotations:
    image.helm.fluxcd.io/pin-digest.chart-image: "true"
    image.helm.fluxcd.io/pin-digest.worker: "true"
spec:
  values:
    image:
      repository: reg.example.com/web   # the app
      tag: 1.0.0
      digest: "{web_digest}"
    worker:
      image: reg.example.com/worker:2.0.0{worker_digest}
"""
OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def pinned_moves(web: tuple[str, str], worker: tuple[str, str]) -> list[TagMove]:
    values = {
        "image": {"repository": "reg.example.com/web", "tag": "1.0.0", "digest": OLD},
        "worker": {"image": f"reg.example.com/worker:2.0.0@{OLD}"},
    }
    annotations = {
        "image.helm.fluxcd.io/pin-digest.chart-image": "true",
        "image.helm.fluxcd.io/pin-digest.worker": "true",
    }
    view = read_release(release("web", values, annotations))
    by_name = {target.container: target for target in view.targets}
    return [tag_move(by_name["chart-image"], *web), tag_move(by_name["worker"], *worker)]


def test_git_gets_the_same_pinned_digest_as_the_cluster() -> None:
    text = PINNED_MANIFEST.format(web_digest=OLD, worker_digest=f"@{OLD}")
    edit = edit_manifest_text(text, RELEASE, pinned_moves(("1.0.5", NEW), ("2.0.0", NEW)))
    assert edit.moved == ("chart-image", "worker")
    assert edit.text == PINNED_MANIFEST.format(web_digest=NEW, worker_digest=f"@{NEW}").replace(
        "tag: 1.0.0", "tag: 1.0.5"
    )


def test_git_holding_another_digest_is_left_to_whoever_wrote_it() -> None:
    other = "sha256:" + "c" * 64
    text = PINNED_MANIFEST.format(web_digest=other, worker_digest=f"@{OLD}")
    edit = edit_manifest_text(text, RELEASE, pinned_moves(("1.0.0", NEW), ("2.0.0", NEW)))
    assert edit.moved == ("worker",)
    assert edit.notes == (f"chart-image: the manifest has tag 1.0.0@{other}, not 1.0.0@{OLD}; left as is",)


def test_a_manifest_that_does_not_pin_is_not_given_a_digest() -> None:
    text = MANIFEST.format(web="1.0.0", worker="2.0.0")
    edit = edit_manifest_text(text, RELEASE, pinned_moves(("1.0.5", NEW), ("2.0.0", NEW))[:1])
    assert (edit.text, edit.moved) == (text, ())
