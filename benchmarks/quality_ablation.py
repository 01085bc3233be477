"""Default-guard quality ablation on the held-out public evaluation (``distill.heldout``).

    python benchmarks/quality_ablation.py --out quality_ablation.json

One student per stage of ``distill.mix``, trained as the bootstrap trains (its recipe, unless
``--max-steps``):

  seeds                 prompt-only seed records, from all-MiniLM-L6-v2
  pairs                 + response pairs (human-scored answers, paired Q&A, refused requests)
  jailbreak             + requests and pairs wrapped in the training family of jailbreak
                        templates (the bootstrap's first stage and the teacher's harm judge)
  jailbreak+continued   the jailbreak student trained on for the second stage's steps, same mix
                        (control: what the extra steps alone give)
  harmaug               the jailbreak student trained on for those steps with the shipped
                        HarmAug records labelled by the offline teacher (the default guard)

Each student is calibrated as a bundle is (``distill.evaluation.calibrate``: response weight,
max-F1 thresholds for prompts and for pairs, without the edgy cap) on a seeded sample of the
validation mix (the same for every row); AUPRC, F1 (and FPR on the all-safe edgy set) are
measured on each held-out set. The offline teacher row is the composition teacher's agreement
with the held-out human labels (threshold 0.5). Every run lives in the bootstrap's run directory
(``stage_dir``), so on a machine that ran the bootstrap the jailbreak and harmaug runs are
reused. CPU-heavy: tens of minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from distill.bootstrap import (
    BOOTSTRAP_RECIPE,
    SERVE_MAX_WINDOWS,
    BootstrapData,
    _sample,
    bootstrap_run_dir,
    continued,
    label_synthetic,
    load_data,
    offline_teacher,
    stage_dir,
    student_base,
    teacher_run_dir,
)
from distill.evaluation import calibrate
from distill.heldout import build_heldout, heldout_metrics, score_sets
from distill.mix import Stage
from distill.offline_teacher import trained_guard
from distill.records import Example
from distill.settings import DistillSettings, TrainRecipe
from distill.trainer import train


def calibrated_guard(model_dir: Path, validation: list[Example], max_length: int) -> Any:
    """A trained HF directory as the gateway serves it (windows, max over windows), calibrated
    on ``validation`` as a bundle is (response weight, threshold, response threshold)."""
    model = trained_guard(model_dir, max_length=max_length, max_windows=SERVE_MAX_WINDOWS)
    chosen = calibrate(model, validation)
    model.bundle.manifest = model.manifest.model_copy(update=chosen.manifest_fields())
    return model


def run(settings: DistillSettings, recipe: TrainRecipe, validation_size: int) -> dict[str, Any]:
    started = time.perf_counter()
    data: BootstrapData = load_data(settings)
    heldout = build_heldout(settings, data.splits["test"], data.heldout_templates)
    validation = _sample(data.mix("validation", "jailbreak"), validation_size, seed=3)
    run_dir = bootstrap_run_dir(settings, recipe)
    first = stage_dir(run_dir, "jailbreak") / "model"
    rows: list[tuple[str, Stage, Path | None, TrainRecipe, Path]] = [
        ("seeds", "seeds", None, recipe, stage_dir(run_dir, "seeds")),
        ("pairs", "pairs", None, recipe, stage_dir(run_dir, "pairs")),
        ("jailbreak", "jailbreak", None, recipe, stage_dir(run_dir, "jailbreak")),
        # Control for the extra steps of the HarmAug stage: the same continuation without it.
        ("jailbreak+continued", "jailbreak", first, continued(recipe), run_dir / "continued"),
        ("harmaug", "harmaug", first, continued(recipe), stage_dir(run_dir, "harmaug")),
    ]
    stages: dict[str, Any] = {}
    teacher: dict[str, Any] = {}
    synthetic: list[Example] = []
    for name, stage, base, row_recipe, out_dir in rows:
        if stage == "harmaug":
            teacher_dir = teacher_run_dir(run_dir)
            composition = offline_teacher(data, first, teacher_dir, recipe)
            synthetic, teacher_info = label_synthetic(data, composition, teacher_dir, True)
            scores = {
                set_name: composition.score([(r.prompt, r.response) for r in records])
                for set_name, records in heldout.items()
            }
            teacher = {**teacher_info, "heldout": heldout_metrics(heldout, scores, 0.5)}
        records = data.mix("train", stage, synthetic)
        result = train(
            records, base_model=base or student_base(), out_dir=out_dir, recipe=row_recipe
        )
        model = calibrated_guard(result.model_dir, validation, recipe.max_length)
        threshold = model.threshold
        scores = score_sets(model, heldout)
        stages[name] = {
            "train_records": len(records),
            "start": "all-MiniLM-L6-v2" if base is None else "the jailbreak student",
            "steps": result.steps,
            "train_wall_s": round(result.wall_s, 1),
            "threshold": round(threshold, 4),
            "heldout": heldout_metrics(heldout, scores, threshold),
        }
        print(json.dumps({"stage": name, **stages[name]}), file=sys.stderr, flush=True)
    return {
        "benchmark": "quality_ablation",
        "recipe": recipe.model_dump(),
        "heldout_sets": {name: len(records) for name, records in heldout.items()},
        "validation_records": len(validation),
        "stages": stages,
        "offline_teacher": teacher,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-steps", type=int, help="override the bootstrap's step budget")
    parser.add_argument(
        "--validation", type=int, default=800, help="validation records for the thresholds"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    recipe = BOOTSTRAP_RECIPE
    if args.max_steps:
        recipe = recipe.model_copy(update={"max_steps": args.max_steps})
    report = run(DistillSettings(), recipe, args.validation)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
