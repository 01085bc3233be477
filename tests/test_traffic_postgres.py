"""The Postgres traffic store and the LiteLLM spend-log source, against a real PostgreSQL server.

The server is 127.0.0.1:5432 (user postgres, trust auth), or HARMAUG_TEST_POSTGRES (a libpq URL
of a role that may create databases). Every test gets its own fresh database, dropped afterwards.
Without a server these tests fail with the reason, unless HARMAUG_SKIP_POSTGRES=1 skips them.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.types.json import Jsonb

import adapters.traffic.postgres as pg_store
from adapters.traffic import StoreUnavailable, TrafficRecord, open_store
from adapters.traffic.postgres import PostgresTrafficStore
from adapters.traffic.spend_logs import SpendLogSource
from tests.litellm_schema import create_table_sql

pytestmark = pytest.mark.postgres

SERVER = os.environ.get("HARMAUG_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(SERVER, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("HARMAUG_SKIP_POSTGRES") == "1":
            pytest.skip(f"no PostgreSQL at {SERVER} (HARMAUG_SKIP_POSTGRES=1)")
        pytest.fail(
            f"these tests need a PostgreSQL server at {SERVER} (set HARMAUG_TEST_POSTGRES to "
            f"another, or HARMAUG_SKIP_POSTGRES=1 to skip them): {exc}",
            pytrace=False,
        )


@pytest.fixture()
def dsn() -> Iterator[str]:
    """A fresh database for one test."""
    name = f"harmaug_test_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield SERVER.rsplit("/", 1)[0] + f"/{name}"
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def record(i: int | str, *, days_ago: float = 0) -> TrafficRecord:
    return TrafficRecord(
        id=f"r{i}",
        time=datetime.now(timezone.utc) - timedelta(days=days_ago),
        prompt=f"prompt {i}",
        p_unsafe=0.25,
        decision="allow",
        guard_version="v1",
        meta={"part": "prompt"},
    )


def read_all(store: PostgresTrafficStore | SpendLogSource, mark: int = 0, page: int = 1000):
    found: list[TrafficRecord] = []
    while True:
        records, mark = store.read_since(mark, page)
        if not records:
            return found, mark
        found += records


# -- the store -----------------------------------------------------------------------------------
def test_append_read_since_and_purge(dsn: str) -> None:
    store = PostgresTrafficStore(dsn, schema="traffic_a")
    assert store.append([record(i) for i in range(5)]) == 5
    assert store.append([record(3), record(5)]) == 1  # a replay adds nothing
    first, mark = store.read_since(0, 3)
    rest, mark2 = store.read_since(mark, 100)
    assert [r.id for r in first + rest] == [f"r{i}" for i in range(6)]
    assert first[0] == record(0).model_copy(update={"time": first[0].time})
    assert store.read_since(mark2, 100) == ([], mark2)

    store.append([record("old", days_ago=40)])
    assert store.purge(datetime.now(timezone.utc) - timedelta(days=30)) == 1
    store.close()


def test_schema_is_created_and_migrated(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_store, "MIGRATIONS", pg_store.MIGRATIONS[:1])
    old = PostgresTrafficStore(dsn, schema="fleet")
    assert old.schema_version() == 1
    old.append([record(1)])
    monkeypatch.undo()
    new = PostgresTrafficStore(dsn, schema="fleet")  # a newer gateway starts: migrates to latest
    assert new.schema_version() == len(pg_store.MIGRATIONS) == 2
    PostgresTrafficStore(dsn, schema="fleet")  # and a second one changes nothing
    with psycopg.connect(dsn) as conn:
        versions = conn.execute("SELECT version FROM fleet.harmaug_schema_version").fetchall()
        indexes = {row[0] for row in conn.execute("SELECT indexname FROM pg_indexes")}
    assert sorted(v for (v,) in versions) == [1, 2] and "traffic_txid_seq" in indexes
    assert [r.id for r in read_all(new)[0]] == ["r1"]


def test_watermark_never_skips_a_transaction_that_commits_late(dsn: str) -> None:
    """Replica A inserts first but commits last; a reader must not move past A's record."""
    store = PostgresTrafficStore(dsn)
    slow = psycopg.connect(dsn)
    body = json.dumps(record("slow").model_dump(mode="json", exclude={"id"}))
    slow.execute(
        "INSERT INTO harmaug.traffic (id, time, body) VALUES ('rslow', now(), %s)", (body,)
    )
    store.append([record("fast")])  # replica B commits while A is still open
    seen, mark = read_all(store)
    assert seen == []  # B is held back: A (an older transaction) may still commit
    slow.commit()
    seen, mark = read_all(store, mark)
    assert [r.id for r in seen] == ["rslow", "rfast"]
    assert read_all(store, mark)[0] == []
    slow.close()


def test_concurrent_replicas_and_a_reader_see_every_record_once(dsn: str) -> None:
    PostgresTrafficStore(dsn)  # migrate once
    done = threading.Event()
    read: list[str] = []
    marks = [0]
    expected = 4 * 15 * 20

    errors: list[BaseException] = []

    def replica(k: int) -> None:
        try:
            store = PostgresTrafficStore(dsn)
            for batch in range(15):
                store.append([record(f"{k}-{batch}-{i}") for i in range(20)])
            store.close()
        except BaseException as exc:  # a writer's failure fails the test, not a thread
            errors.append(exc)
            raise

    trace: list[tuple[int, int, str, str, int]] = []  # (mark in, rows, first id, last id, out)

    def reader() -> None:
        store = PostgresTrafficStore(dsn)
        while not done.is_set() or len(read) < expected:
            mark = marks[0]
            records, marks[0] = store.read_since(mark, 37)  # pages that cut across batches
            read.extend(r.id for r in records)
            if records:
                trace.append((mark, len(records), records[0].id, records[-1].id, marks[0]))
            elif done.is_set():
                break  # the rest waits for the cluster's horizon (below)
            else:
                time.sleep(0.01)
        store.close()

    writers = [threading.Thread(target=replica, args=(k,)) for k in range(4)]
    consumer = threading.Thread(target=reader)
    consumer.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    assert not errors
    done.set()
    consumer.join(60)
    assert not consumer.is_alive()
    # Rows become readable once every older transaction in the cluster has ended (another
    # database's sessions included), so wait for the horizon to pass the last writer, then read
    # on from the reader's watermark: a row the watermark skipped would never come back.
    blockers: set[str] = set()
    with psycopg.connect(dsn, autocommit=True) as conn:
        last = conn.execute("SELECT max(txid)::text FROM harmaug.traffic").fetchone()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            horizon = conn.execute(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::numeric > %s::numeric",
                (last[0] if last else "0",),
            ).fetchone()
            if horizon and horizon[0]:
                break
            blockers |= {
                f"{row[0]} {row[1]} {row[2]}"
                for row in conn.execute(
                    "SELECT backend_type, datname, state FROM pg_stat_activity "
                    "WHERE backend_xid IS NOT NULL"
                ).fetchall()
            }
            time.sleep(0.1)
        # For the message: records the reader got twice, what the table holds, the rows below
        # the watermark left unread, and every page the reader got (the pages of one CI failure
        # showed transaction ids sorted as text across 999 -> 1000; see the test above).
        rows = conn.execute("SELECT id, txid::text FROM harmaug.traffic").fetchall()
    store = PostgresTrafficStore(dsn)
    rest = store.read_since(marks[0], expected)[0]
    store.close()
    everything = read + [r.id for r in rest]
    seen = set(everything)
    skipped = sorted({int(tx) for id_, tx in rows if id_ not in seen and int(tx) < marks[0]})
    repeated = len(read) - len(set(read))
    diagnosis = (len(read), repeated, len(rest), len(rows), marks[0], skipped[:5], blockers, trace)
    assert len(everything) == expected == len(seen), str(diagnosis)  # a str: shown whole


def test_pages_follow_transaction_ids_as_numbers_across_a_power_of_ten(dsn: str) -> None:
    """Transactions 10^k - 1 and 10^k: compared as text, "1000" sorts before "999", and a page
    of one record would move the watermark past the older transaction for good."""
    store = PostgresTrafficStore(dsn, schema="digits")
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
        horizon = int(row[0]) if row else 0
        power = 10 ** (len(str(horizon - 1)) - 1)  # below the horizon: both rows are readable
        for name, tx in (("older", power - 1), ("newer", power)):
            conn.execute(
                "INSERT INTO digits.traffic (id, time, txid, body) "
                "VALUES (%s, now(), %s::text::xid8, %s)",
                (name, str(tx), Jsonb(record(name).model_dump(mode="json", exclude={"id"}))),
            )
    first, mark = store.read_since(0, 1)
    second, end = store.read_since(mark, 1)
    store.close()
    assert [r.id for r in first + second] == ["older", "newer"]
    assert (mark, end) == (power, power + 1)


def test_store_down_is_store_unavailable_and_reconnects(dsn: str) -> None:
    with pytest.raises(StoreUnavailable, match="Postgres traffic store"):
        PostgresTrafficStore("postgresql://postgres@127.0.0.1:1/none", connect_timeout_s=1)
    store = PostgresTrafficStore(dsn)
    store.append([record(1)])
    with _admin() as admin:  # the server drops the store's connection
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dsn.rsplit("/", 1)[1],),
        )
    with pytest.raises(StoreUnavailable):
        store.append([record(2)])
    assert store.append([record(3)]) == 1  # reconnected
    assert [r.id for r in read_all(store)[0]] == ["r1", "r3"]


def test_a_nul_in_one_record_fails_neither_the_batch_nor_shows_in_errors(dsn: str) -> None:
    # Postgres text and JSONB cannot hold U+0000; a client's NUL used to fail everyone's batch.
    store = PostgresTrafficStore(dsn)
    hostile = record("nul").model_copy(update={"prompt": "a\x00b", "meta": {"k\x00": ["\x00"]}})
    assert store.append([record(1), hostile]) == 2
    stored = {r.id: r for r in read_all(store)[0]}
    assert stored["rnul"].prompt == "a\ufffdb" and stored["rnul"].meta == {"k\ufffd": ["\ufffd"]}
    with pytest.raises(StoreUnavailable) as caught:  # a data error: the server quotes the data
        store._run(lambda conn: conn.execute("SELECT %s::jsonb", ['{"p": "secret\\u0000"}']))
    assert "Unicode" in str(caught.value) and "secret" not in str(caught.value)
    store.close()


def test_open_store_by_url(dsn: str) -> None:
    store = open_store(dsn + "?schema=by_url")
    assert isinstance(store, PostgresTrafficStore) and store.schema == "by_url"
    assert store.append([record(1)]) == 1


# -- LiteLLM's spend logs ------------------------------------------------------------------------
def spend_row(conn: psycopg.Connection, request_id: str, created: datetime, **columns) -> None:
    values = {
        "request_id": request_id,
        "call_type": "acompletion",
        "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        "startTime": created - timedelta(seconds=2),
        "endTime": created - timedelta(seconds=1),
        "model": "gpt-4o-mini",
        "model_group": "chat",
        "created_at": created,
        **columns,
    }
    names = ", ".join(f'"{name}"' for name in values)
    marks = ", ".join(["%s"] * len(values))
    conn.execute(
        f'INSERT INTO "LiteLLM_SpendLogs" ({names}) VALUES ({marks})',
        [json.dumps(v) if isinstance(v, dict | list) else v for v in values.values()],
    )


def test_spend_log_source_reads_litellms_own_table(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(create_table_sql("LiteLLM_SpendLogs"))
        base = datetime(2026, 1, 1, 12, 0, 0)
        facts = {"decision": "block", "p_unsafe": 0.97, "guard_version": "v7", "part": "prompt"}
        spend_row(
            conn,
            "req-1",
            base,
            team_id="team-a",
            end_user="alice",
            messages=[
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": [{"type": "text", "text": "how do i build a bomb"}]},
            ],
            response={"choices": [{"message": {"role": "assistant", "content": "I can't."}}]},
            metadata={
                "guardrail_information": [
                    {"guardrail_provider": "harmaug", "guardrail_response": facts},
                    {"guardrail_provider": "other", "guardrail_response": {"p_unsafe": 1.0}},
                ]
            },
        )
        for k in range(3):  # three rows written by one batch: the same created_at
            spend_row(conn, f"req-2{k}", base + timedelta(seconds=1))
        spend_row(conn, "req-3", base + timedelta(seconds=2), messages=Jsonb("how are you"))
        spend_row(conn, "req-late", datetime.utcnow() + timedelta(hours=1))  # not settled yet

    source = SpendLogSource(dsn, settle_s=60, salt="pepper")
    first, mark = source.read_since(0, 2)  # the page would split req-2x: it stops before them
    assert [r.id for r in first] == ["spendlog:req-1"]
    blocked = first[0]
    assert blocked.prompt == "how do i build a bomb" and blocked.completion == "I can't."
    assert (blocked.p_unsafe, blocked.decision, blocked.guard_version) == (0.97, "block", "v7")
    assert blocked.model == "chat" and blocked.team_hash and blocked.team_hash != "team-a"
    tied, mark = source.read_since(mark, 1)  # a page smaller than one timestamp: all of it
    assert sorted(r.id for r in tied) == ["spendlog:req-20", "spendlog:req-21", "spendlog:req-22"]
    assert all(r.prompt is None and r.p_unsafe is None for r in tied)  # prompts not stored
    rest, mark = source.read_since(mark, 100)
    assert [(r.id, r.prompt) for r in rest] == [("spendlog:req-3", "how are you")]
    assert source.read_since(mark, 100) == ([], mark)
    with pytest.raises(StoreUnavailable, match="read-only"):
        source.append([record(1)])
    source.close()
    via_url = open_store("litellm-spendlogs+" + dsn)
    assert isinstance(via_url, SpendLogSource) and len(read_all(via_url)[0]) == 5
