"""A served guard on written probes of the moderation categories, per category.

    python benchmarks/category_probes.py [--guard champion|VERSION|DIR] [--show]

``benchmarks/data/category_probes.jsonl`` holds 100 user messages written for this project, apart
from every training list: in each of five categories (hate, harassment, self-harm, sexual,
violence) ten unsafe messages and ten safe ones on the same subject (support, history, health,
identity, fiction). They are no public benchmark and too few for fine figures; they show which
category a guard misses, and which safe subjects it flags. Prints one JSON object: the threshold,
per category AUPRC, recall and false-positive rate at the guard's threshold, and the pooled
AUPRC; ``--show`` adds every message with its score (the texts are the repository's own).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from distill.evaluation import summary_metrics
from guard_plugin.locate import resolve_guard_path
from guard_plugin.model import GuardModel
from guard_plugin.settings import GuardSettings

PROBES = Path(__file__).parent / "data" / "category_probes.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guard", default="champion")
    parser.add_argument("--show", action="store_true", help="print every message and its score")
    args = parser.parse_args()
    probes = [json.loads(line) for line in PROBES.read_text(encoding="utf-8").splitlines()]
    guard_settings = GuardSettings(guard=args.guard)
    model = GuardModel.load(resolve_guard_path(guard_settings), guard_settings)
    scores = [v.p_unsafe for v in model.score([(p["text"], None) for p in probes])]

    def metrics(rows: list[int]) -> dict[str, float]:
        found = summary_metrics(
            [probes[i]["label"] for i in rows], [scores[i] for i in rows], model.threshold
        )
        return {k: round(float(found[k]), 3) for k in ("auprc", "recall", "fpr")}

    categories = sorted({p["category"] for p in probes})
    report = {
        "benchmark": "category_probes",
        "guard_version": model.version,
        "threshold": round(model.threshold, 4),
        "categories": {
            name: metrics([i for i, p in enumerate(probes) if p["category"] == name])
            for name in categories
        },
        "all": metrics(list(range(len(probes)))),
    }
    if args.show:
        report["scores"] = [
            {**p, "p_unsafe": round(s, 3)}
            for p, s in sorted(zip(probes, scores, strict=True), key=lambda x: -x[1])
        ]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
