"""SQLite traffic store: batched appends, watermark reads without loss or repeats, purge, errors."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from adapters.traffic import SQLiteTrafficStore, StoreUnavailable, TrafficRecord


def record(i: int, *, days_ago: float = 0) -> TrafficRecord:
    return TrafficRecord(
        id=f"r{i}",
        time=datetime.now(timezone.utc) - timedelta(days=days_ago),
        prompt=f"prompt {i}",
        p_unsafe=0.1,
        decision="allow",
        guard_version="v1",
    )


def test_append_read_since_watermark(tmp_path: Path) -> None:
    store = SQLiteTrafficStore(tmp_path / "traffic.db")
    assert store.append([record(i) for i in range(5)]) == 5
    assert store.append([record(3), record(5)]) == 1  # ids are unique: a replay adds nothing

    first, mark = store.read_since(0, 4)
    rest, mark2 = store.read_since(mark, 100)
    assert [r.id for r in first + rest] == [f"r{i}" for i in range(6)]
    assert first[0].prompt == "prompt 0"
    assert store.read_since(mark2, 100) == ([], mark2)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    store = SQLiteTrafficStore(tmp_path / "traffic.db")

    def write(offset: int) -> None:
        for batch in range(10):
            store.append([record(offset + batch * 10 + i) for i in range(10)])

    threads = [threading.Thread(target=write, args=(k * 1000,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other = SQLiteTrafficStore(tmp_path / "traffic.db")  # a second connection sees all commits
    records, _ = other.read_since(0, 10_000)
    assert len(records) == 400 == len({r.id for r in records})


def test_purge_by_age(tmp_path: Path) -> None:
    store = SQLiteTrafficStore(tmp_path / "traffic.db")
    store.append([record(1, days_ago=40), record(2, days_ago=1)])
    assert store.purge(datetime.now(timezone.utc) - timedelta(days=30)) == 1
    assert [r.id for r in store.read_since(0, 10)[0]] == ["r2"]


def test_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="cannot open"):
        SQLiteTrafficStore(blocker / "traffic.db")


def test_open_store_and_jsonl_export(tmp_path: Path) -> None:
    from adapters.traffic import open_store
    from adapters.traffic.jsonl import export_jsonl

    store = open_store(f"sqlite://{tmp_path / 'traffic.db'}")
    assert isinstance(store, SQLiteTrafficStore)
    store.append([record(i) for i in range(5)])
    count, mark = export_jsonl(store, tmp_path / "out" / "traffic.jsonl", page=2)
    lines = (tmp_path / "out" / "traffic.jsonl").read_text().splitlines()
    assert count == 5 == len(lines)
    assert [TrafficRecord.model_validate_json(line).id for line in lines] == [
        f"r{i}" for i in range(5)
    ]
    store.append([record(9)])
    assert export_jsonl(store, tmp_path / "next.jsonl", since=mark)[0] == 1
