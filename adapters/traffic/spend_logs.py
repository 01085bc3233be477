"""A read-only traffic source over LiteLLM's own spend logs (``"LiteLLM_SpendLogs"`` in Postgres).

For proxies that already log there (``general_settings.store_prompts_in_spend_logs: true``), the
retraining loop reads prompts and completions from that table instead of a second copy. Rows
without stored text (the proxy's default) come back with ``prompt`` None and are skipped by the
loop. The guard's own verdict is read from the row's ``metadata.guardrail_information`` (the facts
the harmaug hook leaves there); the key, team and user are hashed (salted when a salt is given).

Watermark: LiteLLM writes spend logs in batches, from several replicas, with ``startTime`` in the
past, so the source orders by the row's insert time (``created_at``, or another ``time_column``)
and reads only rows older than ``settle_s`` (a write transaction that stays open longer than that
could be missed; LiteLLM's batch writes take well under a second). The watermark is that time in
microseconds since the epoch (UTC); rows that share a timestamp are never split across reads.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from adapters.traffic.protocol import StoreUnavailable, TrafficRecord

TABLE = "LiteLLM_SpendLogs"
EPOCH = datetime(1970, 1, 1)
HARMAUG_PROVIDER = "harmaug"

READ = """
SELECT * FROM {table}
WHERE {time} > %(after)s AND {time} <= (now() AT TIME ZONE 'UTC') - %(settle)s
ORDER BY {time}, request_id
LIMIT %(limit)s
"""
READ_AT = "SELECT * FROM {table} WHERE {time} = %(at)s ORDER BY request_id"


def micros(moment: datetime) -> int:
    """A naive UTC timestamp as integer microseconds since the epoch (exact)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


class SpendLogSource:
    """``read_since`` over LiteLLM_SpendLogs; ``append`` and ``purge`` refuse (LiteLLM owns it)."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        time_column: str = "created_at",
        settle_s: float = 120.0,
        salt: str | None = None,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.settle = timedelta(seconds=settle_s)
        self.salt = salt.encode() if salt else None
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        names = {"table": sql.Identifier(schema, TABLE), "time": sql.Identifier(time_column)}
        self._read = sql.SQL(READ).format(**names)
        self._read_at = sql.SQL(READ_AT).format(**names)
        self.time_column = time_column

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.dsn,
                connect_timeout=max(1, round(self.connect_timeout_s)),
                autocommit=True,
                row_factory=dict_row,  # type: ignore[arg-type]
            )
        return self._conn

    def read_since(self, watermark: int, limit: int) -> tuple[list[TrafficRecord], int]:
        params = {"after": from_micros(watermark), "settle": self.settle, "limit": limit}
        with self._lock:
            try:
                conn = self._connection()
                rows = conn.execute(self._read, params).fetchall()
                if len(rows) == limit and rows:
                    rows = self._whole_timestamps(conn, rows)
            except psycopg.Error as exc:
                self._conn = None
                raise StoreUnavailable(f"LiteLLM spend logs: {exc}") from exc
        if not rows:
            return [], watermark
        return [self.record(row) for row in rows], micros(rows[-1][self.time_column])

    def _whole_timestamps(
        self, conn: psycopg.Connection[Any], rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Drop the trailing rows that share the last timestamp (the next read starts there),
        or, when every row shares it, read all rows of that timestamp."""
        last = rows[-1][self.time_column]
        kept = [row for row in rows if row[self.time_column] != last]
        if kept:
            return kept
        return list(conn.execute(self._read_at, {"at": last}).fetchall())

    # -- one row -> one record -------------------------------------------------------------------
    def _hash(self, value: Any) -> str | None:
        if not value:
            return None
        data = str(value).encode()
        if self.salt:
            return hmac.new(self.salt, data, hashlib.sha256).hexdigest()[:32]
        return hashlib.sha256(data).hexdigest()[:32]

    def record(self, row: dict[str, Any]) -> TrafficRecord:
        verdict = guard_verdict(_json(row.get("metadata")))
        start = row.get("startTime") or row[self.time_column]
        return TrafficRecord(
            id=f"spendlog:{row['request_id']}",
            time=start.replace(tzinfo=timezone.utc),
            request_id=row.get("litellm_call_id") or row["request_id"],
            model=row.get("model_group") or row.get("model") or None,
            key_hash=self._hash(row.get("api_key")),
            team_hash=self._hash(row.get("team_id")),
            user_hash=self._hash(row.get("end_user") or row.get("user")),
            prompt=last_user_text(_json(row.get("messages"))),
            completion=completion_text(_json(row.get("response"))),
            p_unsafe=verdict.get("p_unsafe"),
            decision=verdict.get("decision"),
            guard_version=verdict.get("guard_version"),
            meta={"source": "litellm_spend_logs", "status": row.get("status")},
        )

    def append(self, records: Sequence[TrafficRecord]) -> int:
        raise StoreUnavailable("LiteLLM spend logs are read-only: LiteLLM writes them")

    def purge(self, older_than: datetime) -> int:
        raise StoreUnavailable("LiteLLM spend logs are read-only: LiteLLM's retention purges them")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _json(value: Any) -> Any:
    """Prisma Json columns hold JSON; some LiteLLM versions store a JSON-encoded string in them."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        ]
        return "\n".join(parts) if parts else None
    return None


def last_user_text(messages: Any) -> str | None:
    """The last user turn of a chat request (or a completion prompt string)."""
    if isinstance(messages, str):
        return messages or None
    if isinstance(messages, dict):  # {} when the proxy does not store prompts
        messages = messages.get("messages")
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return None


def completion_text(response: Any) -> str | None:
    """The first choice's text of a stored chat or text completion."""
    if not isinstance(response, dict):
        return None
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    message = choice.get("message")
    if isinstance(message, dict):
        return _content_text(message.get("content"))
    text = choice.get("text")
    return text if isinstance(text, str) else None


def guard_verdict(metadata: Any) -> dict[str, Any]:
    """The highest-scoring harmaug screening recorded in the row's guardrail information."""
    if not isinstance(metadata, dict):
        return {}
    entries = metadata.get("guardrail_information") or []
    if isinstance(entries, dict):
        entries = [entries]
    found: dict[str, Any] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("guardrail_provider") != HARMAUG_PROVIDER:
            continue
        facts = _json(entry.get("guardrail_response"))
        score = facts.get("p_unsafe") if isinstance(facts, dict) else None
        if score is not None and (found.get("p_unsafe") is None or score > found["p_unsafe"]):
            found = facts
    return found
