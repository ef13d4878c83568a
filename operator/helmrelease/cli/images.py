"""``helmrelease images ...``: offline image tooling for users and CI pipelines.

- ``scan FILE``: the images of every HelmRelease in a YAML file, as JSON (problems on stderr).
- ``filter POLICY``: the tags on stdin that a policy admits, best first for ``semver:`` policies.
- ``update PATH ...``: set one container's tag in the manifests under PATH, changing nothing else.

Exit codes: 0 done; 1 nothing matched (no eligible tag, no such HelmRelease or container); 2 bad input
(a policy or tag that does not parse, an unreadable file, an image whose tag cannot be edited safely).

The file walk and the edit are plain functions (``manifest_files``, ``update_image_tag``) so a command
that first asks a registry for the tag can reuse them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from helmrelease.images.annotations import read_automation_settings
from helmrelease.images.detect import DetectedImage, dotted
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
from helmrelease.images.policy import PolicyError, TagOrder, parse_policy
from helmrelease.images.reference import ImageReferenceError, check_tag
from helmrelease.images.select import TagCandidate, rank_tags

MANIFEST_SUFFIXES = frozenset({".yaml", ".yml"})
EXIT_OK = 0
EXIT_NO_MATCH = 1
EXIT_BAD_INPUT = 2


def _fail(command: str, message: str) -> int:
    print(f"helmrelease images {command}: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _read_text(path: Path) -> str:
    """File contents with line endings untouched (``newline=""``), so an edit keeps CRLF files CRLF."""
    with path.open(encoding="utf-8", newline="") as stream:
        return stream.read()


def _write_text(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8", newline="") as stream:
        stream.write(text)


# --- scan -----------------------------------------------------------------------------------------


def _image_record(entry: ReleaseImages, image: DetectedImage) -> dict[str, Any]:
    settings = read_automation_settings(entry.annotations)
    warnings = list(image.warnings)
    try:
        settings.policy_for(image.container)
    except PolicyError as error:
        warnings.append(f"tag policy {settings.policy_text_for(image.container)!r} does not parse: {error}")
    return {
        "namespace": entry.release.namespace,
        "name": entry.release.name,
        "container": image.container,
        "image": str(image.ref),
        "registry": image.ref.registry,
        "repository": image.ref.repository,
        "tag": image.ref.tag,
        "digest": image.ref.digest,
        "path": dotted(image.path),
        "tag_path": dotted(image.tag_location.path) if image.tag_location else None,
        "automatable": image.automatable,
        "automated": settings.automated,
        "policy": settings.policy_text_for(image.container),
        "warnings": warnings,
    }


def run_scan(args: argparse.Namespace) -> int:
    """Print every image of every HelmRelease in the file as one JSON array."""
    try:
        text = sys.stdin.read() if args.file == "-" else _read_text(Path(args.file))
        releases = read_releases(text, args.default_namespace)
    except (OSError, UnicodeDecodeError, ManifestError) as error:
        return _fail("scan", f"{args.file}: {error}")
    for entry in releases:
        for warning in read_automation_settings(entry.annotations).warnings:
            print(f"{entry.release}: {warning}", file=sys.stderr)
        for problem in entry.detection.problems:
            print(f"{entry.release}: {problem}", file=sys.stderr)
    records = [_image_record(entry, image) for entry in releases for image in entry.detection.images]
    print(json.dumps(records, indent=2))
    return EXIT_OK


# --- filter ---------------------------------------------------------------------------------------


def _tags(stream: TextIO) -> list[str]:
    """Distinct non-blank lines, in input order."""
    return list(dict.fromkeys(line.strip() for line in stream if line.strip()))


def run_filter(args: argparse.Namespace) -> int:
    """Print the tags from stdin that the policy admits; semver policies rank them best first."""
    try:
        policy = parse_policy(args.policy)
    except PolicyError as error:
        return _fail("filter", str(error))
    eligible = [tag for tag in _tags(sys.stdin) if policy.matches(tag)]
    if policy.default_order is TagOrder.SEMVER:
        eligible = [candidate.tag for candidate in rank_tags(map(TagCandidate, eligible), TagOrder.SEMVER)]
    for tag in eligible:
        print(tag)
    return EXIT_OK if eligible else EXIT_NO_MATCH


# --- update ---------------------------------------------------------------------------------------


def manifest_files(path: Path) -> Iterator[Path]:
    """``path`` itself if it is a file, else the ``*.yaml``/``*.yml`` files below it, skipping dot dirs."""
    if path.is_file():
        yield path
        return
    for candidate in sorted(path.rglob("*")):
        hidden = any(part.startswith(".") for part in candidate.relative_to(path).parts)
        if candidate.suffix in MANIFEST_SUFFIXES and candidate.is_file() and not hidden:
            yield candidate


@dataclass(frozen=True)
class FileEdit:
    """The outcome for one file that declares the HelmRelease."""

    path: Path
    edit: TagEdit


@dataclass(frozen=True)
class TagUpdateReport:
    """What an update did: files that declare the release, files refused, and files that were not YAML."""

    edits: tuple[FileEdit, ...]
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
) -> TagUpdateReport:
    """Set ``container``'s tag to ``tag`` in every manifest under ``path`` that declares ``release``.

    Files are rewritten only when their text changes. Raises ``ImageReferenceError`` for an invalid tag.
    """
    check_tag(tag)
    edits: list[FileEdit] = []
    refused: list[tuple[Path, str]] = []
    unreadable: list[tuple[Path, str]] = []
    for file in manifest_files(path):
        try:
            text = _read_text(file)
            edit = set_image_tag(
                text, release=release, container=container, tag=tag, default_namespace=default_namespace
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
            _write_text(file, edit.text)
        edits.append(FileEdit(file, edit))
    return TagUpdateReport(tuple(edits), tuple(refused), tuple(unreadable))


def run_update(args: argparse.Namespace) -> int:
    """Offline edit of the manifests under PATH; prints each file it changed."""
    path = Path(args.path)
    if not path.exists():
        return _fail("update", f"{path} does not exist")
    release = ReleaseId(args.namespace, args.name)
    try:
        report = update_image_tag(
            path,
            release=release,
            container=args.container,
            tag=args.tag,
            default_namespace=args.default_namespace,
        )
    except ImageReferenceError as error:
        return _fail("update", str(error))
    for file, reason in report.unreadable:
        print(f"skipped {file}: {reason}", file=sys.stderr)
    if path.is_file() and report.unreadable:
        return EXIT_BAD_INPUT
    for file_edit in report.edits:
        stream = (
            sys.stdout if file_edit.edit.status in (EditStatus.UPDATED, EditStatus.UNCHANGED) else sys.stderr
        )
        print(f"{file_edit.edit.status} {file_edit.path}: {file_edit.edit.detail}", file=stream)
    for file, reason in report.refused:
        print(f"refused {file}: {reason}", file=sys.stderr)
    if report.refused or report.status is EditStatus.NOT_AUTOMATABLE:
        return EXIT_BAD_INPUT
    if report.status in (EditStatus.UPDATED, EditStatus.UNCHANGED):
        return EXIT_OK
    if report.status is EditStatus.NO_RELEASE:
        print(f"helmrelease images update: no HelmRelease {release} under {path}", file=sys.stderr)
    return EXIT_NO_MATCH


# --- parser ---------------------------------------------------------------------------------------


def _add_default_namespace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--default-namespace",
        default=DEFAULT_NAMESPACE,
        help="namespace of HelmReleases whose manifest has none (default: %(default)s)",
    )


def _add_update_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``update`` parser; the tag comes from the required ``tag_source`` group (``--tag`` for now)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "update", help="set a container's image tag in HelmRelease manifests, keeping everything else"
    )
    parser.add_argument("path", help="a manifest file, or a directory searched for *.yaml and *.yml")
    parser.add_argument("--namespace", required=True, help="namespace of the HelmRelease")
    parser.add_argument("--name", required=True, help="name of the HelmRelease")
    parser.add_argument(
        "--container", required=True, help="container name (chart-image, a values key, an alias)"
    )
    tag_source = parser.add_mutually_exclusive_group(required=True)
    tag_source.add_argument("--tag", help="the tag to set")
    _add_default_namespace(parser)
    parser.set_defaults(handler=run_update)
    return parser


def register(subparsers: Any) -> None:
    """Add the ``images`` command group."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "images", help="find and update images in HelmReleases"
    )
    sub = parser.add_subparsers(dest="images_command", metavar="SUBCOMMAND", required=True)

    scan = sub.add_parser("scan", help="list the images of the HelmReleases in a YAML file, as JSON")
    scan.add_argument("file", help="a YAML file, possibly with several documents; - reads stdin")
    _add_default_namespace(scan)
    scan.set_defaults(handler=run_scan)

    filter_ = sub.add_parser("filter", help="print the tags on stdin that a policy admits")
    filter_.add_argument(
        "policy", metavar="POLICY", help="semver:..., glob:..., regex:... (as in the annotations)"
    )
    filter_.set_defaults(handler=run_filter)

    _add_update_parser(sub)
