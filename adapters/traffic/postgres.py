"""Postgres traffic store: one table shared by every gateway replica of a fleet (psycopg 3).

The store creates and migrates its own schema (``MIGRATIONS``, applied in order under a
transaction-scoped advisory lock, so replicas that start together migrate once; the applied
version is kept in ``<schema>.harmaug_schema_version``).

The watermark is commit-safe with concurrent writers. A sequence number is handed out at INSERT
time, not at COMMIT, so "everything above seq N" would skip a row whose slower transaction
commits after a reader already moved past it. Instead every row carries the id of the
transaction that wrote it (``xid8``, 64-bit, never wraps), and a read returns only rows of
transactions below ``pg_snapshot_xmin(pg_current_snapshot())``: every transaction below that
horizon has finished (committed or rolled back), so no row can later appear below it. The
horizon is taken by a statement of its own, before the statement that reads: every transaction
below it had ended before the read's snapshot was taken, so all of their rows are visible to the
read. Pages are ordered by the transaction id as a number (see ``READ``). The
watermark W means "every transaction below W has been read"; a read returns whole transactions
(one gateway batch is one transaction), oldest first, and the next watermark is the last
transaction id + 1. A record is therefore read exactly once, at the price of waiting for the
oldest open transaction to finish (writes are short, single-statement transactions). Transaction
ids are cluster-wide, so a long writing transaction in any database of the cluster (a migration, a
stuck session left idle in transaction) delays reads until it ends; nothing is lost meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from adapters.traffic.protocol import StoreUnavailable, TrafficRecord

DEFAULT_SCHEMA = "harmaug"
MIGRATION_LOCK_KEY = 0x68617267  # advisory lock id ("harg")

# Each entry upgrades the schema by one version; never edit an applied entry, append a new one.
MIGRATIONS: list[str] = [
    # 1: the traffic table; txid is the writing transaction (the watermark), seq the order in it
    """
    CREATE TABLE IF NOT EXISTS {schema}.traffic (
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        id TEXT PRIMARY KEY,
        time TIMESTAMPTZ NOT NULL,
        txid XID8 NOT NULL DEFAULT pg_current_xact_id(),
        body JSONB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS traffic_time ON {schema}.traffic (time);
    """,
    # 2: reads go by (transaction, order in it)
    """
    CREATE INDEX IF NOT EXISTS traffic_txid_seq ON {schema}.traffic (txid, seq);
    """,
]

HORIZON = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text"
# The text of txid gets its own name: an output column named ``txid`` would be what ORDER BY
# txid sorts by, as text, so that "1000" came before "950" and a page read across a power of
# ten skipped every transaction between (the concurrency test's rare failures).
READ = """
SELECT txid::text AS txid_text, id, body FROM {schema}.traffic
WHERE txid >= %(mark)s::text::xid8
  AND txid < %(horizon)s::text::xid8
ORDER BY txid, seq
LIMIT %(limit)s
"""
READ_REST_OF_TX = """
SELECT id, body FROM {schema}.traffic
WHERE txid = %(tx)s::text::xid8 AND seq > (
    SELECT seq FROM {schema}.traffic WHERE id = %(last_id)s
)
ORDER BY seq
"""
APPEND = """
INSERT INTO {schema}.traffic (id, time, body)
SELECT * FROM unnest(%(ids)s::text[], %(times)s::timestamptz[], %(bodies)s::jsonb[])
ON CONFLICT (id) DO NOTHING
"""


def without_nul(value: Any) -> Any:
    """``value`` with U+0000 replaced by U+FFFD in every string: Postgres text and JSONB cannot
    hold it, and one client's NUL would fail the whole batch of everyone's records."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_nul(item) for item in value]
    return value


class PostgresTrafficStore:
    """The traffic-store protocol over Postgres; thread-safe, reconnects after a lost connection."""

    def __init__(
        self, dsn: str, *, schema: str = DEFAULT_SCHEMA, connect_timeout_s: float = 5.0
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        with self._lock:
            self._run(self._migrate)

    # -- connection ------------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.dsn, connect_timeout=max(1, round(self.connect_timeout_s)), autocommit=True
            )
        return self._conn

    def _run(self, operation: Any) -> Any:
        """Run ``operation(conn)``; any database error becomes StoreUnavailable (and a reconnect)."""
        try:
            return operation(self._connection())
        except psycopg.Error as exc:
            if self._conn is not None and (self._conn.closed or self._conn.broken):
                self._conn = None
            # The first line only: the server's CONTEXT lines may quote the stored text.
            lines = str(exc).strip().splitlines()
            reason = lines[0] if lines else type(exc).__name__
            raise StoreUnavailable(f"Postgres traffic store ({self.schema}): {reason}") from exc

    def _sql(self, template: str) -> sql.Composed:
        return sql.SQL(template).format(schema=sql.Identifier(self.schema))

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            conn.execute(self._sql("CREATE SCHEMA IF NOT EXISTS {schema}"))
            conn.execute(
                self._sql(
                    "CREATE TABLE IF NOT EXISTS {schema}.harmaug_schema_version "
                    "(version INTEGER NOT NULL)"
                )
            )
            row = conn.execute(
                self._sql("SELECT max(version) FROM {schema}.harmaug_schema_version")
            ).fetchone()
            current = int(row[0]) if row and row[0] is not None else 0
            for version, migration in enumerate(MIGRATIONS[current:], start=current + 1):
                conn.execute(self._sql(migration))
                conn.execute(
                    self._sql("INSERT INTO {schema}.harmaug_schema_version VALUES (%s)"),
                    (version,),
                )

    def schema_version(self) -> int:
        with self._lock:
            row = self._run(
                lambda conn: conn.execute(
                    self._sql("SELECT max(version) FROM {schema}.harmaug_schema_version")
                ).fetchone()
            )
        return int(row[0])

    # -- the protocol ----------------------------------------------------------------------------
    def append(self, records: Sequence[TrafficRecord]) -> int:
        if not records:
            return 0
        params = {
            "ids": [record.id for record in records],
            "times": [record.time for record in records],
            "bodies": [
                Jsonb(without_nul(record.model_dump(mode="json", exclude={"id"})))
                for record in records
            ],
        }
        with self._lock:
            cursor = self._run(lambda conn: conn.execute(self._sql(APPEND), params))
        return int(cursor.rowcount)

    def read_since(self, watermark: int, limit: int) -> tuple[list[TrafficRecord], int]:
        def read(conn: psycopg.Connection[Any]) -> tuple[list[tuple[str, Any]], int]:
            horizon = conn.execute(HORIZON).fetchone()
            params = {"mark": watermark, "horizon": horizon[0] if horizon else "0", "limit": limit}
            rows = conn.execute(self._sql(READ), params).fetchall()
            if not rows:
                return [], watermark
            last_tx = int(rows[-1][0])
            found = [(id_, body) for _, id_, body in rows]
            if len(rows) == limit:  # never split a transaction: take the rest of the last one
                rest = conn.execute(
                    self._sql(READ_REST_OF_TX), {"tx": last_tx, "last_id": rows[-1][1]}
                ).fetchall()
                found += [(id_, body) for id_, body in rest]
            return found, last_tx + 1

        with self._lock:
            rows, mark = self._run(read)
        return [TrafficRecord.model_validate({**body, "id": id_}) for id_, body in rows], mark

    def purge(self, older_than: datetime) -> int:
        with self._lock:
            cursor = self._run(
                lambda conn: conn.execute(
                    self._sql("DELETE FROM {schema}.traffic WHERE time < %s"), (older_than,)
                )
            )
        return int(cursor.rowcount)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
