"""The one walk for manifest files (``helmrelease images update`` and git write-back), and paths kept inside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helmrelease.adapters.files import (
    is_temporary_of,
    manifest_files,
    read_text,
    remove_leftover_temporaries,
    resolve_inside,
    write_atomically,
    write_text,
)

RELEASE = "kind: HelmRelease\nmetadata:\n  name: prom\n"


@pytest.fixture
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "elsewhere.yaml").write_text(RELEASE)
    files = [
        "clusters/prod/prom.yaml",
        "clusters/prod/prom-copy.yml",
        "clusters/prod/notes.txt",
        "clusters/staging/prom.yaml",
        ".git/prom.yaml",
        ".github/workflows/ci.yaml",
        "clusters/.hidden.yaml",
        "root.yaml",
    ]
    for path in files:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(RELEASE)
    (root / "clusters/prod/binary.yaml").write_bytes(b"\xff\xfe kind: HelmRelease")
    (root / "link-out.yaml").symlink_to(outside / "elsewhere.yaml")
    (root / "dir-out").symlink_to(outside)
    (root / "clusters/link-in.yaml").symlink_to(root / "root.yaml")
    (root / "clusters/dir-in").symlink_to(root / "clusters/staging")
    (root / "dangling.yaml").symlink_to(root / "nowhere.yaml")
    os.mkfifo(root / "clusters/pipe.yaml")
    return root


@pytest.mark.parametrize(
    ("sub_path", "expected"),
    [
        pytest.param(
            None,
            [
                "clusters/prod/binary.yaml",
                "clusters/prod/prom-copy.yml",
                "clusters/prod/prom.yaml",
                "clusters/staging/prom.yaml",
                "root.yaml",
            ],
            id="whole-tree-each-file-once-by-its-real-path",
        ),
        pytest.param(
            "clusters/prod",
            ["clusters/prod/binary.yaml", "clusters/prod/prom-copy.yml", "clusters/prod/prom.yaml"],
            id="sub-path",
        ),
        pytest.param("clusters/prod/prom.yaml", ["clusters/prod/prom.yaml"], id="sub-path-is-a-file"),
        pytest.param("clusters/absent", [], id="missing-sub-path"),
    ],
)
def test_manifest_files(tree: Path, sub_path: str | None, expected: list[str]) -> None:
    """No symlink (in or out, file or directory), dot entry, FIFO or other suffix; binary files are the reader's."""
    assert [path.relative_to(tree).as_posix() for path in manifest_files(tree, sub_path)] == expected


def test_a_root_that_is_a_file_is_that_file(tree: Path) -> None:
    notes = tree / "clusters/prod/notes.txt"
    assert manifest_files(notes) == [notes]


@pytest.mark.parametrize(
    "sub_path",
    [
        pytest.param("../", id="parent"),
        pytest.param(".git", id="git-dir"),
        pytest.param("/etc", id="absolute"),
        pytest.param("dir-out", id="symlink-out"),
        pytest.param("dir-out/elsewhere.yaml", id="through-a-symlink"),
    ],
)
def test_sub_paths_that_could_leave_the_tree_are_refused(tree: Path, sub_path: str) -> None:
    with pytest.raises(ValueError, match="repository"):
        manifest_files(tree, sub_path)


def test_resolve_inside_refuses_writing_through_a_symlink(tree: Path) -> None:
    with pytest.raises(ValueError, match="through a symlink"):
        resolve_inside(tree, "clusters/link-in.yaml")
    assert resolve_inside(tree, "clusters/new.yaml") == tree / "clusters/new.yaml"


def test_text_keeps_its_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "crlf.yaml"
    write_text(path, "a: 1\r\nb: é\r\n")
    assert path.read_bytes() == "a: 1\r\nb: é\r\n".encode()
    assert read_text(path) == "a: 1\r\nb: é\r\n"


@pytest.mark.parametrize(
    ("candidate", "is_temporary"),
    [
        (".tag-cache.json.k3j9x_2a.tmp", True),
        ("tag-cache.json", False),  # the file itself
        (".tag-cache.json..tmp", False),  # no random part: not a name mkstemp gives
        (".first-seen.json.k3j9x_2a.tmp", False),  # another file's
        (".tag-cache.json.k3j9x_2a.tmp.keep", False),
        ("tag-cache.json.k3j9x_2a.tmp", False),  # not hidden: not ours
        (".tag-cache.jsonx.k3j9x_2a.tmp", False),
    ],
)
def test_is_temporary_of(candidate: str, is_temporary: bool) -> None:
    assert is_temporary_of("tag-cache.json", candidate) is is_temporary


def test_leftover_temporaries_go_and_the_file_and_its_neighbours_stay(tmp_path: Path) -> None:
    path = tmp_path / "tag-cache.json"
    write_atomically(path, b"{}")
    left = [".tag-cache.json.abc12345.tmp", ".tag-cache.json.zz_9.tmp"]
    kept = [".first-seen.json.abc12345.tmp", "first-seen.json"]
    for name in left + kept:
        (tmp_path / name).write_bytes(b"half")
    (tmp_path / ".tag-cache.json.dir.tmp").mkdir()  # not a file: not one of ours
    assert remove_leftover_temporaries(path) == sorted(left)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".tag-cache.json.dir.tmp", "tag-cache.json", *kept]
    )
    assert path.read_bytes() == b"{}"
    assert remove_leftover_temporaries(tmp_path / "missing" / "x.json") == []
