"""Working-tree helpers of git write-back: writing edits, private credential files (the manifest walk is
``adapters.files``, tested in test_files.py)."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from helmrelease.adapters.credentials import BasicCredentials
from helmrelease.adapters.git import (
    ASKPASS_SCRIPT,
    PASSWORD_VARIABLE,
    USERNAME_VARIABLE,
    ChangedFile,
    Credentials,
    SshCredentials,
    StateLayout,
    write_changes,
    write_credential_files,
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


@pytest.mark.parametrize(
    ("credentials", "files"),
    [
        pytest.param(lambda key: None, {}, id="anonymous"),
        pytest.param(lambda key: BasicCredentials("bot", "s3cr3t"), {"askpass.sh": 0o700}, id="https"),
        pytest.param(
            lambda key: SshCredentials(key, host_key_checking="accept-new"),
            {"ssh-key": 0o600, "known_hosts": 0o600},
            id="ssh-own-known-hosts",
        ),
        pytest.param(
            lambda key: SshCredentials(key, known_hosts=Path("/mnt/known_hosts")),
            {"ssh-key": 0o600},
            id="ssh-mounted-known-hosts",
        ),
    ],
)
def test_credential_files_are_private(
    tmp_path: Path, credentials: Callable[[Path], Credentials | None], files: dict[str, int]
) -> None:
    """What `git_environment` points git at exists and only we can read it; a password stays out of files."""
    mounted_key = tmp_path / "mounted-key"
    mounted_key.write_bytes(b"PRIVATE KEY")
    mounted_key.chmod(0o644)
    state = tmp_path / "state"
    state.mkdir()
    write_credential_files(StateLayout(state), credentials(mounted_key))
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in state.iterdir()} == files
    assert not any(b"s3cr3t" in path.read_bytes() for path in state.iterdir())
    if "ssh-key" in files:
        assert (state / "ssh-key").read_bytes() == b"PRIVATE KEY"


def test_credential_files_keep_the_host_keys_learned_before(tmp_path: Path) -> None:
    """`accept-new` records a host's key on first contact: rewriting the state must not forget it."""
    key = tmp_path / "key"
    key.write_bytes(b"PRIVATE KEY")
    layout = StateLayout(tmp_path / "state")
    layout.root.mkdir()
    layout.known_hosts.write_bytes(b"git.example.com ssh-ed25519 AAAA\n")
    write_credential_files(layout, SshCredentials(key, host_key_checking="accept-new"))
    assert layout.known_hosts.read_bytes() == b"git.example.com ssh-ed25519 AAAA\n"
