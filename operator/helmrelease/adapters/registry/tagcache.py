"""What each tag pointed at when we last looked: tag -> manifest digest -> build time, kept across restarts.

Why: a scan with ``created`` ordering needs the build time of every eligible tag, and asking the registry
for each costs one request per tag per cycle. Tags rarely move, so the scan re-checks only a few per cycle
(``automation.lookups``) and takes the rest from here. The cache lives in the sidecar's ``--state-dir`` so a
restart costs no more than a second cycle.

The file is only an optimisation, so every rule errs towards forgetting:
- bounded in entries and bytes; when full, the registry host holding the most entries loses its oldest ones
  first, so a hostile registry with a million tags only pushes out its own;
- versioned (``FORMAT_VERSION``); a file of another version, a truncated or garbage file, or one with a
  single invalid entry is discarded whole with one log line, never raised;
- written atomically (temporary file, fsync, rename), so a crash mid-write leaves the previous file;
- safe to delete at any time: the next cycle looks the tags up again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from helmrelease.adapters.files import read_bounded, remove_leftover_temporaries, write_atomically
from helmrelease.adapters.registry.formats import is_digest
from helmrelease.images.reference import CanonicalName, ImageReferenceError, is_valid_tag, parse_image_ref

_log = logging.getLogger(__name__)

FORMAT = "helmrelease-tag-cache"
FORMAT_VERSION = 1
FILE_NAME = "tag-cache.json"
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
_RECORD_OVERHEAD = 64  # JSON punctuation, the two timestamps' digits, bookkeeping: bytes per entry
_REPOSITORY_OVERHEAD = 16


@dataclass(frozen=True, slots=True)
class TagRecord:
    """A tag's manifest digest, that image's build time (None: it has none to read), and the Unix time of the
    last request that confirmed the digest."""

    digest: str
    created: datetime | None
    checked: float


class TagCacheError(ValueError):
    """A cache file that cannot be used; the caller discards it."""


def _record_size(tag: str, record: TagRecord) -> int:
    return len(tag.encode()) + len(record.digest) + _RECORD_OVERHEAD


def _name_size(name: CanonicalName) -> int:
    return len(name.host) + len(name.path) + _REPOSITORY_OVERHEAD


class TagCache:
    """Tag records per repository, bounded by ``max_entries`` and (an estimate of) ``max_bytes`` serialised."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a tag cache needs max_entries >= 1 and max_bytes >= 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._repositories: dict[CanonicalName, dict[str, TagRecord]] = {}
        self._host_entries: dict[str, int] = {}
        self._entries = 0
        self._bytes = 0
        self.changed = False  # since the last dump

    def __len__(self) -> int:
        return self._entries

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def repository_count(self) -> int:
        return len(self._repositories)

    def records(self, name: CanonicalName) -> Mapping[str, TagRecord]:
        return MappingProxyType(self._repositories.get(name, {}))

    def get(self, name: CanonicalName, tag: str) -> TagRecord | None:
        return self._repositories.get(name, {}).get(tag)

    def put(self, name: CanonicalName, tag: str, record: TagRecord) -> None:
        """Remember ``record``; an entry that is not a valid tag and digest is not kept (nor ever written)."""
        if not is_valid_tag(tag) or not is_digest(record.digest):
            return
        tags = self._repositories.get(name)
        if tags is None:
            tags = self._repositories[name] = {}
            self._bytes += _name_size(name)
        previous = tags.pop(tag, None)
        if previous is not None:
            self._forget(name, tag, previous)
        tags[tag] = record  # re-inserted last: the oldest entry of a repository is its first
        self._entries += 1
        self._host_entries[name.host] = self._host_entries.get(name.host, 0) + 1
        self._bytes += _record_size(tag, record)
        self.changed = True
        self._evict()

    def retain(self, name: CanonicalName, listed: Iterable[str]) -> None:
        """Forget the tags of ``name`` the registry no longer lists (deleted tags must not pile up)."""
        tags = self._repositories.get(name)
        if not tags:
            return
        keep = set(listed)
        for tag in [tag for tag in tags if tag not in keep]:
            self._forget(name, tag, tags.pop(tag))
            self.changed = True
        self._drop_if_empty(name)

    def _forget(self, name: CanonicalName, tag: str, record: TagRecord) -> None:
        self._entries -= 1
        self._bytes -= _record_size(tag, record)
        left = self._host_entries[name.host] - 1
        if left:
            self._host_entries[name.host] = left
        else:
            del self._host_entries[name.host]

    def _drop_if_empty(self, name: CanonicalName) -> None:
        if not self._repositories.get(name, True):
            del self._repositories[name]
            self._bytes -= _name_size(name)

    def _evict(self) -> None:
        while self._entries > self.max_entries or self._bytes > self.max_bytes:
            host = max(self._host_entries, key=self._host_entries.__getitem__)
            name = max(
                (name for name in self._repositories if name.host == host),
                key=lambda name: len(self._repositories[name]),
            )
            tags = self._repositories[name]
            oldest = next(iter(tags))
            self._forget(name, oldest, tags.pop(oldest))
            self._drop_if_empty(name)

    # --- the file format -------------------------------------------------------------------------------

    def dump(self) -> bytes:
        """The cache as the JSON document ``load`` reads; resets ``changed``."""
        document = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "repositories": [
                {
                    "name": str(name),
                    "tags": {
                        tag: [
                            record.digest,
                            record.created.isoformat() if record.created is not None else None,
                            round(record.checked, 3),
                        ]
                        for tag, record in tags.items()
                    },
                }
                for name, tags in self._repositories.items()
            ],
        }
        self.changed = False
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def load(
        cls, data: bytes, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> TagCache:
        """Parse a dump; ``TagCacheError`` naming the first problem when any part is not what we write."""
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as error:
            raise TagCacheError(f"not JSON ({error})") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise TagCacheError("not a tag cache")
        if document.get("version") != FORMAT_VERSION:
            raise TagCacheError(
                f"format version {document.get('version')!r}, this sidecar reads {FORMAT_VERSION}"
            )
        repositories = document.get("repositories")
        if not isinstance(repositories, list):
            raise TagCacheError("repositories is not a list")
        cache = cls(max_entries, max_bytes)
        for entry in repositories:
            name, tags = _parse_repository(entry)
            for tag, record in tags.items():
                cache.put(name, tag, _parse_record(tag, record))
        cache.changed = False
        return cache


def _parse_repository(entry: Any) -> tuple[CanonicalName, dict[str, Any]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise TagCacheError("a repository without a name")
    try:
        reference = parse_image_ref(entry["name"])
    except ImageReferenceError:
        raise TagCacheError(f"{entry['name']!r} is not a repository name") from None
    if reference.tag is not None or reference.digest is not None or str(reference.canonical) != entry["name"]:
        raise TagCacheError(f"{entry['name']!r} is not a canonical repository name")
    tags = entry.get("tags")
    if not isinstance(tags, dict):
        raise TagCacheError(f"{entry['name']}: tags is not an object")
    return reference.canonical, tags


def _parse_record(tag: str, value: Any) -> TagRecord:
    if not is_valid_tag(tag):
        raise TagCacheError(f"{tag!r} is not a tag")
    if not isinstance(value, list) or len(value) != 3:
        raise TagCacheError(f"{tag}: not a [digest, created, checked] triple")
    digest, created, checked = value
    if not isinstance(digest, str) or not is_digest(digest):
        raise TagCacheError(f"{tag}: {digest!r} is not a digest")
    if not isinstance(checked, int | float) or isinstance(checked, bool) or checked < 0:
        raise TagCacheError(f"{tag}: {checked!r} is not a time")
    when = None
    if created is not None:
        try:
            when = datetime.fromisoformat(created) if isinstance(created, str) else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise TagCacheError(f"{tag}: {created!r} is not a build time")
    return TagRecord(digest, when, float(checked))


class TagCacheFile:
    """The cache's file in the state directory: read once at start, written after each cycle."""

    def __init__(
        self, path: Path, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.path = path
        self.max_entries = max_entries
        self.max_bytes = max_bytes

    def load(self) -> TagCache:
        """The cache as last written, or an empty one (with one log line saying why) if it cannot be used."""
        empty = TagCache(self.max_entries, self.max_bytes)
        remove_leftover_temporaries(self.path)
        try:
            # A file of the estimated limit may be a little larger in fact; twice the limit is not ours.
            data = read_bounded(self.path, 2 * self.max_bytes)
        except OSError as error:
            _log.warning("tag cache %s cannot be read, starting empty: %s", self.path, error)
            return empty
        if data is None:
            if self.path.exists():
                _log.warning(
                    "tag cache %s is not a regular file of at most %d bytes; starting empty",
                    self.path,
                    2 * self.max_bytes,
                )
            return empty
        try:
            cache = TagCache.load(data, self.max_entries, self.max_bytes)
        except TagCacheError as error:
            _log.warning("tag cache %s discarded, starting empty: %s", self.path, error)
            return empty
        _log.info("tag cache %s: %d tags of %d repositories", self.path, len(cache), cache.repository_count)
        return cache

    def save(self, data: bytes) -> None:
        """Write a ``TagCache.dump()`` atomically; raises ``OSError``."""
        write_atomically(self.path, data)
