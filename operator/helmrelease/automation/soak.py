"""When the sidecar first saw each tag: the other half of soak time (``min-age``), beside the build time.

A tag is a candidate once the later of its image's build time and its first sight is ``min-age`` ago, so
an image built long ago but pushed a minute ago (a promotion between registries, a reproducible build with
a fixed timestamp) still soaks. The record keeps only the tags a repository listed the last time it was
looked at, so it is bounded by what the registries hold; ``snapshot``/``restore`` give it to whoever keeps
it across restarts (without that, a restart makes every tag "first seen" again: moves wait, never hurry).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from helmrelease.adapters.files import read_bounded, remove_leftover_temporaries, write_atomically
from helmrelease.images.reference import CanonicalName

_log = logging.getLogger(__name__)

#: The state directory is ours, but a file there is still bounded before it is parsed.
MAX_FILE_BYTES = 64 * 1024 * 1024


def _now() -> datetime:
    return datetime.now(UTC)


class FirstSeen:
    """First sight of ``(repository, tag)``; ``clock`` gives aware UTC datetimes (tests fix it)."""

    def __init__(self, clock: Callable[[], datetime] = _now) -> None:
        self._clock = clock
        self._seen: dict[CanonicalName, dict[str, datetime]] = {}
        self.changed = False

    def observe(self, name: CanonicalName, tags: Iterable[str]) -> Mapping[str, datetime]:
        """Record the tags listed now (new ones at the current time); forget tags no longer listed."""
        known = self._seen.get(name, {})
        now = self._clock()
        current = {tag: known.get(tag, now) for tag in tags}
        if current != known:
            self.changed = True
        self._seen[name] = current
        return current

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy: ``{"host/path": {"tag": "2026-01-01T00:00:00+00:00"}}``."""
        self.changed = False
        return {
            str(name): {tag: moment.isoformat() for tag, moment in tags.items()}
            for name, tags in self._seen.items()
        }

    def restore(self, data: object) -> int:
        """Take back a ``snapshot``; entries that do not read are dropped (the tag is then seen anew).
        Returns the number of tags restored."""
        restored = 0
        if not isinstance(data, Mapping):
            return 0
        for key, tags in data.items():
            host, slash, path = str(key).partition("/")
            if not slash or not isinstance(tags, Mapping):
                continue
            entries: dict[str, datetime] = {}
            for tag, text in tags.items():
                try:
                    moment = datetime.fromisoformat(str(text))
                except ValueError:
                    continue
                if moment.tzinfo is not None:
                    entries[str(tag)] = moment
            self._seen[CanonicalName(host, path)] = entries
            restored += len(entries)
        return restored


def load_first_seen(path: Path, record: FirstSeen) -> None:
    """Fill ``record`` from ``path`` (written by ``save_first_seen``); a missing or broken file is a fresh
    start, said in the log, never a failure: the worst it costs is a soak started again."""
    remove_leftover_temporaries(path)
    try:
        raw = read_bounded(path, MAX_FILE_BYTES)
        if raw is None:
            if path.exists():
                _log.warning(
                    "%s is not a regular file under %d bytes; soak time starts afresh", path, MAX_FILE_BYTES
                )
            return
        data = json.loads(raw)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        _log.warning("cannot read %s (%s); soak time counts tags as first seen now", path, error)
        return
    _log.info("first sight of %d tags read from %s", record.restore(data), path)


def save_first_seen(path: Path, record: FirstSeen) -> None:
    """Write ``record`` to ``path`` atomically; raises ``OSError``."""
    write_atomically(path, json.dumps(record.snapshot(), sort_keys=True).encode())
