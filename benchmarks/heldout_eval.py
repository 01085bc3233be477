"""A served guard on the held-out public evaluation (``distill.heldout``), at its own threshold.

    python benchmarks/heldout_eval.py [--guard champion|VERSION|DIR]

Builds the held-out sets in ``$HARMAUG_HOME/heldout`` when they are missing (from the pinned
wheels and the seed test split), scores them with the guard exactly as the gateway serves it
(its backend, windows and threshold) and prints one JSON object: per set AUPRC, F1, precision,
recall and FPR (FPR alone for the all-safe edgy set).
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

from distill.bootstrap import load_data
from distill.heldout import SETS, build_heldout, heldout_metrics, read_heldout, score_sets
from distill.settings import DistillSettings
from guard_plugin.locate import resolve_guard_path
from guard_plugin.model import GuardModel
from guard_plugin.settings import GuardSettings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guard", default="champion")
    args = parser.parse_args()
    settings = DistillSettings()
    if all((settings.home / "heldout" / f"{name}.jsonl").is_file() for name in SETS):
        sets = read_heldout(settings.home)
    else:
        data = load_data(settings, progress=False)
        sets = build_heldout(settings, data.splits["test"], data.heldout_templates)
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
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
