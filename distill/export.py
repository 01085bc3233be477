"""Export a trained student to a guard bundle: ONNX fp32, int8, parity check, manifest.

``export_onnx`` traces a Hugging Face sequence-classification model (BERT-like, DeBERTa-v2/v3)
with ``torch.onnx`` (TorchScript exporter, eager attention) into a graph with dynamic batch and
sequence axes: inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the model
uses them), output ``logits``. The result is checked against PyTorch with ONNX Runtime before it
is returned.

``write_bundle`` assembles a complete bundle in a temporary sibling directory and renames it into
place, so a crash leaves no half-written bundle: tokenizer files, ``config.json`` +
``model.safetensors`` (copied), ``model.onnx``, and ``model.int8.onnx`` (see
:mod:`distill.quantize`) when int8 passes a parity check against the PyTorch model on validation
pairs, scored through :class:`guard_plugin.model.GuardModel` so windows are those of serving.
When int8 fails the check, the bundle serves fp32 and says so (log event + ``metrics["export"]``).

A category-aware student (``categories``: its :class:`~guard_plugin.bundle.CategoryHead` list,
written to ``guard.json``) has ``2 + K`` logits; the graph keeps them all (output ``logits``,
shape (batch, 2 + K)), the fp32 check compares every logit, and the int8 check holds each
category's probability to the same tolerances as P(unsafe) (max and mean |diff| over every
(item, category)), with category flips at each head's threshold counted against the same flip
rate over ``n x K``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from guard_plugin.bundle import (
    ONNX_FILES,
    CategoryHead,
    GuardBundle,
    GuardManifest,
    write_manifest,
)

log = structlog.get_logger("harmaug.export")

Pair = tuple[str, str | None]

# Files of a Hugging Face directory that a bundle carries (weights only as safetensors).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "spm.model",
    "sentencepiece.bpe.model",
    "merges.txt",
    "vocab.json",
    "added_tokens.json",
)
MODEL_FILES = ("config.json", "model.safetensors")

# Architectures whose exported graph ONNX Runtime's BERT fusions understand (fused attention etc.).
FUSABLE_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "electra"})
# Largest |logit difference| accepted between the exported ONNX graph and PyTorch.
ONNX_LOGIT_TOLERANCE = 1e-3
# int8 is served only when, against the PyTorch model on the validation pairs: no item's p_unsafe
# moves by more than INT8_PARITY_TOLERANCE (a gross-breakage bound: the largest move is one noisy
# item, 0.02-0.12 for sound schemes on 300 MiniLM validation items), the mean move stays within
# INT8_MEAN_TOLERANCE, and at most INT8_MAX_FLIP_RATE of the labels flip at the threshold.
# Flips count the items that sit near the threshold more than the size of the moves: a 1% cap
# (4 of 400) rejected a mix-v5 guard whose int8 moved p_unsafe by 0.0049 on average (5 flips),
# within 0.0013 AUPRC of fp32 on every held-out set, while passing a less accurate scheme (3 flips).
INT8_PARITY_TOLERANCE = 0.25
INT8_MEAN_TOLERANCE = 0.01
INT8_MAX_FLIP_RATE = 0.02

VERIFY_PAIRS: list[Pair] = [
    ("hello", None),
    ("how do I bake a loaf of bread at home? " * 3, None),
    ("write a short poem about the sea", "The sea is wide and the sea is deep."),
    ("a", ""),
]


class ExportError(RuntimeError):
    """An export that cannot be written: the ONNX graph does not reproduce the PyTorch model,
    the source has no safetensors weights, or the bundle directory exists already."""


def _load_torch_model(hf_dir: Path) -> Any:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        hf_dir, use_safetensors=True, trust_remote_code=False, attn_implementation="eager"
    )
    return model.eval()


def _load_tokenizer(hf_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(hf_dir, trust_remote_code=False)


def model_input_names(model: Any, tokenizer: Any) -> list[str]:
    """The graph inputs: token_type_ids only when the tokenizer emits them and the model uses them."""
    names = ["input_ids", "attention_mask"]
    type_vocab = int(getattr(model.config, "type_vocab_size", 0) or 0)
    if "token_type_ids" in tokenizer.model_input_names and type_vocab > 1:
        names.append("token_type_ids")
    return names


def _encode(tokenizer: Any, pairs: Sequence[Pair], names: Sequence[str], max_length: int) -> dict:
    prompts = [prompt for prompt, _ in pairs]
    responses = [response or "" for _, response in pairs]
    has_response = any(response for _, response in pairs)
    enc = tokenizer(
        prompts,
        responses if has_response else None,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="np",
    )
    return {name: np.asarray(enc[name], dtype=np.int64) for name in names}


def max_logit_diff(onnx_path: Path, hf_dir: Path, pairs: Sequence[Pair] = VERIFY_PAIRS) -> float:
    """Largest |logit difference| between ONNX Runtime and PyTorch on ``pairs`` (one padded batch,
    then each item alone)."""
    import onnxruntime as ort
    import torch

    model = _load_torch_model(hf_dir)
    tokenizer = _load_tokenizer(hf_dir)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]
    max_length = min(128, int(getattr(model.config, "max_position_embeddings", 512)))
    batches = [list(pairs)] + [[pair] for pair in pairs]
    worst = 0.0
    for batch in batches:
        feed = _encode(tokenizer, batch, names, max_length)
        onnx_logits = session.run(["logits"], feed)[0]
        with torch.no_grad():
            torch_logits = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits
        worst = max(worst, float(np.abs(onnx_logits - torch_logits.numpy()).max()))
    return worst


def _logits_module(model: Any, names: Sequence[str]) -> Any:
    """Wrap a HF model so the traced graph takes positional tensors and returns logits only."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, tensors, strict=True))).logits

    # eval() on the wrapper too: the exporter restores the wrapper's mode recursively afterwards.
    return LogitsOnly().eval()


def export_onnx(
    hf_dir: Path,
    out_path: Path,
    *,
    opset: int = 17,
    tolerance: float = ONNX_LOGIT_TOLERANCE,
    fuse: bool = True,
) -> Path:
    """Export a HF sequence-classification directory to ONNX (fp32) and verify it against torch.

    BERT-family graphs are then fused (:func:`fuse_transformer_ops`, unless ``fuse`` is False)
    and verified again. Raises :class:`ExportError` when ONNX Runtime's logits differ from
    PyTorch's by more than ``tolerance`` on a few padded and unpadded inputs, prompt-only and
    pairs.
    """
    import torch

    hf_dir, out_path = Path(hf_dir), Path(out_path)
    model = _load_torch_model(hf_dir)
    tokenizer = _load_tokenizer(hf_dir)
    names = model_input_names(model, tokenizer)
    sample = _encode(tokenizer, VERIFY_PAIRS[:3], names, max_length=32)
    dynamic_axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in names}
    dynamic_axes["logits"] = {0: "batch"}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter's tracer warnings are about shape-dependent Python branches
        # that do not change the graph for encoders; the result is verified below instead.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _logits_module(model, names),
            tuple(torch.from_numpy(sample[name]) for name in names),
            str(out_path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    diff = max_logit_diff(out_path, hf_dir)
    if diff > tolerance:
        raise ExportError(
            f"{out_path}: ONNX logits differ from PyTorch by {diff:.2e} (tolerance {tolerance:.0e})"
        )
    fused = fuse_transformer_ops(out_path, model.config) if fuse else {}
    if fused:
        diff = max_logit_diff(out_path, hf_dir)
        if diff > tolerance:
            raise ExportError(
                f"{out_path}: fused ONNX logits differ from PyTorch by {diff:.2e} "
                f"(tolerance {tolerance:.0e})"
            )
    log.info("onnx_exported", path=str(out_path), opset=opset, max_abs_diff=diff, fused=fused)
    return out_path


def _fusion_options() -> Any:
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    return options


def fuse_transformer_ops(path: Path, config: Any) -> dict[str, int]:
    """Rewrite a BERT-family graph in place with ONNX Runtime's transformer fusions: one
    ``Attention`` op per layer (QKV projection, masked softmax, context), ``BiasGelu``,
    ``EmbedLayerNormalization`` and ``LayerNormalization``; about 60 nodes instead of 500. Fewer,
    larger kernels: less per-op overhead and fewer thread-pool wake-ups per forward. Only
    hardware-independent fusions are stored (ORT applies its own at load).

    Residual + LayerNorm is deliberately *not* fused into ``SkipLayerNormalization``: that CPU
    kernel (onnxruntime 1.32) takes 300 us on a 128 x 384 input where ``Add`` +
    ``LayerNormalization`` take 43 us, which is 1.5 ms of a 13 ms forward at 128 tokens.
    ``guard_plugin.model`` disables ORT's own ``SkipLayerNormFusion`` at load for the same reason.

    Returns the count of each fused op, empty (graph unchanged) for other architectures or when
    attention does not fuse."""
    from onnxruntime.transformers.optimizer import optimize_model

    if getattr(config, "model_type", None) not in FUSABLE_MODEL_TYPES:
        return {}
    optimized = optimize_model(
        str(path),
        model_type="bert",
        num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size),
        optimization_options=_fusion_options(),
        opt_level=0,
        use_gpu=False,
    )
    fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    if fused.get("Attention", 0) != int(config.num_hidden_layers):
        log.warning("onnx_fusion_skipped", path=str(path), fused=fused)
        return {}
    optimized.save_model_to_file(str(path))
    return fused


@dataclass
class ExportResult:
    """What :func:`write_bundle` wrote and which ONNX file the bundle serves."""

    path: Path
    manifest: GuardManifest
    served: str
    parity: dict[str, Any] = field(default_factory=dict)


def copy_hf_files(hf_dir: Path, dest: Path) -> list[str]:
    """Copy config, safetensors weights and tokenizer files; refuse a directory without safetensors."""
    if not (hf_dir / "model.safetensors").is_file():
        raise ExportError(f"{hf_dir}: no model.safetensors (pickle weights are never exported)")
    copied = []
    for name in (*MODEL_FILES, *TOKENIZER_FILES):
        if (hf_dir / name).is_file():
            shutil.copy2(hf_dir / name, dest / name)
            copied.append(name)
    return copied


def check_output_width(hf_dir: Path, categories: int) -> None:
    """Refuse to export category heads the model does not have: 2 + ``categories`` labels."""
    config = json.loads((Path(hf_dir) / "config.json").read_text(encoding="utf-8"))
    labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 2))
    if labels != 2 + categories:
        raise ExportError(
            f"{hf_dir}: {categories} category heads need 2 + {categories} outputs (safe, unsafe, "
            f"then one per category), but the model has {labels}"
        )


def int8_parity(bundle_dir: Path, pairs: Sequence[Pair], threshold: float) -> dict[str, Any]:
    """p_unsafe of the int8 ONNX model against the PyTorch model on ``pairs``, through GuardModel
    (same tokenization and windows as serving); for a category-aware bundle, each category's
    probability too (``category_*``: over every (item, category), flips at each head's own
    threshold)."""
    from guard_plugin.model import GuardModel

    bundle = GuardBundle.load(bundle_dir)
    reference = GuardModel(bundle, backend="torch").score(pairs)
    quantized = GuardModel(bundle, backend="onnx", onnx_variant="int8").score(pairs)
    ref = np.array([score.p_unsafe for score in reference])
    q8 = np.array([score.p_unsafe for score in quantized])
    diff = np.abs(q8 - ref)
    report: dict[str, Any] = {
        "n": len(pairs),
        "int8_max_abs_diff": float(diff.max()) if len(diff) else 0.0,
        "int8_mean_abs_diff": float(diff.mean()) if len(diff) else 0.0,
        "label_flips": int(((ref >= threshold) != (q8 >= threshold)).sum()),
    }
    heads = bundle.manifest.categories
    if heads:
        codes = [head.code for head in heads]
        limits = np.array([head.threshold for head in heads])
        ref_c = np.array([[score.categories[c] for c in codes] for score in reference])
        q8_c = np.array([[score.categories[c] for c in codes] for score in quantized])
        ref_c, q8_c = ref_c.reshape(len(pairs), len(codes)), q8_c.reshape(len(pairs), len(codes))
        diff_c = np.abs(q8_c - ref_c)
        report.update(
            category_cells=int(diff_c.size),
            category_max_abs_diff=float(diff_c.max()) if diff_c.size else 0.0,
            category_mean_abs_diff=float(diff_c.mean()) if diff_c.size else 0.0,
            category_flips=int(((ref_c >= limits) != (q8_c >= limits)).sum()),
        )
    return report


def parity_passed(parity: dict[str, Any], tolerances: dict[str, float]) -> bool:
    """Whether an :func:`int8_parity` report is within the tolerances, categories included."""
    passed = (
        parity["n"] > 0
        and parity["int8_max_abs_diff"] <= tolerances["parity_tolerance"]
        and parity["int8_mean_abs_diff"] <= tolerances["mean_tolerance"]
        and parity["label_flips"] <= tolerances["max_flip_rate"] * parity["n"]
    )
    if "category_cells" in parity:
        passed = passed and (
            parity["category_max_abs_diff"] <= tolerances["parity_tolerance"]
            and parity["category_mean_abs_diff"] <= tolerances["mean_tolerance"]
            and parity["category_flips"] <= tolerances["max_flip_rate"] * parity["category_cells"]
        )
    return bool(passed)


def write_bundle(
    hf_dir: Path,
    out_dir: Path,
    *,
    version: str,
    base_model: str,
    max_length: int,
    window_stride: int,
    max_windows: int,
    threshold: float,
    calibration_pairs: Sequence[Pair],
    validation_pairs: Sequence[Pair],
    training_data: dict[str, Any],
    metrics: dict[str, Any],
    int8: bool = True,
    parity_tolerance: float = INT8_PARITY_TOLERANCE,
    mean_tolerance: float = INT8_MEAN_TOLERANCE,
    max_flip_rate: float = INT8_MAX_FLIP_RATE,
    categories: Sequence[CategoryHead] | None = None,
) -> ExportResult:
    """Write a complete guard bundle to ``out_dir`` (which must not exist yet), atomically.

    int8 is served only when, on ``validation_pairs``, its p_unsafe stays within
    ``parity_tolerance`` of the PyTorch model for every item and ``mean_tolerance`` on average,
    and at most ``max_flip_rate`` of the labels flip at ``threshold``; otherwise the bundle serves
    fp32 ONNX and ``metrics["export"]`` says why. ``categories``: the student's category heads
    (its logits 2, 3, ...), held to the same tolerances; the bundle refuses to load when the
    model's output width is not 2 + len(categories).
    """
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if out_dir.exists():
        raise ExportError(f"{out_dir} already exists; bundles are never overwritten")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    try:
        copy_hf_files(hf_dir, staging)
        if categories is not None:
            check_output_width(hf_dir, len(categories))
        export_onnx(hf_dir, staging / ONNX_FILES["fp32"])
        manifest = GuardManifest(
            version=version,
            base_model=base_model,
            max_length=max_length,
            window_stride=window_stride,
            max_windows=max_windows,
            threshold=threshold,
            backend="onnx",
            onnx_variant="fp32",
            categories=list(categories) if categories is not None else None,
            training_data=training_data,
            metrics=metrics,
        )
        report: dict[str, Any] = {"served": "fp32", "int8": "disabled"}
        if int8:
            report = _add_int8(
                staging,
                manifest,
                calibration_pairs=calibration_pairs,
                validation_pairs=validation_pairs,
                tolerances={
                    "parity_tolerance": parity_tolerance,
                    "mean_tolerance": mean_tolerance,
                    "max_flip_rate": max_flip_rate,
                },
            )
        manifest = manifest.model_copy(
            update={
                "onnx_variant": report["served"],
                "metrics": {**metrics, "export": report},
            }
        )
        manifest = write_manifest(staging, manifest)
        _make_readable(staging)
        os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("bundle_written", path=str(out_dir), guard_version=version, **report)
    return ExportResult(path=out_dir, manifest=manifest, served=report["served"], parity=report)


def _make_readable(root: Path) -> None:
    """mkdtemp/mkstemp create owner-only files; a bundle is read by other users/processes."""
    root.chmod(0o755)
    for path in root.iterdir():
        path.chmod(0o644)


def _add_int8(
    staging: Path,
    manifest: GuardManifest,
    *,
    calibration_pairs: Sequence[Pair],
    validation_pairs: Sequence[Pair],
    tolerances: dict[str, float],
) -> dict[str, Any]:
    """Quantize, check parity on validation, and keep model.int8.onnx only when it passes."""
    from distill.quantize import quantize_int8

    int8_path = staging / ONNX_FILES["int8"]
    scheme = quantize_int8(
        staging / ONNX_FILES["fp32"],
        int8_path,
        tokenizer_dir=staging,
        calibration_pairs=calibration_pairs,
        max_length=manifest.max_length,
        stride=manifest.window_stride,
    )
    write_manifest(staging, manifest.model_copy(update={"onnx_variant": "int8"}))
    parity = int8_parity(staging, validation_pairs, manifest.threshold)
    passed = parity_passed(parity, tolerances)
    report = {**parity, "scheme": scheme, **tolerances, "served": "int8" if passed else "fp32"}
    if not passed:
        int8_path.unlink()
        log.warning(
            "int8_parity_failed_serving_fp32",
            guard_version=manifest.version,
            **{k: v for k, v in report.items() if k != "scheme"},
        )
    return report


def read_pairs(path: Path) -> list[Pair]:
    """(prompt, response) pairs of a JSONL file of records with ``prompt`` / ``response`` fields."""
    pairs: list[Pair] = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                prompt, response = record["prompt"], record.get("response")
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ExportError(f"{path}:{number}: not a record with a prompt ({exc})") from exc
            if not isinstance(prompt, str) or not (response is None or isinstance(response, str)):
                raise ExportError(f"{path}:{number}: prompt/response must be strings")
            pairs.append((prompt, response))
    return pairs


def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "export",
        help="write a guard bundle (ONNX fp32 + int8 with parity check) from a trained HF dir",
    )
    parser.add_argument("--model", type=Path, required=True, help="HF sequence-classification dir")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    parser.add_argument("--version", required=True, help="version name of the bundle")
    parser.add_argument("--base-model", default=None, help="default: config.json _name_or_path")
    parser.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="JSONL records (prompt, response) from the training data: every 4th record checks "
        "int8 parity, the others calibrate it. Without it, int8 is skipped.",
    )
    parser.add_argument("--no-int8", action="store_true", help="serve fp32 ONNX only")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--window-stride", type=int, default=64)
    parser.add_argument("--max-windows", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--parity-tolerance", type=float, default=INT8_PARITY_TOLERANCE)
    parser.add_argument(
        "--categories",
        type=Path,
        default=None,
        help="JSON file: the student's category heads, a list of {code, name, threshold} in the "
        "order of its logits 2, 3, ... (default: none, P(unsafe) only)",
    )
    parser.set_defaults(func=_cmd_export)


def read_categories(path: Path) -> list[CategoryHead]:
    """Category heads from a JSON list of ``{code, name, threshold}``."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(list[CategoryHead]).validate_json(Path(path).read_bytes())
    except (OSError, ValidationError) as exc:
        raise ExportError(f"{path}: not a list of category heads ({exc})") from exc


def _cmd_export(args: argparse.Namespace) -> int:
    pairs = read_pairs(args.calibration) if args.calibration else []
    int8 = not args.no_int8 and bool(pairs)
    if not args.no_int8 and not pairs:
        log.warning("int8_skipped", reason="no --calibration data; serving fp32 ONNX")
    config = json.loads((args.model / "config.json").read_text(encoding="utf-8"))
    result = write_bundle(
        args.model,
        args.out,
        version=args.version,
        base_model=args.base_model or str(config.get("_name_or_path") or args.model.name),
        max_length=args.max_length,
        window_stride=args.window_stride,
        max_windows=args.max_windows,
        threshold=args.threshold,
        calibration_pairs=[pair for i, pair in enumerate(pairs) if i % 4 != 3],
        validation_pairs=[pair for i, pair in enumerate(pairs) if i % 4 == 3],
        training_data={"calibration_file": str(args.calibration) if args.calibration else None},
        metrics={},
        int8=int8,
        parity_tolerance=args.parity_tolerance,
        categories=read_categories(args.categories) if args.categories else None,
    )
    print(json.dumps({"path": str(result.path), "served": result.served, **result.parity}))
    return 0
