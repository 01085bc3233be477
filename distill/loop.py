"""``harmaug distill cycle`` and ``harmaug distill loop --every 1h``: retrain from logged traffic.

One cycle, stage by stage (``DistillSettings.loop`` holds every knob)::

    select    read the traffic store since the watermark; choose what the teacher labels within
              the budget: everything blocked or flagged, the uncertain band around the threshold,
              a random sample of the rest
    label     the teacher labels the selection (cached by teacher and content)
    snapshot  dataset = seeds + extra (HarmAug) data + traffic labelled in earlier cycles + the
              new labelled traffic, deduplicated, with a manifest; a fresh slice is held out
    train     fine-tune warm-started from the champion (keeping its Llama Guard 3 category
              columns; the teacher's category codes, ``categories=true``, train them)
    export    ONNX bundle, threshold calibrated, metrics in the manifest
    evaluate  champion and challenger on the fixed gate set and on the held-out fresh traffic
    publish   gate (not worse on either), register, promote
    finish    labelled traffic joins the pool; the report is written; the watermark moves

State lives in ``<home>/loop/``: ``state.json`` (watermark per store, the cycle in progress),
``cycles/<id>/`` (each stage's output, written atomically; a stage whose output exists is not
redone), ``reports/<id>.json`` and ``traffic_labelled.jsonl`` (the pool). The watermark moves
only in the last step, after everything else is durable, so a cycle that crashes at any stage is
resumed by the next run from its last finished stage, over exactly the same records: nothing is
lost and nothing counted twice. An exclusive ``flock`` on ``cycle.lock`` keeps two cycles (cron
overlap, two CronJob pods sharing the volume) from running at once.

A cycle that the gate rejects is a finished cycle: the watermark moves, the report says why,
and its labelled traffic stays in the pool for later cycles.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog

from adapters.teachers import Teacher
from adapters.traffic import TrafficRecord, TrafficStore, open_store
from distill.records import (
    Example,
    atomic_writer,
    content_id,
    dedup,
    read_jsonl,
    write_jsonl,
)
from distill.registry import Registry, gate, gate_metrics
from distill.settings import DistillSettings, LoopSettings, TrainRecipe

log = structlog.get_logger("harmaug.loop")

STAGES = ("select", "label", "snapshot", "train", "export", "evaluate", "publish", "finish")
FLAGGED_DECISIONS = frozenset({"block", "flag", "would_block"})
TRAFFIC_SOURCE = "traffic"


class LoopError(RuntimeError):
    """A cycle that cannot run (no champion, no teacher, ...); the message says why."""


class CycleBusy(LoopError):
    """Another cycle holds the lock."""


# -- state ---------------------------------------------------------------------------------------
def write_json(path: Path, data: Any) -> None:
    with atomic_writer(path) as handle:
        json.dump(data, handle, indent=2, default=str)
        handle.write("\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def store_key(url: str) -> str:
    """A watermark belongs to one store: keyed by a hash of its URL (no password in state)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


@contextlib.contextmanager
def cycle_lock(loop_dir: Path) -> Iterator[None]:
    loop_dir.mkdir(parents=True, exist_ok=True)
    with (loop_dir / "cycle.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CycleBusy(f"another cycle is running ({loop_dir / 'cycle.lock'})") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- selection -----------------------------------------------------------------------------------
def select_for_labelling(
    records: Sequence[TrafficRecord],
    *,
    threshold: float,
    budget: int,
    band: float,
    random_share: float,
    rng: random.Random,
) -> list[tuple[TrafficRecord, str]]:
    """Records for the teacher, each with why: flagged, uncertain or sample (see LoopSettings)."""
    flagged, uncertain, rest = [], [], []
    for record in records:
        p = record.p_unsafe
        if record.decision in FLAGGED_DECISIONS or (p is not None and p >= threshold):
            flagged.append(record)
        elif p is None or abs(p - threshold) <= band:
            uncertain.append(record)
        else:
            rest.append(record)
    uncertain.sort(key=lambda r: abs((r.p_unsafe if r.p_unsafe is not None else 0) - threshold))
    sample_quota = min(len(rest), int(budget * random_share))
    priority = budget - sample_quota
    chosen = [(r, "flagged") for r in _sample(flagged, priority, rng)]
    chosen += [(r, "uncertain") for r in uncertain[: priority - len(chosen)]]
    chosen += [(r, "sample") for r in _sample(rest, budget - len(chosen), rng)]
    return chosen


def _sample(records: list[TrafficRecord], n: int, rng: random.Random) -> list[TrafficRecord]:
    return list(records) if len(records) <= n else rng.sample(records, max(n, 0))


def traffic_example(record: TrafficRecord, reason: str) -> Example:
    return Example(
        prompt=record.prompt or "",
        response=record.completion,
        source=TRAFFIC_SOURCE,
        meta={
            "traffic_id": record.id,
            "student_p_unsafe": record.p_unsafe,
            "decision": record.decision,
            "guard_version": record.guard_version,
            "selected": reason,
        },
    )


def is_holdout(record: Example, fraction: float) -> bool:
    """Deterministic by content: the same record always falls on the same side."""
    return int(record.id[:8], 16) / 0x1_0000_0000 < fraction


def agreement(records: Sequence[Example], threshold: float) -> dict[str, Any]:
    """Teacher labels against the student's logged decisions."""
    scored = [r for r in records if r.meta.get("student_p_unsafe") is not None]
    student = [int(r.meta["student_p_unsafe"] >= threshold) for r in scored]
    teacher = [int(r.label or 0) for r in scored]
    both = len(scored)
    return {
        "n": both,
        "agreement": sum(s == t for s, t in zip(student, teacher, strict=True)) / both
        if both
        else None,
        "student_missed": sum(t and not s for s, t in zip(student, teacher, strict=True)),
        "student_false_alarms": sum(s and not t for s, t in zip(student, teacher, strict=True)),
        "teacher_unsafe": sum(teacher),
    }


# -- one cycle -----------------------------------------------------------------------------------
class Cycle:
    """One retraining cycle over a fixed window of the traffic store (see the module docstring)."""

    def __init__(
        self,
        settings: DistillSettings,
        plan: dict[str, Any],
        store: TrafficStore,
        *,
        teacher: Teacher | None,
        progress: bool,
    ) -> None:
        self.settings = settings
        self.loop: LoopSettings = settings.loop
        self.plan = plan
        self.store = store
        self._teacher = teacher
        self.progress = progress
        self.loop_dir = settings.home / "loop"
        self.dir = self.loop_dir / "cycles" / plan["cycle_id"]
        self.registry = Registry(settings.registry_path())
        self.base_path = self.registry.path(plan["base_version"])
        from guard_plugin.bundle import GuardBundle

        self.base_manifest = GuardBundle.load(self.base_path).manifest
        self.timings: dict[str, float] = {}

    # paths
    def out(self, name: str) -> Path:
        return self.dir / name

    @property
    def pool_path(self) -> Path:
        return self.loop_dir / "traffic_labelled.jsonl"

    def run(self, after_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
        self.dir.mkdir(parents=True, exist_ok=True)
        for stage in STAGES:
            started = time.perf_counter()
            done = getattr(self, f"stage_{stage}")()
            if done is not None:  # the stage ran now (None: its output already existed)
                self.timings[f"{stage}_s"] = round(time.perf_counter() - started, 3)
            if after_stage is not None:
                after_stage(stage)
            if stage == "select" and read_json(self.out("selection.json"))["skipped"]:
                return self.report(skipped=True)
        return self.report()

    # stages: each returns None when its output already exists, True when it ran
    def stage_select(self) -> bool | None:
        if self.out("selection.json").exists():
            return None
        records, to_mark = self.store.read_since(self.plan["from_watermark"], self.loop.max_read)
        with_text = [r for r in records if r.prompt]
        distinct = {content_id(r.prompt or "", r.completion): r for r in with_text}
        chosen = select_for_labelling(
            list(distinct.values()),
            threshold=self.base_manifest.threshold,
            budget=self.loop.budget,
            band=self.loop.uncertain_band,
            random_share=self.loop.random_share,
            rng=random.Random(f"{self.loop.seed}:{self.plan['cycle_id']}"),
        )
        write_jsonl(self.out("selection.jsonl"), [traffic_example(r, why) for r, why in chosen])
        reasons = [why for _, why in chosen]
        write_json(
            self.out("selection.json"),
            {
                "from_watermark": self.plan["from_watermark"],
                "to_watermark": to_mark,
                "read": len(records),
                "with_text": len(with_text),
                "distinct": len(distinct),
                "selected": {why: reasons.count(why) for why in ("flagged", "uncertain", "sample")},
                "threshold": self.base_manifest.threshold,
                "skipped": len(with_text) < self.loop.min_records,
            },
        )
        return True

    def teacher(self) -> Teacher:
        if self._teacher is None:
            if not self.loop.teacher:
                raise LoopError("no teacher: set HARMAUG_LOOP__TEACHER or pass --teacher SPEC")
            from distill.teachers import load_teacher

            self._teacher = load_teacher(self.loop.teacher)
        return self._teacher

    def stage_label(self) -> bool | None:
        if self.out("labelled.json").exists():
            return None
        from distill.labeling import LabelCache, TeacherLabeler

        cache = LabelCache.default(self.settings) if self.settings.labeling.cache else None
        labelling = self.settings.labeling.model_copy(update={"relabel": True})
        try:
            labeller = TeacherLabeler(self.teacher(), cache, labelling)
            records, stats = labeller.label(read_jsonl(self.out("selection.jsonl")), progress=False)
        finally:
            if cache is not None:
                cache.close()
        write_jsonl(self.out("labelled.jsonl"), records)
        summary = {
            "teacher": stats.teacher_id,
            "records": stats.records,
            "cache_hits": stats.cache_hits,
            "scored": stats.scored,
            "unsafe": stats.unsafe,
            "agreement": agreement(records, self.base_manifest.threshold),
        }
        write_json(self.out("labelled.json"), summary)
        return True

    def _files(self, setting: Path | None, default_name: str) -> Path | None:
        path = setting or self.settings.seeds_dir() / default_name
        return path if path.is_file() else None

    def stage_snapshot(self) -> bool | None:
        manifest_path = self.out("dataset/manifest.json")
        if manifest_path.exists():
            return None
        fresh = read_jsonl(self.out("labelled.jsonl"))
        holdout = [r for r in fresh if is_holdout(r, self.loop.holdout_fraction)]
        held = {r.id for r in holdout}
        parts: dict[str, list[Example]] = {}
        seeds = self._files(None, "train.jsonl") if self.loop.seeds else None
        if seeds is not None:
            parts["seeds"] = read_jsonl(seeds)
        for extra in self.loop.extra_data:
            parts[f"extra:{extra.name}"] = read_jsonl(extra)
        if self.pool_path.is_file():
            parts["traffic_pool"] = read_jsonl(self.pool_path)
        parts["traffic_new"] = [r for r in fresh if r.id not in held]
        merged = [r for part in parts.values() for r in part if r.id not in held]
        train = dedup(merged)
        write_jsonl(self.out("dataset/train.jsonl"), train)
        write_jsonl(self.out("dataset/holdout.jsonl"), holdout)
        write_json(
            manifest_path,
            {
                "cycle_id": self.plan["cycle_id"],
                "watermark": [self.plan["from_watermark"], self._selection()["to_watermark"]],
                "teacher": read_json(self.out("labelled.json"))["teacher"],
                "parts": {name: len(records) for name, records in parts.items()},
                "train": len(train),
                "duplicates_removed": len(merged) - len(train),
                "holdout": len(holdout),
                "train_unsafe": sum(r.label == 1 for r in train),
                "sha256": {
                    name: _sha256(self.out(f"dataset/{name}.jsonl"))
                    for name in ("train", "holdout")
                },
                "created_at": datetime.now(timezone.utc).isoformat(),
            },
        )
        return True

    def _selection(self) -> dict[str, Any]:
        return dict(read_json(self.out("selection.json")))

    def recipe(self) -> TrainRecipe:
        """The loop's recipe in the champion's windows; a champion with categories keeps them
        (the challenger trains its category columns on, a challenger without them could not
        pass the gate), one without them gets them only when the recipe asks for them."""
        update: dict[str, Any] = {
            "max_length": self.base_manifest.max_length,
            "window_stride": self.base_manifest.window_stride,
        }
        if self.base_manifest.categories:
            update["categories"] = True
        return self.loop.recipe.model_copy(update=update)

    def stage_train(self) -> bool | None:
        if self.out("train.json").exists():
            return None
        from distill.trainer import train

        result = train(
            read_jsonl(self.out("dataset/train.jsonl")),
            base_model=self.base_path,
            out_dir=self.out("run"),
            recipe=self.recipe(),
            progress=self.progress,
        )
        write_json(self.out("train.json"), result.to_dict())
        return True

    def stage_export(self) -> bool | None:
        bundle = self.out("bundle")
        if bundle.exists():
            return None
        from distill.bootstrap import CALIBRATION_CAPS, seal_bundle

        train = read_jsonl(self.out("dataset/train.jsonl"))
        holdout = read_jsonl(self.out("dataset/holdout.jsonl"))
        validation_file = self._files(self.loop.validation_set, "validation.jsonl")
        validation = read_jsonl(validation_file) if validation_file else holdout
        staging = self.out("bundle.partial")
        shutil.rmtree(staging, ignore_errors=True)
        seal_bundle(
            self.out("run/model"),
            staging,
            version=self.plan["version"],
            base_model=self.base_manifest.base_model,
            recipe=self.recipe(),
            max_windows=self.base_manifest.max_windows,
            calibration=train,
            validation=validation,
            test=self._gate_records(),
            training_data={
                "cycle": self.plan["cycle_id"],
                "warm_start": self.plan["base_version"],
                "dataset": read_json(self.out("dataset/manifest.json")),
                "recipe": self.recipe().model_dump(),
            },
            report_dir=self.out("report"),
            int8=self.loop.int8,
            fallback_threshold=self.base_manifest.threshold,
            caps=CALIBRATION_CAPS,  # when the validation set holds seed records
            progress=self.progress,
        )
        staging.rename(bundle)
        return True

    def gate_set(self) -> Path:
        path = self._files(self.loop.gate_set, "test.jsonl")
        if path is None:
            raise LoopError(
                "no gate set: set HARMAUG_LOOP__GATE_SET or build the seeds "
                "(harmaug distill seeds) for <home>/seeds/test.jsonl"
            )
        return path

    def _gate_records(self) -> list[Example]:
        return read_jsonl(self.gate_set())

    def stage_evaluate(self) -> bool | None:
        if self.out("evaluation.json").exists():
            return None
        from distill.evaluation import evaluate_bundle

        holdout = read_jsonl(self.out("dataset/holdout.jsonl"))
        sets = {"gate": self._gate_records(), "holdout": holdout}
        results: dict[str, Any] = {}
        for who, path in (("champion", self.base_path), ("challenger", self.out("bundle"))):
            results[who] = {}
            for name, records in sets.items():
                labels = {r.label for r in records}
                if name == "holdout" and (len(records) < self.loop.min_holdout or labels != {0, 1}):
                    continue
                measured = evaluate_bundle(path, records, progress=False)
                results[who][name] = measured.to_dict()
        write_json(self.out("evaluation.json"), results)
        return True

    def stage_publish(self) -> bool | None:
        if self.out("publish.json").exists():
            return None
        evaluation = read_json(self.out("evaluation.json"))
        champion, challenger = evaluation["champion"], evaluation["challenger"]
        version = self.plan["version"]
        decision: dict[str, Any] = {"version": version, "promoted": False}
        if "holdout" in challenger:
            ok, reason = gate(
                gate_metrics(champion["holdout"]),
                gate_metrics(challenger["holdout"]),
                self.loop.tolerance,
            )
            decision["holdout_gate"] = {"passed": ok, "reason": reason}
            if not ok:
                decision["reason"] = f"held-out traffic: {reason}"
        else:
            decision["holdout_gate"] = {"passed": None, "reason": "holdout too small or one-class"}
        if "reason" not in decision:
            known = {
                str(self.base_path.resolve()): gate_metrics(champion["gate"]),
                str(self.registry.versions.resolve() / version): gate_metrics(challenger["gate"]),
            }

            def scorer(bundle: Path, data: Path) -> dict[str, float]:
                cached = known.get(str(Path(bundle).resolve()))
                if cached is not None:
                    return cached
                from distill.registry import _evaluate

                return _evaluate(bundle, data)

            if version not in {row["version"] for row in self.registry.entries()}:
                self.registry.register(self.out("bundle"))
            if self.registry.champion() == version:  # promoted before a crash
                decision.update(promoted=True, reason="promoted (resumed)")
            else:
                gated = self.registry.promote(
                    version, gate_data=self.gate_set(), scorer=scorer, tolerance=self.loop.tolerance
                )
                decision.update(promoted=gated.promote, reason=gated.reason)
        write_json(self.out("publish.json"), decision)
        return True

    def stage_finish(self) -> bool | None:
        fresh = read_jsonl(self.out("labelled.jsonl"))
        pool = read_jsonl(self.pool_path) if self.pool_path.is_file() else []
        write_jsonl(self.pool_path, dedup([*pool, *fresh]))  # idempotent when redone
        shutil.rmtree(self.out("run/checkpoints"), ignore_errors=True)
        return True

    def report(self, *, skipped: bool = False) -> dict[str, Any]:
        def optional(name: str) -> Any:
            path = self.out(name)
            return read_json(path) if path.exists() else None

        selection = self._selection()
        report = {
            "cycle_id": self.plan["cycle_id"],
            "version": self.plan["version"],
            "base_version": self.plan["base_version"],
            "from_watermark": self.plan["from_watermark"],
            "to_watermark": selection["to_watermark"],
            "skipped": skipped,
            "selection": selection,
            "labelling": optional("labelled.json"),
            "dataset": optional("dataset/manifest.json"),
            "train": optional("train.json"),
            "metrics": optional("evaluation.json"),
            "decision": optional("publish.json")
            or {"promoted": False, "reason": f"fewer than {self.loop.min_records} new records"},
            "stage_seconds": self.timings,
            "finished_at": datetime.now(timezone.utc).isoformat(),
        }
        write_json(self.out("report.json"), report)
        write_json(self.loop_dir / "reports" / f"{self.plan['cycle_id']}.json", report)
        return report


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the cycle with its state and lock -------------------------------------------------------------
def run_cycle(
    settings: DistillSettings | None = None,
    *,
    teacher: Teacher | None = None,
    store: TrafficStore | None = None,
    progress: bool = False,
    after_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) one cycle; returns its report. Raises CycleBusy when one is running."""
    settings = settings or DistillSettings()
    loop_dir = settings.home / "loop"
    url = settings.loop.store or str(settings.home / "traffic.sqlite")
    with cycle_lock(loop_dir):
        state_path = loop_dir / "state.json"
        state: dict[str, Any] = {"watermarks": {}, "cycles": 0, "pending": None}
        if state_path.exists():
            state.update(read_json(state_path))
        key = store_key(url)
        plan: dict[str, Any] | None = state["pending"]
        if plan is None:
            base = Registry(settings.registry_path()).champion()
            if base is None:
                raise LoopError(
                    "the registry has no champion to retrain (harmaug distill bootstrap)"
                )
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
            number = state["cycles"] + 1
            plan = {
                "cycle_id": f"{stamp}-{number}",
                "version": f"loop-{stamp}-{number}",
                "base_version": base,
                "store": key,
                "from_watermark": state["watermarks"].get(key, 0),
            }
            state["pending"] = plan
            write_json(state_path, state)
        log.info("cycle_start", **plan)
        cycle = Cycle(settings, plan, store or open_store(url), teacher=teacher, progress=progress)
        report = cycle.run(after_stage)
        if not report["skipped"]:  # the watermark moves only now, after everything is durable
            state["watermarks"][plan["store"]] = report["to_watermark"]
            state["cycles"] += 1
        else:
            shutil.rmtree(cycle.dir, ignore_errors=True)
        state["pending"] = None
        write_json(state_path, state)
        log.info(
            "cycle_done",
            cycle_id=plan["cycle_id"],
            guard_version=plan["version"],
            skipped=report["skipped"],
            decision=report["decision"],
        )
        return report


# -- CLI -----------------------------------------------------------------------------------------
DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``1h30m``, ``1d`` -> seconds."""
    parts = DURATION.findall(text.strip().lower())
    if not parts or "".join(f"{n}{u}" for n, u in parts) != text.strip().lower():
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30m, 1h, 1h30m, 1d)")
    return sum(float(n) * UNIT_S[u] for n, u in parts)


def _settings(args: argparse.Namespace) -> DistillSettings:
    settings = DistillSettings()
    updates = {
        key: value
        for key, value in (
            ("teacher", args.teacher),
            ("store", args.store),
            ("budget", args.budget),
        )
        if value is not None
    }
    return settings.model_copy(update={"loop": settings.loop.model_copy(update=updates)})


def _cmd_cycle(args: argparse.Namespace) -> int:
    try:
        report = run_cycle(_settings(args), progress=not args.quiet)
    except CycleBusy as exc:
        print(f"harmaug distill cycle: {exc}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: try again later
    except LoopError as exc:
        print(f"harmaug distill cycle: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, default=str))
    return 0


def _cmd_loop(args: argparse.Namespace) -> int:
    every = args.every
    cycles = 0
    while args.max_cycles is None or cycles < args.max_cycles:
        started = time.monotonic()
        try:
            report = run_cycle(_settings(args), progress=not args.quiet)
            print(json.dumps({k: report[k] for k in ("cycle_id", "skipped", "decision")}))
        except CycleBusy as exc:
            log.warning("cycle_busy", error=str(exc))
        except Exception as exc:  # a failed cycle is resumed by the next one
            log.error("cycle_failed", error=f"{type(exc).__name__}: {exc}")
        cycles += 1
        if args.max_cycles is not None and cycles >= args.max_cycles:
            break
        time.sleep(max(0.0, every - (time.monotonic() - started)))
    return 0


def _cmd_traffic_export(args: argparse.Namespace) -> int:
    from adapters.traffic.jsonl import export_jsonl

    settings = DistillSettings()
    url = args.store or settings.loop.store or str(settings.home / "traffic.sqlite")
    count, mark = export_jsonl(open_store(url), Path(args.out), args.since)
    print(json.dumps({"records": count, "watermark": mark, "out": args.out}))
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "traffic-export", help="write logged traffic to JSONL (one TrafficRecord a line)"
    )
    parser.add_argument("--store", metavar="URL", help="traffic store URL (default: the loop's)")
    parser.add_argument("--out", metavar="FILE", required=True)
    parser.add_argument("--since", type=int, default=0, help="watermark to start after")
    parser.set_defaults(func=_cmd_traffic_export)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--teacher", metavar="SPEC", help="teacher SPEC (HARMAUG_LOOP__TEACHER)")
    common.add_argument("--store", metavar="URL", help="traffic store URL (HARMAUG_LOOP__STORE)")
    common.add_argument("--budget", type=int, help="records the teacher labels per cycle")
    common.add_argument("--quiet", action="store_true", help="no progress bars")

    parser = subparsers.add_parser(
        "cycle",
        parents=[common],
        help="one retraining cycle from logged traffic (for cron / a CronJob)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=_cmd_cycle)

    parser = subparsers.add_parser(
        "loop", parents=[common], help="run a retraining cycle every DURATION, forever"
    )
    parser.add_argument("--every", type=parse_duration, required=True, metavar="DURATION")
    parser.add_argument("--max-cycles", type=int, help="stop after this many cycles")
    parser.set_defaults(func=_cmd_loop)
