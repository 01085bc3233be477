"""A served guard on written probes of the moderation categories, per category.

    python benchmarks/category_probes.py [--guard champion|VERSION|DIR] [--show]

``benchmarks/data/category_probes.jsonl`` holds 100 user messages written for this project, apart
from every training list: in each of five categories (hate, harassment, self-harm, sexual,
violence) ten unsafe messages and ten safe ones on the same subject (support, history, health,
identity, fiction). They are no public benchmark and too few for fine figures; they show which
category a guard misses, and which safe subjects it flags. Prints one JSON object: the threshold,
per category AUPRC, recall and false-positive rate at the guard's threshold, and the pooled
AUPRC; ``--show`` adds every message with its score (the texts are the repository's own).

A guard with Llama Guard 3 categories (``categories`` in ``guard.json``) is also measured on its
category probability: under ``lg3_categories``, for each probe category the AUPRC of the matching
code's probability (hate and harassment S10, self-harm S11, sexual S12, violence S1), its unsafe
messages against every safe message and the unsafe messages of categories with another code,
and its recall and false-positive rate at that category's threshold.
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
# Probe category -> the Llama Guard 3 category it belongs to.
LG3_CODES = {
    "hate": "S10",
    "harassment": "S10",
    "self_harm": "S11",
    "sexual": "S12",
    "violence": "S1",
}


def read_probes() -> list[dict]:
    return [json.loads(line) for line in PROBES.read_text(encoding="utf-8").splitlines()]


def probe_metrics(
    probes: list[dict], scores: list[float], threshold: float
) -> dict[str, dict[str, float]]:
    """AUPRC, recall and FPR at ``threshold`` per probe category, and over all probes
    (``all``)."""

    def metrics(rows: list[int]) -> dict[str, float]:
        found = summary_metrics(
            [probes[i]["label"] for i in rows], [scores[i] for i in rows], threshold
        )
        return {k: round(float(found[k]), 3) for k in ("auprc", "recall", "fpr")}

    per_category = {
        name: metrics([i for i, p in enumerate(probes) if p["category"] == name])
        for name in sorted({p["category"] for p in probes})
    }
    return {**per_category, "all": metrics(list(range(len(probes))))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guard", default="champion")
    parser.add_argument("--show", action="store_true", help="print every message and its score")
    args = parser.parse_args()
    probes = read_probes()
    guard_settings = GuardSettings(guard=args.guard)
    model = GuardModel.load(resolve_guard_path(guard_settings), guard_settings)
    verdicts = model.score([(p["text"], None) for p in probes])
    scores = [v.p_unsafe for v in verdicts]
    found = probe_metrics(probes, scores, model.threshold)
    categories = sorted({p["category"] for p in probes})
    report = {
        "benchmark": "category_probes",
        "guard_version": model.version,
        "threshold": round(model.threshold, 4),
        "categories": {name: found[name] for name in categories},
        "all": found["all"],
    }
    heads = {head.code: head.threshold for head in model.manifest.categories or ()}
    if heads:
        report["lg3_categories"] = {
            name: category_head_metrics(probes, verdicts, name, heads)
            for name in categories
            if LG3_CODES.get(name) in heads
        }
    if args.show:
        report["scores"] = [
            {**p, "p_unsafe": round(s, 3)}
            for p, s in sorted(zip(probes, scores, strict=True), key=lambda x: -x[1])
        ]
    print(json.dumps(report, indent=2))
    return 0


def category_head_metrics(
    probes: list[dict], verdicts: list, name: str, heads: dict[str, float]
) -> dict[str, object]:
    """The probe category's unsafe messages (positives) against every safe message and the
    unsafe messages of categories with another code, scored by its code's probability."""
    code = LG3_CODES[name]
    rows = [
        i
        for i, p in enumerate(probes)
        if p["label"] == 0 or p["category"] == name or LG3_CODES.get(p["category"]) != code
    ]
    labels = [int(probes[i]["label"] == 1 and probes[i]["category"] == name) for i in rows]
    probabilities = [verdicts[i].categories[code] for i in rows]
    found = summary_metrics(labels, probabilities, heads[code])
    return {
        "code": code,
        "threshold": round(heads[code], 4),
        **{k: round(float(found[k]), 3) for k in ("auprc", "recall", "fpr")},
    }


if __name__ == "__main__":
    raise SystemExit(main())
