"""Registry credentials from ``kubernetes.io/dockerconfigjson`` Secret content, matched the way kubelet does.

The kube adapter reads Secrets; this module takes their parsed ``.dockerconfigjson`` (or legacy
``.dockercfg``) JSON, so it stays free of Kubernetes and easy to test. Keys may be ``host``, ``host:port``,
``https://host/v1/``, a Docker Hub alias, a ``*.example.com`` glob, or carry a repository path prefix
(``host/team``); the most specific entry that matches an image wins.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Protocol

from helmrelease.adapters.credentials import BasicCredentials
from helmrelease.images.reference import DOCKER_HUB, CanonicalName

# The hosts `docker login` and friends have stored Docker Hub credentials under over the years.
_DOCKER_HUB_CONFIG_HOSTS = frozenset(
    {DOCKER_HUB, "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
_LEGACY_API_PATHS = frozenset({"v1", "v2"})


class DockerConfigError(ValueError):
    """Secret content that is not a docker config, or an entry whose credentials cannot be read."""


class CredentialProvider(Protocol):
    """Where the registry client gets credentials: a fixed store, or one the kube adapter keeps current."""

    def credentials_for(self, name: CanonicalName) -> BasicCredentials | None: ...


@dataclass(frozen=True)
class AuthEntry:
    """One ``auths`` entry: which images it covers and what to send for them."""

    host_pattern: str
    path_prefix: str
    credentials: BasicCredentials

    def matches(self, name: CanonicalName) -> bool:
        """Host (glob per dot-separated label, port exact) and path prefix (whole components) both match."""
        return _host_matches(self.host_pattern, name.host) and (
            not self.path_prefix
            or name.path == self.path_prefix
            or name.path.startswith(self.path_prefix + "/")
        )

    @property
    def specificity(self) -> tuple[int, bool]:
        """Longer path prefixes beat shorter ones; a literal host beats a glob."""
        return len(self.path_prefix), not any(char in self.host_pattern for char in "*?[")


def _split_port(host: str) -> tuple[str, str]:
    if host.startswith("["):  # [IPv6]:port
        bracket = host.find("]")
        return host[: bracket + 1], host[bracket + 2 :] if bracket >= 0 else ""
    name, _, port = host.partition(":")
    return name, port


def _host_matches(pattern: str, host: str) -> bool:
    pattern_host, pattern_port = _split_port(pattern)
    target_host, target_port = _split_port(host)
    if pattern_host.startswith("["):  # an IPv6 literal: its brackets are not a glob character class
        return (pattern_host, pattern_port) == (target_host, target_port)
    pattern_labels, target_labels = pattern_host.split("."), target_host.split(".")
    return (
        pattern_port == target_port
        and len(pattern_labels) == len(target_labels)
        and all(fnmatchcase(label, glob) for glob, label in zip(pattern_labels, target_labels, strict=True))
    )


def parse_auth_key(key: str) -> tuple[str, str]:
    """The (host pattern, path prefix) an ``auths`` key covers: no scheme, no legacy ``/v1/``, Hub folded."""
    text = key.strip()
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
    host, _, path = text.partition("/")
    host = host.lower()
    path = path.strip("/")
    if path in _LEGACY_API_PATHS:
        path = ""
    return (DOCKER_HUB if host in _DOCKER_HUB_CONFIG_HOSTS else host), path


def _entry_credentials(key: str, entry: object) -> BasicCredentials | None:
    """``auth`` (base64 ``user:password``) wins over ``username``/``password``, as in kubelet."""
    if not isinstance(entry, Mapping):
        raise DockerConfigError(f"auths entry {key!r} is not an object")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise DockerConfigError(
                f"auths entry {key!r}: 'auth' is not base64 of 'username:password'"
            ) from None
        username, colon, password = decoded.partition(":")
        if not colon:
            raise DockerConfigError(f"auths entry {key!r}: 'auth' decodes to no 'username:password' pair")
        return BasicCredentials(username, password)
    plain_username, plain_password = entry.get("username"), entry.get("password")
    if (
        isinstance(plain_username, str)
        and isinstance(plain_password, str)
        and (plain_username or plain_password)
    ):
        return BasicCredentials(plain_username, plain_password)
    return None


def parse_docker_config(config: Mapping[str, object]) -> tuple[AuthEntry, ...]:
    """The entries of one parsed ``.dockerconfigjson`` (``{"auths": {...}}``) or legacy ``.dockercfg`` (no
    ``auths`` wrapper). Entries without a secret (identity tokens, credential helpers) are skipped."""
    auths = config.get("auths", config)
    if not isinstance(auths, Mapping):
        raise DockerConfigError("'auths' is not an object keyed by registry")
    entries = []
    for key, entry in auths.items():
        credentials = _entry_credentials(str(key), entry)
        if credentials is not None:
            host, path = parse_auth_key(str(key))
            entries.append(AuthEntry(host, path, credentials))
    return tuple(entries)


@dataclass(frozen=True)
class CredentialStore:
    """Credentials from one or more docker configs; of equally specific matches, the earliest entry wins."""

    entries: tuple[AuthEntry, ...] = ()

    @classmethod
    def from_docker_configs(cls, *configs: Mapping[str, object]) -> CredentialStore:
        """Merge parsed ``.dockerconfigjson`` documents, earlier first (e.g. in imagePullSecrets order)."""
        return cls(tuple(entry for config in configs for entry in parse_docker_config(config)))

    def credentials_for(self, name: CanonicalName) -> BasicCredentials | None:
        best: AuthEntry | None = None
        for entry in self.entries:
            if entry.matches(name) and (best is None or entry.specificity > best.specificity):
                best = entry
        return best.credentials if best is not None else None
