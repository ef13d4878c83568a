"""The news the sidecar owes: each tag move and each git commit, recorded before it is made, removed once told.

Why: the sidecar tells a move (``ImageUpdated``) or a commit (``ImageGitCommitted``) after it made it. Killed in
between, it restarts to a release that already holds the new tag, or a branch that already holds the commit, so
nothing is moved and nothing would ever say it was. So before acting it records what it is about to do in
``--state-dir`` (``pending-moves.json``); the next cycle settles what a crash left there:

=============================  ===================================================  ==========================
record                         what the cluster / the branch shows                  what happens
=============================  ===================================================  ==========================
tag moves (cluster)            the object (same uid) holds each new value and the   the missing Events, one
                               ``written.<container>`` record of the move           per move still visible
tag moves (cluster)            old values, other values, another object, none       dropped: the cycle decides
                                                                                    afresh, nothing is told
commit (git)                   the branch holds the commit                          ``ImageGitCommitted``
commit (git)                   it does not (killed before the push, or refused)     dropped
=============================  ===================================================  ==========================

then the record is removed. Each Event's name derives from what it tells (the object's uid, the resourceVersion
the patch tested and the move, or the commit), so an Event posted just before a kill is found there (409
``AlreadyExists``) rather than told twice. The decision (`events_to_tell`) is pure; the file follows the rules
of the other state files: versioned (another version or any invalid entry discards the whole file, said in
one log line), bounded in entries and bytes, written atomically, safe to delete (what is lost is only the
Events of moves a crash interrupted).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from helmrelease.adapters.files import read_bounded, remove_leftover_temporaries, write_atomically
from helmrelease.images.annotations import WRITTEN_PREFIX
from helmrelease.images.detect import ValuePath

_log = logging.getLogger(__name__)

FORMAT = "helmrelease-pending-moves"
FORMAT_VERSION = 1
FILE_NAME = "pending-moves.json"
#: One record of each kind per object at most, removed as soon as it is told: far more than any cycle holds.
MAX_ENTRIES = 10_000
MAX_FILE_BYTES = 16 * 1024 * 1024
#: An Event message is cut at this length anyway (``KubeClient.post_event``).
MAX_TEXT = 1024


class News(StrEnum):
    """What a record tells once settled."""

    MOVES = "moves"  # tag moves patched into the cluster: one ImageUpdated Event each
    COMMIT = "commit"  # a commit pushed to git: one ImageGitCommitted Event


@dataclass(frozen=True)
class PendingMove:
    """One container's move: the values it writes (path → new value), the ``written`` record, the message."""

    container: str
    values: tuple[tuple[ValuePath, str], ...]
    old_version: str
    new_version: str
    summary: str


@dataclass(frozen=True)
class Pending:
    """News about one object not told yet. ``base`` makes it unique: the resourceVersion the patch of
    ``MOVES`` tested, or the sha of the ``COMMIT`` (the same move made again later is other news)."""

    news: News
    namespace: str
    name: str
    uid: str
    base: str
    moves: tuple[PendingMove, ...]
    branch: str = ""

    @property
    def slot(self) -> tuple[str, News]:
        """One record of each kind per object: a later attempt replaces an earlier one."""
        return (self.uid, self.news)


@dataclass(frozen=True)
class Tell:
    """One Event owed: its news, message and the key its name is derived from."""

    news: News
    message: str
    key: str


def commit_message(sha: str, branch: str, summaries: Sequence[str]) -> str:
    """The ``ImageGitCommitted`` message: ``committed <sha> to <branch>: <move>; <move>``."""
    return f"committed {sha[:12]} to {branch}: " + "; ".join(summaries)


def move_tells(pending: Pending) -> tuple[Tell, ...]:
    """Every Event ``pending`` stands for, as if all of it happened."""
    if pending.news is News.COMMIT:
        message = commit_message(pending.base, pending.branch, [move.summary for move in pending.moves])
        return (Tell(News.COMMIT, message, f"{pending.uid}/commit/{pending.base}"),)
    return tuple(
        Tell(
            News.MOVES,
            move.summary,
            f"{pending.uid}/{pending.base}/{move.container}/{move.old_version}/{move.new_version}",
        )
        for move in pending.moves
    )


def _get(node: object, path: Sequence[str]) -> object:
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


def _holds(obj: Mapping[str, Any], move: PendingMove) -> bool:
    """The object holds the move's values and its ``written`` record: the sidecar's patch landed (both are
    written by one patch, so a user setting the same tag by hand does not pass for it)."""
    values = _get(obj, ("spec", "values"))
    written = _get(obj, ("metadata", "annotations", WRITTEN_PREFIX + move.container))
    return written == move.new_version and all(_get(values, path) == new for path, new in move.values)


def events_to_tell(
    pending: Pending, obj: Mapping[str, Any] | None, *, in_branch: bool = False
) -> tuple[Tell, ...]:
    """The Events a record left by a crash still owes (see the module's table); none: drop it.

    ``obj`` is the object as it is now (None: gone); ``in_branch`` whether the branch holds the commit."""
    if obj is None or _get(obj, ("metadata", "uid")) != pending.uid:
        return ()  # deleted, or deleted and created again: nothing to tell on
    if pending.news is News.COMMIT:
        return move_tells(pending) if in_branch else ()
    return tuple(
        tell for tell, move in zip(move_tells(pending), pending.moves, strict=True) if _holds(obj, move)
    )


# --- the records, in memory and in the file ----------------------------------------------------------------


class JournalError(ValueError):
    """A journal file that cannot be used; the caller discards it."""


class Journal:
    """The records not yet settled, by slot, oldest first; bounded by ``limit`` (the oldest goes first)."""

    def __init__(self, entries: Sequence[Pending] = (), limit: int = MAX_ENTRIES) -> None:
        self.limit = limit
        self._entries: dict[tuple[str, News], Pending] = {}
        for entry in entries:
            self.record(entry)

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> tuple[Pending, ...]:
        return tuple(self._entries.values())

    def record(self, pending: Pending) -> None:
        self._entries.pop(pending.slot, None)
        self._entries[pending.slot] = pending
        while len(self._entries) > self.limit:
            dropped = next(iter(self._entries))
            _log.warning("pending moves: more than %d; forgetting the oldest, of %s", self.limit, dropped[0])
            del self._entries[dropped]

    def remove(self, pending: Pending) -> bool:
        """Remove ``pending`` if it is still the record of its slot; whether it was."""
        if self._entries.get(pending.slot) != pending:
            return False
        del self._entries[pending.slot]
        return True

    def dump(self) -> bytes:
        entries = [
            {
                "news": entry.news.value,
                "namespace": entry.namespace,
                "name": entry.name,
                "uid": entry.uid,
                "base": entry.base,
                "branch": entry.branch,
                "moves": [
                    {
                        "container": move.container,
                        "values": [[list(path), new] for path, new in move.values],
                        "old": move.old_version,
                        "new": move.new_version,
                        "summary": move.summary[:MAX_TEXT],
                    }
                    for move in entry.moves
                ],
            }
            for entry in self._entries.values()
        ]
        document = {"format": FORMAT, "version": FORMAT_VERSION, "entries": entries}
        return json.dumps(document, sort_keys=True, ensure_ascii=False).encode()

    @classmethod
    def load(cls, data: bytes, limit: int = MAX_ENTRIES) -> Journal:
        """Read a ``dump``; raises ``JournalError`` for anything else, whole."""
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, ValueError) as error:
            raise JournalError(f"not JSON: {error}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise JournalError("not a pending-moves file")
        if document.get("version") != FORMAT_VERSION:
            raise JournalError(f"format version {document.get('version')!r}, not {FORMAT_VERSION}")
        entries = document.get("entries")
        if not isinstance(entries, list) or len(entries) > limit:
            raise JournalError("entries is not a list of at most the limit")
        return cls([_entry(raw) for raw in entries], limit)


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise JournalError(f"{key}: {value!r} is not a string of at most {MAX_TEXT} characters")
    return value


def _entry(raw: object) -> Pending:
    if not isinstance(raw, dict):
        raise JournalError(f"entry {raw!r} is not an object")
    try:
        news = News(str(raw.get("news")))
    except ValueError:
        raise JournalError(f"news {raw.get('news')!r} is not one of {', '.join(News)}") from None
    moves = raw.get("moves")
    if not isinstance(moves, list) or not moves:
        raise JournalError("moves is not a list of moves")
    return Pending(
        news,
        _text(raw, "namespace"),
        _text(raw, "name"),
        _text(raw, "uid"),
        _text(raw, "base"),
        tuple(_move(move) for move in moves),
        _text(raw, "branch"),
    )


def _move(raw: object) -> PendingMove:
    if not isinstance(raw, dict):
        raise JournalError(f"move {raw!r} is not an object")
    values = raw.get("values")
    if not isinstance(values, list):
        raise JournalError("values is not a list")
    pairs: list[tuple[ValuePath, str]] = []
    for pair in values:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not isinstance(pair[0], list)
            or not all(isinstance(key, str) for key in pair[0])
            or not isinstance(pair[1], str)
        ):
            raise JournalError(f"value {pair!r} is not [path, new value]")
        pairs.append((tuple(pair[0]), pair[1]))
    return PendingMove(
        _text(raw, "container"), tuple(pairs), _text(raw, "old"), _text(raw, "new"), _text(raw, "summary")
    )


class JournalFile:
    """The journal's file in the state directory: read once at start, written at each record and removal."""

    def __init__(self, path: Path, limit: int = MAX_ENTRIES, max_bytes: int = MAX_FILE_BYTES) -> None:
        self.path = path
        self.limit = limit
        self.max_bytes = max_bytes

    def load(self) -> Journal:
        """The journal as last written, or an empty one (with one log line saying why) if it cannot be used."""
        empty = Journal(limit=self.limit)
        remove_leftover_temporaries(self.path)
        try:
            data = read_bounded(self.path, self.max_bytes)
        except OSError as error:
            _log.warning("pending moves %s cannot be read, starting empty: %s", self.path, error)
            return empty
        if data is None:
            if self.path.exists():
                _log.warning(
                    "pending moves %s is not a regular file of at most %d bytes; starting empty",
                    self.path,
                    self.max_bytes,
                )
            return empty
        try:
            journal = Journal.load(data, self.limit)
        except JournalError as error:
            _log.warning("pending moves %s discarded, starting empty: %s", self.path, error)
            return empty
        _log.info("pending moves %s: %d records to settle", self.path, len(journal))
        return journal

    def save(self, data: bytes) -> None:
        """Write a ``Journal.dump()`` atomically; raises ``OSError``."""
        write_atomically(self.path, data)
