"""Traffic logging: every screened call becomes a ``TrafficRecord``, written off the request path.

```python
logger = TrafficLogger.from_settings(settings)         # HARMAUG_TRAFFIC_* knobs
logger.log(Screened(request_id=..., prompt=..., p_unsafe=0.93, decision="block", ...))
```

``log`` never waits: it samples, then puts the raw call on a bounded queue (``put_nowait``); when
the queue is full the record is dropped and counted. One writer thread takes records off the
queue in batches (``traffic_batch_size``, or whatever arrived within ``traffic_flush_s``), builds
the stored records there (content policy, redaction, salted hashes: none of it costs the
request), and appends each batch in one store transaction. When the store is down, the batch is
dropped and counted, the store is reopened with back-off, and logging resumes by itself. Records
older than ``traffic_retention_days`` are purged by the same thread, at most once an hour.

Durability: a record is safe once its batch is committed (the store's transaction). A graceful
stop loses nothing: ``close`` writes what is queued (up to ``traffic_shutdown_s``, logged as
``traffic_flush_timeout`` if exceeded) at the end of the server's shutdown
(``guard_plugin.shutdown``, for SIGTERM and SIGINT) or at interpreter exit. A process that is
killed (SIGKILL, a crash) loses what was still queued, at most ``traffic_flush_s`` of traffic, and
the next logger to start in the same home logs how many (``guard_plugin.traffic_journal``).

Stored text: ``traffic_content`` full | prompt | none; with ``traffic_redact`` (the default)
e-mail addresses, phone numbers, card numbers (Luhn-valid) and API keys / bearer tokens are
replaced with ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[API_KEY]``. The key, team and user are kept
only as HMAC-SHA256 hashes with a secret salt (``traffic_salt``, else a random salt created once in
``<home>/traffic.salt``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import queue
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from adapters.traffic import StoreUnavailable, TrafficRecord, TrafficStore, open_store
from guard_plugin.logs import get_logger
from guard_plugin.settings import GuardSettings
from guard_plugin.shutdown import at_shutdown
from guard_plugin.traffic_journal import PendingJournal, report_lost

log = get_logger("guard_plugin.traffic_log")

PURGE_EVERY_S = 3600.0
RETRY_MIN_S, RETRY_MAX_S = 0.5, 30.0

# -- redaction -------------------------------------------------------------------------------------
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
API_KEY = re.compile(
    r"(?:\b(?:sk|pk|rk)-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_-]{16,}"  # OpenAI / Anthropic / LiteLLM style
    r"|\bAKIA[0-9A-Z]{16}\b"  # AWS access key id
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|\bAIza[0-9A-Za-z_-]{35}"  # Google API keys
    r"|(?i:\bbearer\s+)[A-Za-z0-9._~+/=-]{16,})"  # bearer tokens
)
CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
PHONE = re.compile(r"(?<![\w+])\+?(?:\(?\d{1,4}\)?[ .-]?){2,5}\d{2,4}(?!\w)")
PHONE_MIN_DIGITS, PHONE_MAX_DIGITS = 7, 15


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[CARD]" if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group()


def _phone(match: re.Match[str]) -> str:
    digits = sum(char.isdigit() for char in match.group())
    return "[PHONE]" if PHONE_MIN_DIGITS <= digits <= PHONE_MAX_DIGITS else match.group()


def redact(text: str) -> str:
    """Replace e-mail addresses, API keys, card numbers and phone numbers (in that order)."""
    text = EMAIL.sub("[EMAIL]", text)
    text = API_KEY.sub("[API_KEY]", text)
    text = CARD.sub(_card, text)
    return PHONE.sub(_phone, text)


# -- salted identity hashes ------------------------------------------------------------------------
def load_salt(settings: GuardSettings) -> bytes:
    """The configured secret salt, else ``<home>/traffic.salt`` (created once, mode 0600)."""
    if settings.traffic_salt is not None:
        return settings.traffic_salt.get_secret_value().encode()
    path = settings.home / "traffic.salt"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another worker is writing it right now
            value = path.read_text(encoding="utf-8").strip()
            if value:
                return value.encode()
            time.sleep(0.01)
        raise RuntimeError(f"{path}: empty traffic salt file") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_hex(32))
    return path.read_text(encoding="utf-8").strip().encode()


def salted_hash(salt: bytes, value: Any) -> str | None:
    if value is None or value == "":
        return None
    return hmac.new(salt, str(value).encode(), hashlib.sha256).hexdigest()[:32]


# -- the logger ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Screened:
    """One screened call as the hook saw it (raw; the writer thread redacts and hashes)."""

    prompt: str | None
    completion: str | None
    p_unsafe: float | None
    decision: str
    guard_version: str
    request_id: str | None = None
    model: str | None = None
    key: str | None = None
    team: str | None = None
    user: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    time: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass
class TrafficStats:
    logged: int = 0  # accepted onto the queue
    sampled_out: int = 0
    written: int = 0
    dropped_full: int = 0  # queue full: the request did not wait
    dropped_store: int = 0  # the store was down or refused the batch
    purged: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_full + self.dropped_store


class TrafficLogger:
    """Bounded queue + one batching writer thread in front of a traffic store."""

    def __init__(
        self,
        open_store_fn: Callable[[], TrafficStore],
        settings: GuardSettings | None = None,
        *,
        salt: bytes | None = None,
        seed: int | None = None,
    ) -> None:
        self.settings = settings or GuardSettings()
        self._open_store = open_store_fn
        self._store: TrafficStore | None = None
        self._salt = salt if salt is not None else load_salt(self.settings)
        # None wakes the writer (``close``): it stops waiting to fill a batch.
        self._queue: queue.Queue[Screened | None] = queue.Queue(self.settings.traffic_queue_size)
        self._random = random.Random(seed)
        self._done = threading.Condition()  # guards and signals ``stats``
        self.stats = TrafficStats()
        self._stop = threading.Event()
        self._retry_at = 0.0
        self._retry_s = RETRY_MIN_S
        self._purged_at: float | None = None  # not 0.0: monotonic time may start near zero
        report_lost(self.settings.home)  # what killed loggers before this one left unwritten
        self._journal = PendingJournal(self.settings.home)
        self._thread = threading.Thread(target=self._run, name="harmaug-traffic", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: GuardSettings | None = None) -> TrafficLogger:
        settings = settings or GuardSettings()
        url = settings.traffic_store_url()
        logger = cls(lambda: open_store(url), settings)
        at_shutdown(logger.close)  # a stopping gateway writes what is queued
        return logger

    # -- request path ----------------------------------------------------------------------------
    def log(self, call: Screened) -> bool:
        """Queue one screened call; never blocks. False when sampled out or dropped."""
        rate = self.settings.traffic_sample_rate
        if rate < 1.0 and self._random.random() >= rate:
            self._count("sampled_out")
            return False
        try:
            self._queue.put_nowait(call)
        except queue.Full:
            self._count("dropped_full")
            return False
        self._count("logged")
        return True

    def _count(self, name: str, n: int = 1) -> None:
        with self._done:
            setattr(self.stats, name, getattr(self.stats, name) + n)
            self._journal.update(self.stats.logged, self.stats.written + self.stats.dropped_store)
            self._done.notify_all()

    # -- building a stored record ------------------------------------------------------------------
    def record(self, call: Screened) -> TrafficRecord:
        content = self.settings.traffic_content
        prompt = call.prompt if content in ("full", "prompt") else None
        completion = call.completion if content == "full" else None
        if self.settings.traffic_redact:
            prompt = redact(prompt) if prompt else prompt
            completion = redact(completion) if completion else completion
        part = call.meta.get("part", "")
        identity = f"{call.request_id}:{call.meta.get('guardrail', '')}:{part}"
        record_id = (
            hashlib.sha256(identity.encode()).hexdigest()[:32]
            if call.request_id
            else uuid.uuid4().hex
        )
        return TrafficRecord(
            id=record_id,
            time=call.time,
            request_id=call.request_id,
            model=call.model,
            key_hash=salted_hash(self._salt, call.key),
            team_hash=salted_hash(self._salt, call.team),
            user_hash=salted_hash(self._salt, call.user),
            prompt=prompt,
            completion=completion,
            p_unsafe=call.p_unsafe,
            decision=call.decision,
            guard_version=call.guard_version,
            meta=call.meta,
        )

    # -- writer thread -----------------------------------------------------------------------------
    def _next_batch(self) -> list[Screened]:
        """What arrives within ``traffic_flush_s`` of the first record, at most a batch."""
        first = self._next(self.settings.traffic_flush_s)
        if first is None:
            return []
        batch = [first]
        deadline = time.monotonic() + self.settings.traffic_flush_s
        while len(batch) < self.settings.traffic_batch_size:
            call = self._next(max(deadline - time.monotonic(), 0.0))
            if call is None:
                break
            batch.append(call)
        return batch

    def _next(self, timeout_s: float) -> Screened | None:
        """The next queued call; None when none came in time or ``close`` woke the writer."""
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            batch = self._next_batch()
            if batch:
                self._write(batch)
            self._maybe_purge()
        if self._store is not None and hasattr(self._store, "close"):
            self._store.close()

    def _ensure_store(self) -> TrafficStore | None:
        if self._store is not None:
            return self._store
        if time.monotonic() < self._retry_at:
            return None
        try:
            self._store = self._open_store()
        except StoreUnavailable as exc:
            self._store_failed(exc)
        return self._store

    def _store_failed(self, exc: Exception) -> None:
        log.error("traffic_store_unavailable", error=str(exc), retry_s=self._retry_s)
        self._retry_at = time.monotonic() + self._retry_s
        self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)

    def _write(self, batch: list[Screened]) -> None:
        store = self._ensure_store()
        if store is None:
            self._count("dropped_store", len(batch))
            return
        try:
            records = [self.record(call) for call in batch]
            store.append(records)
        except StoreUnavailable as exc:
            self._count("dropped_store", len(batch))
            self._store_failed(exc)
            return
        except Exception as exc:  # a bad record must not kill the writer
            self._count("dropped_store", len(batch))
            log.error("traffic_write_failed", error=f"{type(exc).__name__}: {exc}")
            return
        self._retry_s = RETRY_MIN_S
        self._count("written", len(batch))

    def _maybe_purge(self) -> None:
        days = self.settings.traffic_retention_days
        if days is None:
            return
        if self._purged_at is not None and time.monotonic() - self._purged_at < PURGE_EVERY_S:
            return
        store = self._store
        if store is None:
            return
        self._purged_at = time.monotonic()
        self.purge(store, days)

    def purge(self, store: TrafficStore, days: float) -> int:
        cutoff = datetime.now(timezone.utc) - timedelta(days=days)
        try:
            purged = store.purge(cutoff)
        except StoreUnavailable as exc:
            log.error("traffic_purge_failed", error=str(exc))
            return 0
        self._count("purged", purged)
        if purged:
            log.info("traffic_purged", records=purged, older_than=cutoff.isoformat())
        return purged

    # -- lifecycle ---------------------------------------------------------------------------------
    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record queued so far is written or dropped; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._done:
            target = self.stats.logged
            while self.stats.written + self.stats.dropped_store < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._done.wait(remaining)
        return True

    def close(self, timeout_s: float | None = None) -> bool:
        """Write what is queued (up to ``timeout_s``, default ``traffic_shutdown_s``), stop the
        thread, close the store. False, and logged, when records were still queued at the limit
        (they are counted in the journal as lost). Closing again does nothing more."""
        if self._stop.is_set() and not self._thread.is_alive():
            return True
        timeout = self.settings.traffic_shutdown_s if timeout_s is None else timeout_s
        started = time.monotonic()
        self._stop.set()
        with contextlib.suppress(queue.Full):  # a full queue keeps the writer busy anyway
            self._queue.put_nowait(None)
        self._thread.join(timeout)
        with self._done:
            stats = asdict(self.stats)
            pending = self.stats.logged - self.stats.written - self.stats.dropped_store
        if self._thread.is_alive():
            log.warning("traffic_flush_timeout", timeout_s=timeout, pending=pending, **stats)
            return False
        self._journal.close()
        log.info("traffic_flushed", flush_ms=round((time.monotonic() - started) * 1000, 1), **stats)
        return True
