"""``harmaug distill label``: teacher scores for Example files, cached so nothing is paid twice.

``TeacherLabeler`` scores the distinct records (by content id) in batches. Scores are cached in
SQLite (``<home>/cache/labels/labels.sqlite``) keyed by ``(teacher_id, content id)``: a rerun, or
a run resumed after a crash, asks the teacher only for what is missing. A batch reaches the cache
in one transaction after the teacher returned every score of it, all finite and in [0, 1]; a
batch that fails leaves no entry behind.

Output records get ``p_unsafe`` (the teacher's score) and ``meta["teacher"]`` (its id). A record
without a label gets the hard label ``p_unsafe > threshold`` and ``meta["label_source"] =
"teacher"``; existing (human) labels are kept unless ``relabel``. A ``<out>.labeling.json`` beside
the output records the teacher id, the counts and the cache hits.

Categories: a teacher that names them (``CategoryTeacher`` with ``with_categories``, the SPEC
option ``categories=true``) is asked through ``assess``; its Llama Guard 3 codes are cached beside
the score (a row cached without them is asked again) and written to ``meta["categories"]`` of each
record that ends up unsafe, unless the record keeps its own label and already has categories. An
unsafe record without codes stays "category unknown" (the trainer masks it).
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog
from tqdm import tqdm

from adapters.teachers import Assessment, Teacher, TeacherError
from distill.categories import CATEGORY_CODES, sort_codes
from distill.records import Example, atomic_writer, read_jsonl, write_jsonl
from distill.settings import DistillSettings, LabelingSettings

log = structlog.get_logger("harmaug.label")

SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    teacher_id TEXT NOT NULL,
    content_id TEXT NOT NULL,
    p_unsafe REAL NOT NULL,
    created_at TEXT NOT NULL,
    categories TEXT,
    PRIMARY KEY (teacher_id, content_id)
);
"""
# categories: a JSON list of Llama Guard 3 codes ([] when the teacher named none), NULL when the
# teacher was not asked for them.
UPSERT = """
INSERT INTO scores (teacher_id, content_id, p_unsafe, created_at, categories)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (teacher_id, content_id) DO UPDATE SET
    p_unsafe = excluded.p_unsafe,
    created_at = excluded.created_at,
    categories = COALESCE(excluded.categories, scores.categories)
"""
LOOKUP_CHUNK = 500  # ids per SELECT (SQLite limits bound parameters)


class LabelCache:
    """SQLite score cache; safe to share between threads and processes (WAL journal)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, timeout=30.0, check_same_thread=False, isolation_level=None
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(scores)")}
        if "categories" not in columns:  # a cache written before the categories
            self._conn.execute("ALTER TABLE scores ADD COLUMN categories TEXT")

    @classmethod
    def default(cls, settings: DistillSettings | None = None) -> LabelCache:
        settings = settings or DistillSettings()
        return cls(settings.home / "cache" / "labels" / "labels.sqlite")

    def get_many(self, teacher_id: str, ids: Iterable[str]) -> dict[str, float]:
        return {cid: float(p) for cid, p in self._lookup(teacher_id, ids, "p_unsafe")}

    def get_categories(self, teacher_id: str, ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """The cached category codes of the ids that have them (rows asked for categories)."""
        rows = self._lookup(teacher_id, ids, "categories", "AND categories IS NOT NULL ")
        return {cid: tuple(json.loads(codes)) for cid, codes in rows}

    def _lookup(
        self, teacher_id: str, ids: Iterable[str], column: str, where: str = ""
    ) -> list[tuple[str, Any]]:
        """(content_id, ``column``) of the cached rows of ``ids``, in chunks of ``LOOKUP_CHUNK``
        (SQLite's limit on bound parameters)."""
        wanted = list(dict.fromkeys(ids))
        found: list[tuple[str, Any]] = []
        with self._lock:
            for start in range(0, len(wanted), LOOKUP_CHUNK):
                chunk = wanted[start : start + LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                found += self._conn.execute(
                    f"SELECT content_id, {column} FROM scores WHERE teacher_id = ? "
                    f"{where}AND content_id IN ({marks})",
                    [teacher_id, *chunk],
                ).fetchall()
        return found

    def put_many(
        self,
        teacher_id: str,
        scores: dict[str, float],
        categories: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        """Store a batch atomically: all of it or none of it. Without ``categories`` a row
        keeps the codes it had."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        codes = categories or {}
        rows = [
            (teacher_id, cid, p, now, json.dumps(list(codes[cid])) if cid in codes else None)
            for cid, p in scores.items()
        ]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(UPSERT, rows)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def count(self, teacher_id: str | None = None) -> int:
        with self._lock:
            if teacher_id is None:
                return int(self._conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0])
            query = "SELECT COUNT(*) FROM scores WHERE teacher_id = ?"
            return int(self._conn.execute(query, (teacher_id,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


@dataclass
class LabelStats:
    teacher_id: str
    records: int
    distinct: int
    cache_hits: int
    scored: int
    labels_set: int
    unsafe: int
    seconds: float = 0.0
    with_categories: int = 0  # unsafe records given the teacher's category codes


def checked_scores(teacher: Teacher, pairs: Sequence[tuple[str, str | None]]) -> list[float]:
    """The teacher's scores, refused unless there is one finite probability per pair."""
    scores = teacher.score(pairs)
    if len(scores) != len(pairs):
        raise TeacherError(f"{teacher.teacher_id}: {len(scores)} scores for {len(pairs)} pairs")
    bad = [p for p in scores if not (isinstance(p, float | int) and math.isfinite(p))]
    if bad or any(not 0.0 <= p <= 1.0 for p in scores):
        raise TeacherError(f"{teacher.teacher_id}: scores outside [0, 1]: {(bad or scores)[:3]}")
    return [float(p) for p in scores]


def checked_assessments(
    teacher: Teacher, pairs: Sequence[tuple[str, str | None]]
) -> list[Assessment]:
    """The teacher's assessments, refused unless there is one per pair with a probability."""
    assessed = list(teacher.assess(pairs))  # type: ignore[attr-defined]
    if len(assessed) != len(pairs):
        raise TeacherError(f"{teacher.teacher_id}: {len(assessed)} assessments for {len(pairs)}")
    bad = [a.p_unsafe for a in assessed if not math.isfinite(a.p_unsafe)]
    if bad or any(not 0.0 <= a.p_unsafe <= 1.0 for a in assessed):
        raise TeacherError(f"{teacher.teacher_id}: scores outside [0, 1]: {bad[:3]}")
    return assessed


def assessment_codes(assessment: Assessment) -> tuple[str, ...]:
    """The Llama Guard 3 codes of an "unsafe" answer, in taxonomy order; () otherwise. Tokens
    that are no code (a line cut short, another taxonomy) are dropped."""
    if assessment.verdict != "unsafe":
        return ()
    found = (code.strip().upper() for code in assessment.categories)
    return sort_codes(code for code in found if code in CATEGORY_CODES)


def asks_categories(teacher: Teacher) -> bool:
    """Whether labelling asks this teacher for category codes (``categories=true``)."""
    return bool(getattr(teacher, "with_categories", False)) and callable(
        getattr(teacher, "assess", None)
    )


class TeacherLabeler:
    def __init__(
        self,
        teacher: Teacher,
        cache: LabelCache | None = None,
        settings: LabelingSettings | None = None,
    ) -> None:
        self.teacher = teacher
        self.cache = cache
        self.settings = settings or LabelingSettings()

    def scores(
        self, records: Sequence[Example], *, progress: bool = True
    ) -> tuple[dict[str, float], int]:
        """{content id: p_unsafe} for the distinct records, and how many came from the cache."""
        known, _, hits = self.assess(records, progress=progress)
        return known, hits

    def assess(
        self, records: Sequence[Example], *, progress: bool = True
    ) -> tuple[dict[str, float], dict[str, tuple[str, ...]], int]:
        """{content id: p_unsafe} and, from a teacher asked for them, {content id: category
        codes} for the distinct records; and how many came from the cache."""
        teacher_id = self.teacher.teacher_id
        with_categories = asks_categories(self.teacher)
        distinct = {record.id: record for record in records}
        known = self.cache.get_many(teacher_id, distinct) if self.cache else {}
        codes: dict[str, tuple[str, ...]] = {}
        if with_categories:
            codes = self.cache.get_categories(teacher_id, distinct) if self.cache else {}
            known = {cid: p for cid, p in known.items() if cid in codes}
        hits = len(known)
        todo = [record for cid, record in distinct.items() if cid not in known]
        batch_size = self.settings.batch_size
        with tqdm(
            total=len(distinct), initial=hits, desc="label", unit="ex", disable=not progress
        ) as bar:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                pairs = [(r.prompt, r.response) for r in batch]
                fresh_codes: dict[str, tuple[str, ...]] | None = None
                if with_categories:
                    assessed = checked_assessments(self.teacher, pairs)
                    fresh = {r.id: a.p_unsafe for r, a in zip(batch, assessed, strict=True)}
                    fresh_codes = {
                        r.id: assessment_codes(a) for r, a in zip(batch, assessed, strict=True)
                    }
                    codes.update(fresh_codes)
                else:
                    scores = checked_scores(self.teacher, pairs)
                    fresh = {record.id: p for record, p in zip(batch, scores, strict=True)}
                if self.cache:
                    self.cache.put_many(teacher_id, fresh, fresh_codes)
                known.update(fresh)
                bar.update(len(batch))
        return known, codes, hits

    def label(
        self, records: Sequence[Example], *, progress: bool = True
    ) -> tuple[list[Example], LabelStats]:
        started = time.perf_counter()
        scores, codes, hits = self.assess(records, progress=progress)
        teacher_id = self.teacher.teacher_id
        out: list[Example] = []
        labels_set = with_categories = 0
        for record in records:
            p = scores[record.id]
            meta = {**record.meta, "teacher": teacher_id}
            label = record.label
            relabelled = label is None or self.settings.relabel
            if relabelled:
                label = 1 if p > self.settings.threshold else 0
                meta["label_source"] = "teacher"
                labels_set += 1
            found = codes.get(record.id)
            if label == 1 and found and (relabelled or not record.meta.get("categories")):
                meta["categories"] = list(found)
                with_categories += 1
            out.append(record.model_copy(update={"p_unsafe": p, "label": label, "meta": meta}))
        stats = LabelStats(
            teacher_id=teacher_id,
            records=len(records),
            distinct=len(scores),
            cache_hits=hits,
            scored=len(scores) - hits,
            labels_set=labels_set,
            unsafe=sum(r.label == 1 for r in out),
            seconds=round(time.perf_counter() - started, 2),
            with_categories=with_categories,
        )
        log.info("labelled", **asdict(stats))
        return out, stats


def label_file(
    in_path: Path,
    out_path: Path,
    teacher: Teacher,
    settings: DistillSettings | None = None,
    *,
    progress: bool = True,
) -> LabelStats:
    """Label one Example JSONL file into another, with ``<out>.labeling.json`` beside it."""
    settings = settings or DistillSettings()
    cache = LabelCache.default(settings) if settings.labeling.cache else None
    try:
        labeller = TeacherLabeler(teacher, cache, settings.labeling)
        records, stats = labeller.label(read_jsonl(in_path), progress=progress)
    finally:
        if cache:
            cache.close()
    write_jsonl(out_path, records)
    with atomic_writer(out_path.with_name(out_path.name + ".labeling.json")) as handle:
        summary = {"input": str(in_path), "threshold": settings.labeling.threshold, **asdict(stats)}
        json.dump(summary, handle, indent=2)
        handle.write("\n")
    return stats


# -- CLI ---------------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    from adapters.spec import SpecError
    from distill.records import RecordsError
    from distill.teachers import load_teacher

    settings = DistillSettings()
    if args.batch_size:
        settings.labeling.batch_size = args.batch_size
    settings.labeling.relabel = settings.labeling.relabel or args.relabel
    settings.labeling.cache = settings.labeling.cache and not args.no_cache
    try:
        teacher = load_teacher(args.teacher)
        stats = label_file(Path(args.input), Path(args.out), teacher, settings)
    except (SpecError, TeacherError, RecordsError, OSError, RuntimeError) as exc:
        print(f"harmaug distill label: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{stats.records} records ({stats.distinct} distinct): {stats.cache_hits} from the "
        f"cache, {stats.scored} scored by {stats.teacher_id}; {stats.unsafe} unsafe -> {args.out}"
    )
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "label",
        help="score Example JSONL with a teacher (cached by teacher and content)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--teacher",
        metavar="SPEC",
        required=True,
        help="llama-guard:DIR, openai:MODEL@URL or classifier:champion|VERSION|DIR "
        "(see adapters.teachers)",
    )
    parser.add_argument("--in", dest="input", metavar="FILE", required=True, help="input JSONL")
    parser.add_argument("--out", metavar="FILE", required=True, help="output JSONL")
    parser.add_argument("--batch-size", type=int, help="pairs per teacher call")
    parser.add_argument("--relabel", action="store_true", help="overwrite existing labels")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    parser.set_defaults(func=_run)
