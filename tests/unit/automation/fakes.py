"""In-memory stand-ins for the Kubernetes API, the registries and the git repository.

``FakeKube`` applies JSON patches the way kube-apiserver does (a failed ``test`` is a bare 422 ``Invalid``)
and keeps Events; ``FakeRegistry`` answers tag lists and build times and counts what it was asked.
"""

from __future__ import annotations

import copy
import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from helmrelease.adapters.git import (
    DEFAULT_AUTHOR,
    Author,
    BeforePush,
    ChangedFile,
    CommitResult,
    ManifestEdit,
)
from helmrelease.adapters.kube import AlreadyExists, Invalid, KubeError, NotFound, ObjectRef
from helmrelease.adapters.registry import (
    BasicCredentials,
    RegistryError,
    RegistryNotFound,
    RegistryUnauthorized,
)
from helmrelease.adapters.registry.tagcache import TagRecord
from helmrelease.images.reference import CanonicalName

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def at(minutes: int) -> datetime:
    """A build time ``minutes`` after ``T0``: greater is newer."""
    return T0 + timedelta(minutes=minutes)


def release(
    name: str,
    values: dict[str, Any],
    annotations: dict[str, str] | None = None,
    *,
    namespace: str = "apps",
    **spec: Any,
) -> dict[str, Any]:
    """A HelmRelease object as the API returns it."""
    return {
        "apiVersion": "helm.fluxcd.io/v1",
        "kind": "HelmRelease",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "annotations": dict(annotations or {}),
        },
        "spec": {"chart": {"name": "app", "version": "1.0.0"}, "values": values, **spec},
    }


def _pointer_keys(pointer: str) -> list[str]:
    return [key.replace("~1", "/").replace("~0", "~") for key in pointer.split("/")[1:]]


def _selected(obj: dict[str, Any], selector: str | None) -> bool:
    """The two label selectors the sidecar sends (``api.sharding.shard_selector``): ``!key`` and ``key=value``."""
    labels = obj["metadata"].get("labels") or {}
    if not selector:
        return True
    if selector.startswith("!"):
        return selector[1:] not in labels
    key, _, value = selector.partition("=")
    return labels.get(key) == value


@dataclass
class FakeKube:
    """HelmReleases, Secrets and ServiceAccounts in memory; Events and calls recorded."""

    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    accounts: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    list_errors: dict[str | None, KubeError] = field(default_factory=dict)
    patch_error: KubeError | None = None
    before_patch: Callable[[FakeKube], None] | None = None
    events: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: The keys of the Events posted with one (their names derive from it, so a second is refused).
    event_keys: set[str] = field(default_factory=set)
    event_error: KubeError | None = None
    patches: list[list[dict[str, Any]]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    selectors: list[str | None] = field(default_factory=list)

    def add(self, *objects: dict[str, Any]) -> FakeKube:
        for obj in objects:
            self.objects[obj["metadata"]["namespace"], obj["metadata"]["name"]] = copy.deepcopy(obj)
        return self

    def values(self, name: str, namespace: str = "apps") -> dict[str, Any]:
        values: dict[str, Any] = self.objects[namespace, name]["spec"]["values"]
        return values

    def reasons(self, name: str | None = None) -> list[str]:
        return [reason for obj, _, reason, _ in self.events if name in (None, obj)]

    async def list_helmreleases(
        self, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        self.calls["list"] += 1
        self.selectors.append(label_selector)
        if namespace in self.list_errors:
            raise self.list_errors[namespace]
        return [
            copy.deepcopy(obj)
            for (ns, _), obj in sorted(self.objects.items())
            if namespace in (None, ns) and _selected(obj, label_selector)
        ]

    async def get_helmrelease(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls["get"] += 1
        if (namespace, name) not in self.objects:
            raise NotFound(f"HelmRelease {namespace}/{name}: not found", 404)
        return copy.deepcopy(self.objects[namespace, name])

    async def json_patch_helmrelease(
        self, namespace: str, name: str, operations: list[dict[str, Any]]
    ) -> None:
        self.calls["patch"] += 1
        self.patches.append(operations)
        if self.before_patch is not None:
            hook, self.before_patch = self.before_patch, None
            hook(self)
        if self.patch_error is not None:
            raise self.patch_error
        patched = copy.deepcopy(self.objects[namespace, name])
        for operation in operations:
            *parents, last = _pointer_keys(operation["path"])
            node = patched
            for key in parents:
                node = node.get(key, {}) if isinstance(node, dict) else {}
            if operation["op"] == "test" and (
                not isinstance(node, dict) or node.get(last) != operation["value"]
            ):
                raise Invalid(f"HelmRelease {namespace}/{name}: the server rejected our request", 422)
            if operation["op"] == "replace":
                if not isinstance(node, dict) or last not in node:
                    raise Invalid(f"HelmRelease {namespace}/{name}: the server rejected our request", 422)
                node[last] = operation["value"]
            if operation["op"] == "add":
                if not isinstance(node, dict):
                    raise Invalid(f"HelmRelease {namespace}/{name}: the server rejected our request", 422)
                node[last] = operation["value"]
        self.objects[namespace, name] = patched

    async def post_event(
        self, ref: ObjectRef, event_type: str, reason: str, message: str, *, key: str | None = None
    ) -> None:
        self.calls["event"] += 1
        if self.event_error is not None:
            raise self.event_error
        if key is not None:
            if key in self.event_keys:
                raise AlreadyExists(f"Event for {ref.name}: already exists", 409)
            self.event_keys.add(key)
        self.events.append((ref.name, event_type, reason, message))

    async def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        self.calls[f"secret {namespace}/{name}"] += 1
        if (namespace, name) not in self.secrets:
            raise NotFound(f"Secret {namespace}/{name}: not found", 404)
        return dict(self.secrets[namespace, name])

    async def service_account_pull_secrets(self, namespace: str, name: str) -> list[str]:
        self.calls[f"account {namespace}/{name}"] += 1
        if (namespace, name) not in self.accounts:
            raise NotFound(f"ServiceAccount {namespace}/{name}: not found", 404)
        return list(self.accounts[namespace, name])


@dataclass
class FakeRegistry:
    """Repositories by canonical name (``host/path``) with tags and build times; also its own ``cycle()``.

    A repository in ``protected`` answers only to those credentials; one in ``failures`` always fails.
    """

    repositories: dict[str, dict[str, datetime | None]] = field(default_factory=dict)
    protected: dict[str, BasicCredentials] = field(default_factory=dict)
    failures: dict[str, RegistryError] = field(default_factory=dict)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    cycles: int = 0
    #: Manifest digests by repository and tag; a tag without one has a digest made of its name and time.
    digests: dict[str, dict[str, str]] = field(default_factory=dict)
    checkpoints: int = 0
    known: dict[str, dict[str, TagRecord]] = field(default_factory=dict)

    def cycle(self) -> FakeRegistry:
        self.cycles += 1
        return self

    async def checkpoint(self) -> None:
        self.checkpoints += 1

    def known_builds(self, name: CanonicalName) -> Mapping[str, TagRecord]:
        """What a test put in ``known`` (``RegistryPool`` keeps the real tag cache)."""
        return self.known.get(str(name), {})

    def _check(self, name: CanonicalName, credentials: BasicCredentials | None) -> dict[str, datetime | None]:
        key = str(name)
        if key in self.failures:
            raise self.failures[key]
        if key in self.protected and self.protected[key] != credentials:
            raise RegistryUnauthorized(name.host, name.path, "tag list: HTTP 401", status=401)
        if key not in self.repositories:
            raise RegistryNotFound(name.host, name.path, "tag list: HTTP 404", status=404)
        return self.repositories[key]

    async def list_tags(self, name: CanonicalName, credentials: BasicCredentials | None) -> tuple[str, ...]:
        self.requests["tags", str(name)] += 1
        return tuple(self._check(name, credentials))

    async def image_created(
        self, name: CanonicalName, tag: str, credentials: BasicCredentials | None
    ) -> datetime | None:
        self.requests["created", f"{name}:{tag}"] += 1
        tags = self._check(name, credentials)
        if tag not in tags:
            raise RegistryNotFound(name.host, name.path, f"manifest {tag}: HTTP 404", status=404)
        return tags[tag]

    def digest_of(self, name: str, tag: str) -> str:
        given = self.digests.get(name, {}).get(tag)
        if given is not None:
            return given
        created = self.repositories[name][tag]
        return "sha256:" + hashlib.sha256(f"{name}:{tag}:{created}".encode()).hexdigest()

    async def tag_digest(self, name: CanonicalName, tag: str, credentials: BasicCredentials | None) -> str:
        self.requests["digest", f"{name}:{tag}"] += 1
        tags = self._check(name, credentials)
        if tag not in tags:
            raise RegistryNotFound(name.host, name.path, f"manifest {tag}: HTTP 404", status=404)
        return self.digest_of(str(name), tag)


@dataclass
class FakeRepository:
    """A worktree in a temporary directory; ``apply_change`` runs the edit once and records the commit."""

    worktree: Path
    messages: list[str] = field(default_factory=list)
    authors: list[Author] = field(default_factory=list)
    written: list[ChangedFile] = field(default_factory=list)
    syncs: int = 0
    branch: str = "main"
    #: Commits the remote branch holds (what ``branch_holds`` answers from).
    pushed: list[str] = field(default_factory=list)
    #: Raised by the push, after ``before_push`` had the commit (a push killed or never answered).
    push_error: Exception | None = None
    sha: str = "c0ffee" * 6 + "c0ff"

    async def sync(self) -> str:
        self.syncs += 1
        return "head"

    async def apply_change(
        self,
        edit: ManifestEdit,
        message: str,
        author: Author = DEFAULT_AUTHOR,
        before_push: BeforePush | None = None,
    ) -> CommitResult | None:
        files: Sequence[ChangedFile] = edit(self.worktree)
        if not files:
            return None
        if before_push is not None:
            await before_push(self.sha)
        if self.push_error is not None:
            raise self.push_error
        self.messages.append(message)
        self.authors.append(author)
        self.written.extend(files)
        self.pushed.append(self.sha)
        return CommitResult(self.sha, self.branch, tuple(f.path for f in files), 1)

    async def branch_holds(self, sha: str) -> bool:
        return sha in self.pushed
