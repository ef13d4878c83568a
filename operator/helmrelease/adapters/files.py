"""Manifest files in a directory tree: the one walk that ``helmrelease images update`` and git write-back share,
paths that cannot leave the tree, and text read and written with its line endings untouched.

The walk skips every symlink, to a file or a directory, and every entry whose name starts with a dot (``.git``,
CI and editor directories): each file is reached once, by its real path, and nothing outside the tree is read
or written through a link. A link that stays inside the tree loses nothing, since its target is walked where it
lies. A root or sub-path that is itself a file is the one file there is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from pathlib import Path, PurePosixPath

_log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = frozenset({".yaml", ".yml"})


def checked_relative_path(path: str) -> PurePosixPath:
    """``path`` inside the repository; ``ValueError`` for anything that could leave it or reach .git."""
    relative = PurePosixPath(path)
    if (
        not path
        or relative.is_absolute()
        or "\\" in path
        or any(part in ("..", ".git") for part in relative.parts)
        or relative == PurePosixPath(".")
    ):
        raise ValueError(f"{path!r} is not a file path inside the repository")
    return relative


def resolve_inside(root: Path, path: str) -> Path:
    """The file ``path`` names under ``root``, refusing symlinks that would lead a read or write elsewhere."""
    target = root.joinpath(*checked_relative_path(path).parts)
    real_root = root.resolve()
    if target.is_symlink() or not target.parent.resolve().is_relative_to(real_root):
        raise ValueError(f"{path!r} leads outside the repository through a symlink")
    return target


def manifest_files(root: Path, sub_path: str | None = None) -> list[Path]:
    """The ``*.yaml``/``*.yml`` files under ``root`` (or its ``sub_path``), in path order; see the module's rules.

    Raises ``ValueError`` for a ``sub_path`` that could leave ``root``.
    """
    start = resolve_inside(root, sub_path) if sub_path else root
    if start.is_file():
        return [start]
    found: list[Path] = []
    for directory, subdirectories, files in os.walk(start):  # does not descend into symlinked directories
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        for name in files:
            candidate = Path(directory, name)
            if (
                not name.startswith(".")
                and candidate.suffix in MANIFEST_SUFFIXES
                and not candidate.is_symlink()
                and candidate.is_file()  # a regular file: never a FIFO that would block the read
            ):
                found.append(candidate)
    return sorted(found)


def read_text(path: Path) -> str:
    """The file's UTF-8 text with line endings untouched (``newline=""``), so an edit keeps CRLF files CRLF."""
    with path.open(encoding="utf-8", newline="") as stream:
        return stream.read()


def write_text(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8, line endings as they are in ``text``."""
    with path.open("w", encoding="utf-8", newline="") as stream:
        stream.write(text)


_TEMPORARY_SUFFIX = ".tmp"


def is_temporary_of(name: str, candidate: str) -> bool:
    """Whether the file name ``candidate`` is a temporary `write_atomically` made for the file ``name``:
    ``.<name>.<random>.tmp``."""
    prefix = f".{name}."
    return (
        candidate.startswith(prefix)
        and candidate.endswith(_TEMPORARY_SUFFIX)
        and len(candidate) > len(prefix) + len(_TEMPORARY_SUFFIX)
        and "/" not in candidate
    )


def write_atomically(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash at any point leaves the old file or the new one, never
    a mix: a temporary file in the same directory, fsync, rename over ``path``, fsync of the directory.

    A process killed before the rename leaves its temporary behind (nothing reads it); whoever loads ``path``
    at start removes those with `remove_leftover_temporaries`, so crashes do not fill the directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=_TEMPORARY_SUFFIX, dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as stream:
            os.fchmod(stream.fileno(), mode)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def remove_leftover_temporaries(path: Path) -> list[str]:
    """Remove the temporaries of ``path`` that `write_atomically` calls killed midway left; return their names.

    Call it before this process writes ``path`` (at start): a temporary found then belongs to no running write.
    Never raises: a temporary that cannot be removed only costs disk space, said in the log.
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        if not is_temporary_of(path.name, entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError as error:
            _log.warning("cannot remove %s, left by a write that was stopped midway: %s", entry.path, error)
    if removed:
        _log.info(
            "removed %s in %s, left by writes that were stopped midway",
            ", ".join(sorted(removed)),
            path.parent,
        )
    return sorted(removed)


def read_bounded(path: Path, max_bytes: int) -> bytes | None:
    """The bytes of the regular file ``path``, or None when it is missing, not a regular file (opened without
    blocking, so a FIFO put there cannot hang us) or larger than ``max_bytes``."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        data = stream.read(max_bytes + 1)
    return data if len(data) <= max_bytes else None
