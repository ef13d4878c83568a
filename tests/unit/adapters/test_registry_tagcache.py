"""The tag cache: its bounds, its file format (versioned, validated) and its atomic, crash-safe writes."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from helmrelease.adapters.registry.tagcache import (
    FORMAT,
    FORMAT_VERSION,
    TagCache,
    TagCacheError,
    TagCacheFile,
    TagRecord,
)
from helmrelease.images.reference import CanonicalName

APP = CanonicalName("reg.example.com", "team/app")
OTHER = CanonicalName("other.example.com:5000", "x/y")
BUILT = datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def record(n: int, created: datetime | None = BUILT, checked: float = 1000.0) -> TagRecord:
    return TagRecord(digest(n), created, checked)


def test_a_dump_loads_back_to_the_same_records() -> None:
    cache = TagCache()
    cache.put(APP, "1.0.0", record(1))
    cache.put(APP, "chart", record(2, created=None, checked=12.5))
    cache.put(OTHER, "v2", record(3))
    loaded = TagCache.load(cache.dump())
    assert dict(loaded.records(APP)) == {"1.0.0": record(1), "chart": record(2, None, 12.5)}
    assert dict(loaded.records(OTHER)) == {"v2": record(3)}
    assert len(loaded) == 3
    assert not loaded.changed


def test_put_replaces_a_tags_record_and_marks_the_cache_changed() -> None:
    cache = TagCache()
    cache.put(APP, "1.0.0", record(1))
    cache.dump()
    assert not cache.changed
    cache.put(APP, "1.0.0", record(2))
    assert cache.changed
    assert cache.get(APP, "1.0.0") == record(2)
    assert len(cache) == 1


@pytest.mark.parametrize(
    ("tag", "value"),
    [
        pytest.param("-bad", record(1), id="not-a-tag"),
        pytest.param("x" * 129, record(1), id="tag-too-long"),
        pytest.param("1.0", TagRecord("md5:abc", BUILT, 1.0), id="not-a-digest"),
        pytest.param("1.0", TagRecord("sha256:" + "0" * 63, BUILT, 1.0), id="short-digest"),
    ],
)
def test_entries_a_registry_could_not_have_sent_are_not_kept(tag: str, value: TagRecord) -> None:
    cache = TagCache()
    cache.put(APP, tag, value)
    assert len(cache) == 0
    assert cache.get(APP, tag) is None


def test_entries_are_bounded_and_the_largest_registry_loses_first() -> None:
    cache = TagCache(max_entries=10)
    for n in range(3):
        cache.put(APP, f"keep-{n}", record(n))
    for n in range(1000):  # a hostile registry listing a thousand tags
        cache.put(OTHER, f"spam-{n}", record(n))
    assert len(cache) == 10
    assert set(cache.records(APP)) == {"keep-0", "keep-1", "keep-2"}
    assert set(cache.records(OTHER)) == {f"spam-{n}" for n in range(993, 1000)}  # its newest


def test_bytes_are_bounded_too() -> None:
    cache = TagCache(max_bytes=2000)
    for n in range(100):
        cache.put(APP, f"t{n}" + "x" * 100, record(n))
    assert cache.size_bytes <= 2000
    assert 0 < len(cache) < 100
    assert len(cache.dump()) <= 2000


def test_tags_no_longer_listed_are_forgotten() -> None:
    cache = TagCache()
    for tag in ("a", "b", "c"):
        cache.put(APP, tag, record(1))
    cache.retain(APP, ["b", "new"])
    assert set(cache.records(APP)) == {"b"}
    cache.retain(APP, [])
    assert cache.repository_count == 0
    assert len(cache) == 0
    assert cache.size_bytes == 0


def _document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "repositories": [{"name": str(APP), "tags": {"1.0": [digest(1), BUILT.isoformat(), 5.0]}}],
    }
    document.update(changes)
    return document


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        pytest.param(b"", "not JSON", id="empty"),
        pytest.param(json.dumps(_document()).encode()[:-7], "not JSON", id="truncated"),
        pytest.param(b"\x00\xff garbage", "not JSON", id="garbage"),
        pytest.param(b"[]", "not a tag cache", id="not-an-object"),
        pytest.param(json.dumps(_document(format="other")).encode(), "not a tag cache", id="other-format"),
        pytest.param(json.dumps(_document(version=2)).encode(), "format version 2", id="newer-version"),
        pytest.param(json.dumps(_document(version="1")).encode(), "format version '1'", id="version-text"),
        pytest.param(
            json.dumps(_document(repositories={})).encode(), "repositories is not a list", id="no-list"
        ),
        pytest.param(
            json.dumps(_document(repositories=[{"name": "Not A Name", "tags": {}}])).encode(),
            "not a repository name",
            id="bad-name",
        ),
        pytest.param(
            json.dumps(_document(repositories=[{"name": "team/app", "tags": {}}])).encode(),
            "not a canonical repository name",
            id="not-canonical",
        ),
        pytest.param(
            json.dumps(
                _document(repositories=[{"name": str(APP), "tags": {"1.0": ["x", None, 1]}}])
            ).encode(),
            "not a digest",
            id="bad-digest",
        ),
        pytest.param(
            json.dumps(
                _document(repositories=[{"name": str(APP), "tags": {"1.0": [digest(1), "yesterday", 1]}}])
            ).encode(),
            "not a build time",
            id="bad-time",
        ),
        pytest.param(
            json.dumps(
                _document(
                    repositories=[{"name": str(APP), "tags": {"1.0": [digest(1), "2024-01-01T00:00:00", 1]}}]
                )
            ).encode(),
            "not a build time",
            id="naive-time",
        ),
        pytest.param(
            json.dumps(
                _document(repositories=[{"name": str(APP), "tags": {"1.0": [digest(1), None]}}])
            ).encode(),
            "triple",
            id="pair",
        ),
        pytest.param(
            json.dumps(
                _document(repositories=[{"name": str(APP), "tags": {"1.0": [digest(1), None, True]}}])
            ).encode(),
            "not a time",
            id="bool-time",
        ),
    ],
)
def test_a_file_that_is_not_what_we_write_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(TagCacheError, match=problem):
        TagCache.load(data)


def test_a_loaded_file_is_held_to_the_configured_bounds() -> None:
    cache = TagCache()
    for n in range(50):
        cache.put(APP, f"t{n}", record(n))
    assert len(TagCache.load(cache.dump(), max_entries=5)) == 5


# --- the file --------------------------------------------------------------------------------------


def test_the_file_round_trips_and_is_private(tmp_path: Path) -> None:
    state = TagCacheFile(tmp_path / "state" / "tag-cache.json")
    cache = state.load()
    assert len(cache) == 0
    cache.put(APP, "1.0", record(1))
    state.save(cache.dump())
    assert state.path.stat().st_mode & 0o777 == 0o600
    assert dict(state.load().records(APP)) == {"1.0": record(1)}
    assert [p.name for p in state.path.parent.iterdir()] == ["tag-cache.json"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b'{"format": "helmrelease-tag-cache", "vers', "not JSON", id="truncated"),
        pytest.param(json.dumps(_document(version=99)).encode(), "format version 99", id="unknown-version"),
    ],
)
def test_an_unusable_file_is_discarded_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, message: str
) -> None:
    path = tmp_path / "tag-cache.json"
    path.write_bytes(content)
    with caplog.at_level(logging.INFO, logger="helmrelease.adapters.registry.tagcache"):
        cache = TagCacheFile(path).load()
    assert len(cache) == 0
    assert len(caplog.records) == 1
    assert caplog.records[0].levelno == logging.WARNING
    assert message in caplog.records[0].getMessage()


def test_a_deleted_file_means_an_empty_cache_without_complaint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        assert len(TagCacheFile(tmp_path / "missing.json").load()) == 0
    assert caplog.records == []


def test_a_file_too_large_or_not_regular_is_not_read(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 5000)
    assert len(TagCacheFile(big, max_bytes=1000).load()) == 0
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    assert len(TagCacheFile(fifo).load()) == 0  # does not block on the FIFO


def test_a_crash_mid_write_leaves_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = TagCacheFile(tmp_path / "tag-cache.json")
    first = TagCache()
    first.put(APP, "1.0", record(1))
    state.save(first.dump())
    second = TagCache()
    second.put(APP, "2.0", record(2))

    def crash(source: str, target: str) -> None:
        raise OSError("killed before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        state.save(second.dump())
    monkeypatch.undo()
    assert dict(state.load().records(APP)) == {"1.0": record(1)}
    assert [p.name for p in tmp_path.iterdir()] == ["tag-cache.json"]  # no temporary left behind


def test_a_write_torn_by_a_crash_is_discarded_not_raised(tmp_path: Path) -> None:
    """What a crash without the rename would leave: a prefix of the document."""
    cache = TagCache()
    for n in range(100):
        cache.put(APP, f"t{n}", record(n))
    data = cache.dump()
    path = tmp_path / "tag-cache.json"
    for cut in (1, len(data) // 3, len(data) - 1):
        path.write_bytes(data[:cut])
        assert len(TagCacheFile(path).load()) == 0
