"""Git write-back: commit the tag moves made in the cluster to the manifests the cluster is synced from.

Only the tag scalars change (``images.manifests`` splices them in place and proves it; a pinned digest is
written the same way, with the tag or in its ``digest`` value), and only where the file still holds the tag
(and digest) the cluster had: a file whose tag differs from both the old and the new one was
changed by someone since, and is left to them. The commit names exactly the moves it carries, so a first
pass over the fresh branch head finds which moves apply before the commit message is written; the
repository adapter then redoes the edit on a newer head if a push loses a race.

The service writes git before the cluster: a release that is synced from git gets a new tag in the cluster
only once git holds it too, so a failed push leaves both as they were and the next cycle tries again.

A file that mentions the release but does not parse as YAML is skipped, so the other files still go
through; it is named in a WARNING log line once per file and content (``UnparsableFiles``), not every cycle.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from helmrelease.adapters.files import manifest_files, read_text
from helmrelease.adapters.git import (
    DEFAULT_AUTHOR,
    Author,
    BeforePush,
    ChangedFile,
    CommitResult,
    ImageUpdate,
    ManifestEdit,
    commit_message,
)
from helmrelease.automation.watched import TagMove, WatchedRelease, version_text
from helmrelease.images.manifests import (
    DEFAULT_NAMESPACE,
    EditStatus,
    ManifestError,
    ReleaseId,
    UnsafeEditError,
    read_releases,
    set_image_tag,
)

_log = logging.getLogger(__name__)


class GitCommitter(Protocol):
    """The repository operations write-back needs (``adapters.git.GitRepository`` has them)."""

    @property
    def worktree(self) -> Path: ...

    @property
    def branch(self) -> str: ...

    async def sync(self) -> str: ...

    async def apply_change(
        self,
        edit: ManifestEdit,
        message: str,
        author: Author = DEFAULT_AUTHOR,
        before_push: BeforePush | None = None,
    ) -> CommitResult | None: ...

    async def branch_holds(self, sha: str) -> bool: ...


#: Told the sha of a commit and the moves it carries before the commit is pushed.
CommitAhead = Callable[[str, Sequence[TagMove]], Awaitable[None]]


@dataclass(frozen=True)
class UnparsableFile:
    """A manifest that mentions the release but is not YAML: skipped, and worth telling someone about."""

    path: str
    digest: str
    error: str


def unparsable_file(path: str, text: str, error: ManifestError) -> UnparsableFile:
    """``error`` on one line (a YAML error spans several, with a caret under the place)."""
    return UnparsableFile(path, hashlib.sha256(text.encode()).hexdigest(), " ".join(str(error).split()))


#: Files remembered as reported; a repository with more broken manifests than this reports the oldest again.
UNPARSABLE_FILES_REMEMBERED = 1024


@dataclass
class UnparsableFiles:
    """Which unparsable files were already reported, by path and content: a cycle that meets the same
    broken file again says nothing, a changed (still broken) file is reported again. Bounded: one entry
    per path, at most ``limit`` paths, the least recently met forgotten first."""

    limit: int = UNPARSABLE_FILES_REMEMBERED
    _reported: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def is_new(self, file: UnparsableFile) -> bool:
        new = self._reported.get(file.path) != file.digest
        self._reported[file.path] = file.digest
        self._reported.move_to_end(file.path)
        while len(self._reported) > self.limit:
            self._reported.popitem(last=False)
        return new


@dataclass(frozen=True)
class GitWriteback:
    """Where tag moves are committed, by whom, and for which releases.

    ``path`` limits the search for manifests to a directory of the repository. ``all_releases`` writes back
    for every automated release; otherwise only for those annotated ``image.helm.fluxcd.io/git-writeback:
    "true"``. Manifests without ``metadata.namespace`` are taken to declare releases in
    ``default_namespace``.
    """

    repository: GitCommitter
    author: Author = DEFAULT_AUTHOR
    path: str | None = None
    all_releases: bool = False
    default_namespace: str = DEFAULT_NAMESPACE
    unparsable: UnparsableFiles = field(default_factory=UnparsableFiles, compare=False, repr=False)

    def wanted_for(self, view: WatchedRelease) -> bool:
        return self.all_releases or view.git_writeback


@dataclass(frozen=True)
class FileEdit:
    """One file's new text, the containers moved in it, those already at their new tag, and why other
    moves were left alone."""

    text: str
    moved: tuple[str, ...]
    already: tuple[str, ...]
    notes: tuple[str, ...]


def edit_manifest_text(
    text: str, release: ReleaseId, moves: Sequence[TagMove], default_namespace: str = DEFAULT_NAMESPACE
) -> FileEdit:
    """Apply ``moves`` to the documents of ``text`` that declare ``release``, where they hold the old tag.

    Raises ``ManifestError`` for a file that is not YAML.
    """
    moved: list[str] = []
    already: list[str] = []
    notes: list[str] = []
    for move in moves:
        container = move.target.container
        entries = [entry for entry in read_releases(text, default_namespace) if entry.release == release]
        written = {
            version_text(image.ref.tag, image.ref.digest if move.new_digest else None)
            for entry in entries
            if (image := entry.detection.find(container))
        }
        if not written:
            continue
        if written == {move.new_version}:
            already.append(container)
            continue
        if not written <= {move.old_version, move.new_version}:
            found = ", ".join(sorted(str(tag) for tag in written))
            notes.append(f"{container}: the manifest has tag {found}, not {move.old_version}; left as is")
            continue
        try:
            edit = set_image_tag(
                text,
                release=release,
                container=container,
                tag=move.new_tag,
                default_namespace=default_namespace,
                digest=move.new_digest,
            )
        except UnsafeEditError as error:
            notes.append(f"{container}: {error}")
            continue
        if edit.status is EditStatus.UPDATED:
            text = edit.text
            moved.append(container)
    return FileEdit(text, tuple(moved), tuple(already), tuple(notes))


@dataclass(frozen=True)
class TreeEdit:
    """The files to change in one tree, and what each move met there."""

    files: tuple[ChangedFile, ...]
    moved: frozenset[str]
    already: frozenset[str]
    notes: tuple[str, ...]
    unparsable: tuple[UnparsableFile, ...] = ()


def edit_tree(
    root: Path,
    release: ReleaseId,
    moves: Sequence[TagMove],
    *,
    sub_path: str | None = None,
    default_namespace: str = DEFAULT_NAMESPACE,
) -> TreeEdit:
    """Apply ``moves`` to every manifest under ``root`` (or ``sub_path``) that declares ``release``.

    The files are those of ``adapters.files.manifest_files``, the walk ``helmrelease images update`` uses too;
    files that are not UTF-8 text are skipped, as we would not edit them anyway.
    """
    files: list[ChangedFile] = []
    moved: set[str] = set()
    already: set[str] = set()
    notes: list[str] = []
    unparsable: list[UnparsableFile] = []

    for file in manifest_files(root, sub_path):
        try:
            text = read_text(file)
        except (OSError, UnicodeDecodeError):
            continue
        if release.name not in text or "HelmRelease" not in text:
            continue  # cannot declare the release: not worth parsing
        path = file.relative_to(root).as_posix()
        try:
            edit = edit_manifest_text(text, release, moves, default_namespace)
        except ManifestError as error:
            unparsable.append(unparsable_file(path, text, error))
            continue
        notes.extend(f"{path}: {note}" for note in edit.notes)
        already.update(edit.already)
        if edit.moved:
            files.append(ChangedFile(path, edit.text))
            moved.update(edit.moved)
    return TreeEdit(tuple(files), frozenset(moved), frozenset(already), tuple(notes), tuple(unparsable))


@dataclass(frozen=True)
class WritebackResult:
    """The commit (None when it was not needed) and the moves git now holds, by it or before it.

    A move in neither ``committed`` nor ``already`` was left out; ``notes`` say why.
    """

    commit: CommitResult | None
    committed: tuple[TagMove, ...]
    already: tuple[TagMove, ...]
    notes: tuple[str, ...]

    @property
    def in_git(self) -> tuple[TagMove, ...]:
        return self.committed + self.already


def _telling(before_push: CommitAhead, moves: tuple[TagMove, ...]) -> BeforePush:
    """The repository's callback, naming the moves the commit carries."""

    async def tell(sha: str) -> None:
        await before_push(sha, moves)

    return tell


async def write_back(
    writeback: GitWriteback,
    release: ReleaseId,
    moves: Sequence[TagMove],
    before_push: CommitAhead | None = None,
) -> WritebackResult:
    """Commit and push those of ``moves`` whose manifests hold the old tag; raises ``GitError``.

    ``before_push`` gets each commit's sha, and the moves it carries, before it is pushed."""

    def edit_with(selected: Sequence[TagMove], root: Path) -> TreeEdit:
        return edit_tree(
            root, release, selected, sub_path=writeback.path, default_namespace=writeback.default_namespace
        )

    await writeback.repository.sync()
    first = await asyncio.to_thread(edit_with, moves, writeback.repository.worktree)
    for file in first.unparsable:
        if writeback.unparsable.is_new(file):
            _log.warning("git write-back: skipped %s, which does not parse: %s", file.path, file.error)
        else:
            _log.debug("git write-back: skipped %s, which does not parse (still)", file.path)
    applicable = tuple(move for move in moves if move.target.container in first.moved)
    already = tuple(move for move in moves if move.target.container in first.already - first.moved)
    notes = first.notes
    if not applicable and not already and not notes:
        notes = (f"no manifest under the git path declares {release} with these images",)
    if not applicable:
        return WritebackResult(None, (), already, notes)
    updates = [
        ImageUpdate(
            release.namespace,
            release.name,
            move.target.container,
            move.target.image.ref.name,
            move.old_version,
            move.new_version,
            move.target.policy_text,
        )
        for move in applicable
    ]
    commit = await writeback.repository.apply_change(
        lambda root: edit_with(applicable, root).files,
        commit_message(updates),
        writeback.author,
        None if before_push is None else _telling(before_push, applicable),
    )
    # None: by the time of the commit the files held something else; doubt, so the cluster waits a cycle.
    return WritebackResult(commit, applicable if commit is not None else (), already, notes)
