"""Traffic logging: redaction, hashing, content policy, batching off the request path, drops,
store outages and recovery, sampling, retention, and a writer killed mid-write."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from adapters.traffic import SQLiteTrafficStore, StoreUnavailable, TrafficRecord
from guard_plugin.settings import GuardSettings
from guard_plugin.traffic_log import Screened, TrafficLogger, load_salt, redact, salted_hash

REPO = Path(__file__).resolve().parents[1]


def settings(tmp_path: Path, **overrides: Any) -> GuardSettings:
    values: dict[str, Any] = {"home": tmp_path, "traffic_flush_s": 0.05, **overrides}
    return GuardSettings(**values)


def call(i: int, **fields: object) -> Screened:
    values: dict[str, object] = {
        "prompt": f"how do i bake bread number {i}",
        "completion": None,
        "p_unsafe": 0.1,
        "decision": "allow",
        "guard_version": "v1",
        "request_id": f"req-{i}",
        "meta": {"part": "prompt", "guardrail": "harmaug"},
    }
    values.update(fields)
    return Screened(**values)  # type: ignore[arg-type]


# -- redaction -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail me at jane.doe+x@example.co.uk please", "mail me at [EMAIL] please"),
        ("call +1 (415) 555-0123 tonight", "call [PHONE] tonight"),
        ("or 020 7946 0958", "or [PHONE]"),
        ("card 4111 1111 1111 1111 exp 12/27", "card [CARD] exp 12/27"),
        ("card 5500-0000-0000-0004.", "card [CARD]."),
        ("key sk-proj-abcdefghijklmnop1234567890XYZ ok", "key [API_KEY] ok"),
        ("aws AKIAIOSFODNN7EXAMPLE here", "aws [API_KEY] here"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "token [API_KEY]"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload", "Authorization: [API_KEY]"),
    ],
)
def test_redaction_replaces_personal_data_and_secrets(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "python 3.11 came out in 2022",
        "order 1234 of 20 items",
        "the number 4111 1111 1111 1112 fails the luhn check",  # not a card
        "how do i bake a loaf of bread at home",
    ],
)
def test_redaction_keeps_ordinary_text(text: str) -> None:
    assert redact(text) == text


# -- stored records --------------------------------------------------------------------------------
def test_content_policy_and_salted_hashes(tmp_path: Path) -> None:
    raw = call(1, prompt="write to bob@example.com", completion="sure, bob", key="sk-secret-key")
    full = TrafficLogger(lambda: SQLiteTrafficStore(tmp_path / "t.db"), settings(tmp_path))
    record = full.record(raw)
    full.close()
    assert (record.prompt, record.completion) == ("write to [EMAIL]", "sure, bob")
    assert record.key_hash and "sk-secret-key" not in record.model_dump_json()
    assert record.key_hash == salted_hash(load_salt(settings(tmp_path)), "sk-secret-key")
    assert record.user_hash is None  # no user: no hash of an empty string

    prompt_only = TrafficLogger(
        lambda: SQLiteTrafficStore(tmp_path / "t.db"),
        settings(tmp_path, traffic_content="prompt", traffic_redact=False, traffic_salt="pepper"),
    )
    other = prompt_only.record(raw)
    prompt_only.close()
    assert (other.prompt, other.completion) == ("write to bob@example.com", None)
    assert other.key_hash != record.key_hash  # another salt, another hash

    nothing = TrafficLogger(
        lambda: SQLiteTrafficStore(tmp_path / "t.db"), settings(tmp_path, traffic_content="none")
    )
    bare = nothing.record(raw)
    nothing.close()
    assert (bare.prompt, bare.completion, bare.p_unsafe, bare.decision) == (
        None,
        None,
        0.1,
        "allow",
    )
    assert bare.id == record.id  # a replayed screening keeps its id: stores ignore the duplicate


def test_salt_file_is_private_and_stable(tmp_path: Path) -> None:
    first = load_salt(settings(tmp_path))
    assert load_salt(settings(tmp_path)) == first and len(first) == 64
    assert (tmp_path / "traffic.salt").stat().st_mode & 0o777 == 0o600


# -- the writer ------------------------------------------------------------------------------------
def test_records_are_written_in_batches_off_the_request_path(tmp_path: Path) -> None:
    appends: list[int] = []

    class CountingStore(SQLiteTrafficStore):
        def append(self, records: Sequence[TrafficRecord]) -> int:
            appends.append(len(records))
            return super().append(records)

    logger = TrafficLogger(
        lambda: CountingStore(tmp_path / "t.db"), settings(tmp_path, traffic_batch_size=100)
    )
    started = time.perf_counter()
    for i in range(1000):
        assert logger.log(call(i))
    per_call_ms = (time.perf_counter() - started) * 1000 / 1000
    assert logger.flush(10)
    logger.close()
    assert per_call_ms < 1.0
    assert logger.stats.written == 1000 and logger.stats.dropped == 0
    assert max(appends) == 100 and len(appends) <= 20  # batched, not one write per call
    records, _ = SQLiteTrafficStore(tmp_path / "t.db").read_since(0, 5000)
    assert len({r.id for r in records}) == 1000
    assert records[0].guard_version == "v1" and records[0].meta["part"] == "prompt"


def test_full_queue_drops_and_counts_without_waiting(tmp_path: Path) -> None:
    release = threading.Event()

    class SlowStore(SQLiteTrafficStore):
        def append(self, records: Sequence[TrafficRecord]) -> int:
            release.wait(10)
            return super().append(records)

    logger = TrafficLogger(
        lambda: SlowStore(tmp_path / "t.db"),
        settings(tmp_path, traffic_queue_size=10, traffic_batch_size=5),
    )
    logger.log(call(0))
    time.sleep(0.2)  # the writer takes it and blocks in the store
    started = time.perf_counter()
    accepted = sum(logger.log(call(i)) for i in range(1, 50))
    waited = time.perf_counter() - started
    release.set()
    assert logger.flush(10)
    logger.close()
    assert waited < 0.1
    assert accepted == 10 and logger.stats.dropped_full == 39
    assert logger.stats.written == 11


def test_store_down_drops_counted_then_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's directory should be")
    logger = TrafficLogger(
        lambda: SQLiteTrafficStore(blocker / "t.db"), settings(tmp_path, traffic_flush_s=0.02)
    )
    started = time.perf_counter()
    for i in range(20):
        assert logger.log(call(i))  # requests keep flowing while the store is down
    assert time.perf_counter() - started < 0.1
    assert logger.flush(5)
    assert logger.stats.dropped_store == 20 and logger.stats.written == 0

    blocker.unlink()  # the store comes back
    deadline = time.monotonic() + 10
    i = 100
    while logger.stats.written == 0 and time.monotonic() < deadline:
        logger.log(call(i))
        i += 1
        time.sleep(0.05)
    assert logger.flush(5)
    logger.close()
    assert logger.stats.written > 0
    records, _ = SQLiteTrafficStore(blocker / "t.db").read_since(0, 1000)
    assert len(records) == logger.stats.written


def test_sampling_keeps_the_configured_share(tmp_path: Path) -> None:
    logger = TrafficLogger(
        lambda: SQLiteTrafficStore(tmp_path / "t.db"),
        settings(tmp_path, traffic_sample_rate=0.25),
        seed=7,
    )
    kept = sum(logger.log(call(i)) for i in range(2000))
    assert logger.flush(10)
    logger.close()
    assert 400 < kept < 600 and logger.stats.sampled_out == 2000 - kept


def test_retention_purges_old_records(tmp_path: Path) -> None:
    store = SQLiteTrafficStore(tmp_path / "t.db")
    old = datetime.now(timezone.utc) - timedelta(days=10)
    logger = TrafficLogger(
        lambda: SQLiteTrafficStore(tmp_path / "t.db"),
        settings(tmp_path, traffic_retention_days=7),
    )
    logger.log(call(1, time=old))
    logger.log(call(2))
    assert logger.flush(5)
    deadline = time.monotonic() + 5
    while logger.stats.purged == 0 and time.monotonic() < deadline:  # the writer purges by itself
        time.sleep(0.02)
    logger.close()
    assert logger.stats.purged == 1
    assert [r.request_id for r in store.read_since(0, 10)[0]] == ["req-2"]


# -- a writer killed mid-write ------------------------------------------------------------------------
WRITER = """
import sys
from datetime import datetime, timezone
from adapters.traffic import SQLiteTrafficStore, TrafficRecord
store = SQLiteTrafficStore(sys.argv[1])
for batch in range(100000):
    now = datetime.now(timezone.utc)
    store.append([TrafficRecord(id=f"{batch}-{i}", time=now, prompt="x" * 200) for i in range(50)])
    print(batch, flush=True)  # acknowledged: the batch is committed
"""


def test_killed_writer_leaves_a_sound_database_and_loses_no_acknowledged_record(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    acked = -1
    for line in child.stdout:
        acked = int(line)
        if acked >= 30:
            break
    os.kill(child.pid, signal.SIGKILL)  # mid-way through some later batch
    child.wait()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    records, _ = SQLiteTrafficStore(db).read_since(0, 10_000_000)
    ids = {r.id for r in records}
    assert all(f"{batch}-{i}" in ids for batch in range(acked + 1) for i in range(50))
    assert len(ids) % 50 == 0  # batches are all or nothing


def test_unavailable_store_is_a_store_error() -> None:
    with pytest.raises(StoreUnavailable):
        SQLiteTrafficStore("/proc/no/such/dir/t.db")
