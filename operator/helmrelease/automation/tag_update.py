"""Setting one container's tag in the manifests under a path, offline: what ``helmrelease images update`` does,
reusable by any command that first chose the tag (``--to-latest`` asks a registry).

The files are those of ``adapters.files.manifest_files``, the walk git write-back uses too, so both see the same
files in one repository. The edit is ``images.manifests.set_image_tag``: one scalar changes, proven by
re-parsing; a file is rewritten only when its text changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from helmrelease.adapters.files import manifest_files, read_text, write_text
from helmrelease.automation.watched import ImageTarget, image_targets
from helmrelease.images.annotations import AutomationSettings, read_automation_settings
from helmrelease.images.manifests import (
    DEFAULT_NAMESPACE,
    EditStatus,
    ManifestError,
    ReleaseId,
    ReleaseImages,
    TagEdit,
    UnsafeEditError,
    best_status,
    read_releases,
    set_image_tag,
)
from helmrelease.images.reference import check_tag


@dataclass(frozen=True)
class FileTagEdit:
    """The outcome in one file that declares the HelmRelease."""

    path: Path
    edit: TagEdit


@dataclass(frozen=True)
class TagUpdateReport:
    """What an update did: files that declare the release, files refused, and files that were not YAML."""

    edits: tuple[FileTagEdit, ...]
    refused: tuple[tuple[Path, str], ...]
    unreadable: tuple[tuple[Path, str], ...]

    @property
    def status(self) -> EditStatus:
        """The best outcome over all files (``NO_RELEASE`` when no file declares the release)."""
        return best_status(file_edit.edit.status for file_edit in self.edits)


def update_image_tag(
    path: Path,
    *,
    release: ReleaseId,
    container: str,
    tag: str,
    default_namespace: str = DEFAULT_NAMESPACE,
    digest: str | None = None,
) -> TagUpdateReport:
    """Set ``container``'s tag to ``tag`` (pinned at ``digest`` when given) in every manifest under ``path``
    that declares ``release``.

    Files are rewritten only when their text changes. Raises ``ImageReferenceError`` for an invalid tag.
    """
    check_tag(tag)
    edits: list[FileTagEdit] = []
    refused: list[tuple[Path, str]] = []
    unreadable: list[tuple[Path, str]] = []
    for file in manifest_files(path):
        try:
            text = read_text(file)
            edit = set_image_tag(
                text,
                release=release,
                container=container,
                tag=tag,
                default_namespace=default_namespace,
                digest=digest,
            )
        except UnsafeEditError as error:
            refused.append((file, str(error)))
            continue
        except (OSError, UnicodeDecodeError, ManifestError) as error:
            unreadable.append((file, str(error).splitlines()[0]))
            continue
        if edit.status is EditStatus.NO_RELEASE:
            continue
        if edit.status is EditStatus.UPDATED:
            write_text(file, edit.text)
        edits.append(FileTagEdit(file, edit))
    return TagUpdateReport(tuple(edits), tuple(refused), tuple(unreadable))


def find_declarations(path: Path, release: ReleaseId, default_namespace: str) -> list[ReleaseImages]:
    """Every document under ``path`` that declares ``release`` (files that do not parse are skipped)."""
    found: list[ReleaseImages] = []
    for file in manifest_files(path):
        try:
            entries = read_releases(read_text(file), default_namespace)
        except (OSError, UnicodeDecodeError, ManifestError):
            continue
        found.extend(entry for entry in entries if entry.release == release)
    return found


def declared_targets(
    declarations: Sequence[ReleaseImages], container: str
) -> list[tuple[AutomationSettings, ImageTarget]]:
    """The image ``container`` in each declaration, with the automation settings it is declared with."""
    found: list[tuple[AutomationSettings, ImageTarget]] = []
    for entry in declarations:
        settings = read_automation_settings(entry.annotations)
        found.extend(
            (settings, target)
            for target in image_targets(settings, entry.detection)
            if target.container == container
        )
    return found
