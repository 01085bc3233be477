"""Refit a guard's first stage with other fit settings, on the same student, and measure it.

    python benchmarks/first_stage_refit.py --out DIR [--guard champion|VERSION|DIR]
        [--centre 0.5] [--seed 42] [--folds 4]

Copies the guard's bundle to ``DIR`` (replaced if it exists) and rebuilds its first stage there
exactly as ``harmaug distill bootstrap`` does (``distill.cascade.build_first_stage``: the student
scores the bootstrap's train mix, a first stage is distilled from the bundle's own weights and
fitted to those scores, the cuts are bounded from the caught validation and cross-fitted training
items), with the fit settings given. The student and its threshold are untouched, so with the
defaults and the bootstrap's seed (42) on the home that built the guard the copy comes out as the
guard itself. Prints one JSON object: the cuts and their calibration, the shares routed to the
student on validation, the bootstrap's test-set gate (``recall_loss`` at most
``distill.cascade.MAX_RECALL_LOSS``; a bootstrap would drop a first stage that fails it) and,
per held-out set of ``benchmarks/heldout_eval.py``, the recall the cascade loses and the share of
items that reach the student. Serve or compare the copy with ``--guard DIR`` of the other
benchmarks (``gateway_overhead.py --compare-guard DIR``).

Needs the bootstrap's data in ``$HARMAUG_HOME`` (seeds and wheels, as after ``harmaug distill
bootstrap``). About 8-10 minutes on 2 cores (the student scores ~17,000 items; five fits).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.heldout_eval import cascade_sets
from distill.bootstrap import bootstrap_test_sample, load_data
from distill.cascade import CALIBRATION_FOLDS, MAX_RECALL_LOSS, TARGET_CENTRE, build_first_stage
from distill.evaluation import evaluate_bundle
from distill.heldout import heldout_sets, score_sets
from distill.settings import DistillSettings
from guard_plugin.bundle import GuardBundle, write_manifest
from guard_plugin.locate import resolve_guard_path
from guard_plugin.model import GuardModel
from guard_plugin.settings import GuardSettings


def refit(source: Path, out: Path, *, centre: float, seed: int, folds: int) -> dict[str, Any]:
    """Copy ``source`` to ``out`` with a first stage rebuilt there; what the build measured."""
    settings = DistillSettings()
    data = load_data(settings, progress=False)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out)
    manifest = GuardBundle.load(out).manifest
    if manifest.first_stage is not None:
        shutil.rmtree(out / manifest.first_stage.path)
        manifest = manifest.model_copy(update={"first_stage": None})
        write_manifest(out, manifest)
    started = time.perf_counter()
    built = build_first_stage(
        out,
        out,  # the bundle's safetensors are the student's weights: the static model's source
        train=data.mix("train", "jailbreak"),
        validation=data.mix("validation", "jailbreak"),
        threshold=manifest.threshold,
        seed=seed,
        progress=False,
        calibration_folds=folds,
        centre=centre,
    )
    write_manifest(out, manifest.model_copy(update={"first_stage": built}))
    fit_s = time.perf_counter() - started
    gate = evaluate_bundle(out, bootstrap_test_sample(data), progress=False).cascade or {}
    validation = built.metrics["validation"]
    return {
        "cut_prompt": round(built.cut_prompt, 4),
        "cut_completion": round(built.cut_completion, 4),
        "calibration": built.metrics["calibration"],
        "validation_student_share": round(validation["student_share"], 4),
        "validation_student_share_safe": round(validation["student_share_safe"], 4),
        "test": {key: gate.get(key) for key in ("caught", "missed_of_caught", "recall_loss",
                                                "student_share", "auprc", "student_auprc")},
        "test_gate_passes": gate.get("recall_loss", 1.0) <= MAX_RECALL_LOSS,
        "fit_s": round(fit_s, 1),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guard", default="champion")
    parser.add_argument("--out", type=Path, required=True, help="where the refitted copy goes")
    parser.add_argument(
        "--centre",
        type=float,
        default=TARGET_CENTRE,
        help="the student's score the fit learns as 0.5 (distill.cascade.fit_first_stage)",
    )
    parser.add_argument("--seed", type=int, default=42, help="the fit's seed (bootstrap: 42)")
    parser.add_argument("--folds", type=int, default=CALIBRATION_FOLDS)
    args = parser.parse_args()
    if not 0.0 < args.centre < 1.0:
        parser.error("--centre must be between 0 and 1")
    source = resolve_guard_path(GuardSettings(guard=args.guard))
    if args.out.resolve() == source.resolve():
        parser.error("--out must not be the guard's own directory")
    report = {
        "benchmark": "first_stage_refit",
        "guard": str(source),
        "out": str(args.out),
        "centre": args.centre,
        "seed": args.seed,
        **refit(source, args.out, centre=args.centre, seed=args.seed, folds=args.folds),
    }
    served = GuardSettings(guard=str(args.out))
    model = GuardModel.load(args.out, served)
    sets = heldout_sets(DistillSettings())
    report["heldout"] = cascade_sets(model, sets, score_sets(model, sets))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
