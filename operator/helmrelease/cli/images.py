"""``helmrelease images ...``: image tooling for users and CI pipelines.

- ``scan FILE``: the images of every HelmRelease in a YAML file, as JSON (problems on stderr).
- ``filter POLICY``: the tags on stdin that a policy admits, best first for ``semver:`` policies.
- ``update PATH ...``: set one container's tag in the manifests under PATH, changing nothing else; with
  ``--to-latest`` the tag is the newest the registry holds under the release's policy (never a downgrade).
- ``list``: every HelmRelease in the cluster with its images, policies, automation and the newest eligible
  tag in the registry (like ``fluxctl list-images``), as a table or ``-o json``.

Exit codes: 0 done; 1 nothing matched (no eligible tag, no such HelmRelease or container, a locked release);
2 bad input (a policy or tag that does not parse, an unreadable file, an image whose tag cannot be edited
safely, bad flags); 3 the registry or the cluster could not be asked.

This module only parses and prints: the walk is ``adapters.files.manifest_files`` (the one git write-back
uses), the edit ``automation.tag_update.update_image_tag``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from prometheus_client import CollectorRegistry

from helmrelease.adapters.files import read_text
from helmrelease.adapters.kube import KubeClient, KubeError, api_client
from helmrelease.adapters.registry import CredentialStore, RegistryConfig, RegistryMetrics
from helmrelease.automation import ImageScan, ImageScanner, ImageTarget, RegistryPool
from helmrelease.automation.inspect import ReleaseReport, inspect_releases
from helmrelease.automation.tag_update import declared_targets, find_declarations, update_image_tag
from helmrelease.cli.image_policy import (
    add_kubeconfig_argument,
    add_registry_arguments,
    operator_credentials,
    registry_config,
)
from helmrelease.cli.output import table
from helmrelease.images.annotations import AutomationSettings, effective_policy, read_automation_settings
from helmrelease.images.detect import DetectedImage, dotted
from helmrelease.images.manifests import (
    DEFAULT_NAMESPACE,
    EditStatus,
    ManifestError,
    ReleaseId,
    ReleaseImages,
    read_releases,
)
from helmrelease.images.policy import PolicyError, TagOrder, parse_policy
from helmrelease.images.reference import ImageReferenceError
from helmrelease.images.select import NoChangeReason, TagCandidate, rank_tags

EXIT_OK = 0
EXIT_NO_MATCH = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3


def _fail(command: str, message: str) -> int:
    print(f"helmrelease images {command}: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


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
        "locked": settings.locked,
        "paused": settings.paused.get(image.container),
        "policy": settings.policy_text_for(image.container),
        "effective_policy": effective_policy(settings, image).as_json(),
        "warnings": warnings,
    }


def run_scan(args: argparse.Namespace) -> int:
    """Print every image of every HelmRelease in the file as one JSON array."""
    try:
        text = sys.stdin.read() if args.file == "-" else read_text(Path(args.file))
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


def _apply_update(
    path: Path,
    release: ReleaseId,
    container: str,
    tag: str,
    default_namespace: str,
    digest: str | None = None,
) -> int:
    """Edit the manifests under ``path``, print what happened to each file, and return the exit code."""
    try:
        report = update_image_tag(
            path,
            release=release,
            container=container,
            tag=tag,
            default_namespace=default_namespace,
            digest=digest,
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


def run_update(args: argparse.Namespace) -> int:
    """Offline edit of the manifests under PATH; prints each file it changed."""
    path = Path(args.path)
    if not path.exists():
        return _fail("update", f"{path} does not exist")
    release = ReleaseId(args.namespace, args.name)
    if args.to_latest:
        return _update_to_latest(args, path, release)
    return _apply_update(path, release, args.container, args.tag, args.default_namespace)


# --- update --to-latest ---------------------------------------------------------------------------


async def _scan_one(target: ImageTarget, config: RegistryConfig, credentials: CredentialStore) -> ImageScan:
    pool = RegistryPool(config, RegistryMetrics.create(CollectorRegistry()))
    try:
        return await ImageScanner(pool.cycle()).scan(target, credentials)
    finally:
        await pool.close()


def _update_to_latest(args: argparse.Namespace, path: Path, release: ReleaseId) -> int:
    """Ask the registry for the best tag under the release's own policy, then edit like ``--tag``."""
    declarations = find_declarations(path, release, args.default_namespace)
    if not declarations:
        print(f"helmrelease images update: no HelmRelease {release} under {path}", file=sys.stderr)
        return EXIT_NO_MATCH
    found = declared_targets(declarations, args.container)
    if not found:
        print(f"helmrelease images update: {release} has no image {args.container!r}", file=sys.stderr)
        return EXIT_NO_MATCH
    if len({(str(target.image.ref), target.policy_text) for _, target in found}) > 1:
        return _fail("update", f"{release} {args.container} is declared with different images or policies")
    settings, target = found[0]
    if target.policy is None:
        return _fail("update", f"{release} {target.policy_error}")
    if not target.image.automatable:
        return _fail("update", f"{release} {args.container}: {'; '.join(target.image.warnings)}")
    if settings.locked:
        why = f": {settings.locked_msg}" if settings.locked_msg else ""
        print(f"helmrelease images update: {release} is locked{why}; use --tag to set a tag", file=sys.stderr)
        return EXIT_NO_MATCH
    try:
        scan = asyncio.run(_scan_one(target, registry_config(args), operator_credentials(args.docker_config)))
    except (ValueError, OSError) as error:
        return _fail("update", str(error))
    if scan.error is not None:
        print(f"helmrelease images update: {scan.error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    move = scan.move
    if move is None:
        decided = scan.decision
        detail = decided.detail if decided is not None else "no decision"
        if decided is not None and decided.reason in (
            NoChangeReason.ALREADY_NEWEST,
            NoChangeReason.WOULD_DOWNGRADE,
        ):
            print(f"unchanged {release} {args.container}: {detail}")
            return EXIT_OK
        print(f"helmrelease images update: {release} {args.container}: {detail}", file=sys.stderr)
        return EXIT_NO_MATCH
    return _apply_update(path, release, args.container, move.new_tag, args.default_namespace, move.new_digest)


# --- list -----------------------------------------------------------------------------------------


def _mode(settings: AutomationSettings) -> str:
    if settings.ignore:
        return "ignored"
    if settings.locked:
        return "locked"
    return "automated" if settings.automated else "manual"


def _status(scan: ImageScan | None, error: str | None) -> tuple[str | None, str]:
    """(reason, sentence) for one image: an error, what the update would be, or why there is none."""
    if error is not None:
        return "Error", error
    if scan is None or scan.error is not None:
        return "Error", scan.error if scan is not None and scan.error else "not scanned"
    if not scan.target.image.automatable:
        return "NotAutomatable", "; ".join(scan.target.image.warnings)
    if scan.target.paused is not None:
        return "Paused", f"paused: {scan.target.paused}"
    if scan.step_back is not None:
        return (
            "SetBack",
            f"set back to {scan.step_back.current} from {scan.step_back.written}; the sidecar pauses it",
        )
    decision = scan.decision
    if decision is None:
        return None, "-"
    if decision.new_tag is not None:
        return "UpdateAvailable", f"update to {decision.new_tag}"
    if decision.reason is NoChangeReason.ALREADY_NEWEST:
        return decision.reason.value, "up to date"
    return decision.reason.value if decision.reason else None, decision.detail


def list_records(reports: Sequence[ReleaseReport]) -> list[dict[str, Any]]:
    """One record per image of every release, for ``-o json`` and the table."""
    records = []
    for report in reports:
        view = report.view
        scans: dict[str, ImageScan] = {scan.target.container: scan for scan in report.scans}
        for target in view.targets:
            scan = scans.get(target.container)
            reason, detail = _status(scan, report.error)
            newest = scan.newest if scan is not None else None
            move = scan.move if scan is not None else None
            records.append(
                {
                    "namespace": view.release.namespace,
                    "name": view.release.name,
                    "container": target.container,
                    "image": str(target.image.ref),
                    "tag_path": dotted(target.image.tag_location.path) if target.image.tag_location else None,
                    "policy": target.policy_text,
                    "automated": view.settings.automated,
                    "locked": view.settings.locked,
                    "ignored": view.settings.ignore,
                    "mode": _mode(view.settings),
                    "latest": newest.tag if newest is not None else None,
                    "latest_created": newest.created.isoformat() if newest and newest.created else None,
                    "paused": target.paused,
                    "update": move.new_version if move is not None else None,
                    "reason": reason,
                    "detail": detail,
                }
            )
    return records


LIST_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], object]], ...] = (
    ("RELEASE", lambda r: f"{r['namespace']}/{r['name']}"),
    ("CONTAINER", lambda r: r["container"]),
    ("IMAGE", lambda r: r["image"]),
    ("POLICY", lambda r: r["policy"]),
    ("MODE", lambda r: r["mode"]),
    ("LATEST", lambda r: r["latest"] or "-"),
    ("STATUS", lambda r: r["detail"]),
)


def list_table(records: Sequence[dict[str, Any]]) -> str:
    """Aligned columns, as ``kubectl get`` prints them."""
    return table(
        [header for header, _ in LIST_COLUMNS],
        [[str(cell(record)) for _, cell in LIST_COLUMNS] for record in records],
    )


async def _inspect_cluster(
    args: argparse.Namespace, config: RegistryConfig, credentials: CredentialStore
) -> list[ReleaseReport]:
    api = api_client(args.kubeconfig)
    pool = RegistryPool(config, RegistryMetrics.create(CollectorRegistry()))
    kube = KubeClient(api)
    try:
        return await inspect_releases(
            kube,
            pool.cycle(),
            namespaces=tuple(dict.fromkeys(args.namespace)),
            operator_credentials=credentials,
        )
    finally:
        await pool.close()
        await kube.close()
        api.close()  # type: ignore[no-untyped-call]


def run_list(args: argparse.Namespace) -> int:
    """The images of the cluster's HelmReleases and the newest tag each policy admits."""
    try:
        config, credentials = registry_config(args), operator_credentials(args.docker_config)
    except (ValueError, OSError) as error:
        return _fail("list", str(error))
    try:
        reports = asyncio.run(_inspect_cluster(args, config, credentials))
    except KubeError as error:  # ClientConfigError included: no kubeconfig, no service account
        print(f"helmrelease images list: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    records = list_records(reports)
    if args.output == "json":
        print(json.dumps(records, indent=2))
    else:
        print(list_table(records))
    return EXIT_OK


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
    tag_source.add_argument(
        "--to-latest",
        action="store_true",
        help="the newest tag in the registry that the release's policy admits (never a downgrade)",
    )
    _add_default_namespace(parser)
    add_registry_arguments(parser)
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

    listing = sub.add_parser(
        "list", help="the images of the cluster's HelmReleases and the newest tag their policies admit"
    )
    listing.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="only this namespace (repeatable); default: all",
    )
    listing.add_argument("--output", "-o", choices=("table", "json"), default="table")
    add_kubeconfig_argument(listing)
    add_registry_arguments(listing)
    listing.set_defaults(handler=run_list)
