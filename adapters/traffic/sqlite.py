"""SQLite traffic store: the embedded default (WAL journal, one transaction per batch).

The watermark is SQLite's rowid sequence: monotonic, assigned at commit, so a reader that
resumes from a watermark never skips a committed record and never sees one twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from adapters.traffic.protocol import StoreUnavailable, TrafficRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS traffic (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    time TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS traffic_time ON traffic(time);
"""


class SQLiteTrafficStore:
    def __init__(self, path: str | Path, *, timeout_s: float = 5.0):
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=timeout_s, check_same_thread=False, isolation_level=None
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(
                f"cannot open the SQLite traffic store {self.path}: {exc}"
            ) from exc

    def append(self, records: Sequence[TrafficRecord]) -> int:
        rows = [
            (record.id, record.time.isoformat(), record.model_dump_json(exclude={"id"}))
            for record in records
        ]
        with self._lock:
            try:
                before = self._conn.total_changes
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "INSERT OR IGNORE INTO traffic (id, time, body) VALUES (?, ?, ?)", rows
                )
                self._conn.execute("COMMIT")
                return self._conn.total_changes - before
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StoreUnavailable(f"SQLite traffic store {self.path}: {exc}") from exc

    def read_since(self, watermark: int, limit: int) -> tuple[list[TrafficRecord], int]:
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT seq, id, body FROM traffic WHERE seq > ? ORDER BY seq LIMIT ?",
                    (watermark, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite traffic store {self.path}: {exc}") from exc
        records = [
            TrafficRecord.model_validate({**json.loads(body), "id": id_}) for _, id_, body in rows
        ]
        return records, (rows[-1][0] if rows else watermark)

    def purge(self, older_than: datetime) -> int:
        with self._lock:
            try:
                cursor = self._conn.execute(
                    "DELETE FROM traffic WHERE time < ?", (older_than.isoformat(),)
                )
                return cursor.rowcount
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite traffic store {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()
