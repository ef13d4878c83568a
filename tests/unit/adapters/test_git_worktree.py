"""Working-tree helpers of git write-back: finding manifests, writing edits, private credential files."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from helmrelease.adapters.git import (
    ASKPASS_SCRIPT,
    PASSWORD_VARIABLE,
    USERNAME_VARIABLE,
    ChangedFile,
    find_manifests,
    write_changes,
    write_private_file,
)

RELEASE = "kind: HelmRelease\nmetadata:\n  name: prom\n"
OTHER = "kind: ConfigMap\nmetadata:\n  name: prom\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    files = {
        "clusters/prod/prom.yaml": RELEASE,
        "clusters/prod/prom-copy.yml": RELEASE,
        "clusters/prod/config.yaml": OTHER,
        "clusters/prod/notes.txt": RELEASE,
        "clusters/staging/prom.yaml": RELEASE,
        ".git/prom.yaml": RELEASE,
        "root.yaml": RELEASE,
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    (tmp_path / "clusters/prod/binary.yaml").write_bytes(b"\xff\xfe kind: HelmRelease")
    return tmp_path


def _is_release(text: str) -> bool:
    return "kind: HelmRelease" in text


@pytest.mark.parametrize(
    ("sub_path", "expected"),
    [
        pytest.param(
            None,
            [
                "clusters/prod/prom-copy.yml",
                "clusters/prod/prom.yaml",
                "clusters/staging/prom.yaml",
                "root.yaml",
            ],
            id="whole-tree-without-git-dir-text-or-binary-files",
        ),
        pytest.param(
            "clusters/prod", ["clusters/prod/prom-copy.yml", "clusters/prod/prom.yaml"], id="sub-path"
        ),
        pytest.param("clusters/absent", [], id="missing-sub-path"),
    ],
)
def test_find_manifests(tree: Path, sub_path: str | None, expected: list[str]) -> None:
    assert find_manifests(tree, _is_release, sub_path) == expected


def test_find_manifests_skips_symlinks(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "elsewhere.yaml").write_text(RELEASE)
    (tree / "link.yaml").symlink_to(outside / "elsewhere.yaml")
    (tree / "linked-dir").symlink_to(outside)
    assert "link.yaml" not in find_manifests(tree, _is_release)
    assert not any(path.startswith("linked-dir") for path in find_manifests(tree, _is_release))


@pytest.mark.parametrize("sub_path", [pytest.param("../", id="parent"), pytest.param(".git", id="git-dir")])
def test_find_manifests_refuses_sub_paths_outside_the_tree(tree: Path, sub_path: str) -> None:
    with pytest.raises(ValueError, match="inside the repository"):
        find_manifests(tree, _is_release, sub_path)


def test_write_changes_reports_only_real_changes(tree: Path) -> None:
    changes = [
        ChangedFile("root.yaml", RELEASE),  # unchanged
        ChangedFile("./clusters/prod/prom.yaml", RELEASE.replace("prom", "prometheus")),
        ChangedFile("clusters/new/added.yaml", "a: 1\r\n"),
    ]
    assert write_changes(tree, changes) == ["clusters/prod/prom.yaml", "clusters/new/added.yaml"]
    assert (tree / "clusters/prod/prom.yaml").read_text() == RELEASE.replace("prom", "prometheus")
    assert (tree / "clusters/new/added.yaml").read_bytes() == b"a: 1\r\n"


@pytest.mark.parametrize(
    "path",
    [pytest.param("../escape.yaml", id="parent"), pytest.param(".git/config", id="git-dir")],
)
def test_write_changes_refuses_paths_outside_the_tree(tree: Path, path: str) -> None:
    with pytest.raises(ValueError, match="inside the repository"):
        write_changes(tree, [ChangedFile(path, "x")])


def test_write_changes_does_not_write_through_symlinks(
    tree: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "target.yaml").write_text("original")
    (tree / "file-link.yaml").symlink_to(outside / "target.yaml")
    (tree / "dir-link").symlink_to(outside)
    for path in ("file-link.yaml", "dir-link/target.yaml"):
        with pytest.raises(ValueError, match="symlink"):
            write_changes(tree, [ChangedFile(path, "overwritten")])
    assert (outside / "target.yaml").read_text() == "original"


def test_private_file_is_private_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("old")
    path.chmod(0o644)
    write_private_file(path, b"new", 0o600)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("prompt", "answer"),
    [
        pytest.param("Username for 'https://git.example.com': ", "bot", id="username"),
        pytest.param("Password for 'https://bot@git.example.com': ", "pa ss'wo\"rd$x", id="password"),
    ],
)
def test_askpass_script_answers_git_prompts(tmp_path: Path, prompt: str, answer: str) -> None:
    script = tmp_path / "askpass.sh"
    write_private_file(script, ASKPASS_SCRIPT.encode(), 0o700)
    assert stat.S_IMODE(script.stat().st_mode) == 0o700
    env = {"PATH": os.environ["PATH"], USERNAME_VARIABLE: "bot", PASSWORD_VARIABLE: "pa ss'wo\"rd$x"}
    result = subprocess.run([str(script), prompt], env=env, capture_output=True, text=True, check=True)
    assert result.stdout == f"{answer}\n"
