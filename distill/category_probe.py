"""The category columns refitted as linear probes on the trained student's frozen features.

Trained beside the safe/unsafe loss in a short CPU schedule, the 14 category columns learn little
(180 steps: test macro AUPRC 0.18, S11 0.07; docs/experiments.md): their loss weighs a tenth of
the main one, and a larger weight pulls the main task down (test mix 0.79 -> 0.75). After
training, the output layer's input (the pooled features of every window) is computed once, in
eval mode, for the training examples whose categories are known, and the category rows of that
layer are refitted on them: per example the highest logit over its windows (as the runtime
reads it), binary cross-entropy per category with its positives weighed up to balance (at most
``MAX_POSITIVE_WEIGHT``), L2 on the weights (its strength chosen from ``L2_GRID`` by macro AUPRC
on a held-out fifth of those examples), full batch, warm-started from the trained rows.

Nothing else changes: the encoder and the safe/unsafe rows are untouched, so P(unsafe) is what
training gave, and the layer keeps its shape, so export, int8 and the runtime read it as before.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
import torch
import torch.nn.functional as F

from distill.categories import CATEGORY_CODES, HEAD_OFFSET
from distill.data import TrainExample, collate

log = structlog.get_logger("harmaug.category_probe")

PROBE_EXAMPLES = 6000  # examples the features are computed for (probe_examples)
MAX_UNSAFE_SHARE = 0.8
FEATURE_BATCH = 64
FIT_STEPS = 300
FIT_LR = 0.05
L2_GRID = (1e-2, 1e-3, 1e-4, 1e-5)  # chosen on a held-out part of the probe's examples
HELD_OUT = 0.2
MAX_POSITIVE_WEIGHT = 20.0


def output_layer(model: Any) -> torch.nn.Linear:
    """The linear layer that gives the classifier's logits (BERT's ``classifier``, a decoder's
    ``score``, RoBERTa's ``classifier.out_proj``)."""
    for name in ("classifier", "score"):
        layer = getattr(model, name, None)
        layer = getattr(layer, "out_proj", layer)
        if isinstance(layer, torch.nn.Linear):
            return layer
    raise ValueError(f"{type(model).__name__}: no linear output layer to refit the categories on")


def probe_examples(examples: Sequence[TrainExample], seed: int) -> list[TrainExample]:
    """The examples with unsafe known codes (at most ``MAX_UNSAFE_SHARE`` of ``PROBE_EXAMPLES``,
    drawn when there are more), then safe ones (all-negative) drawn to fill ``PROBE_EXAMPLES``:
    the feature pass costs the same whatever the training set's size."""
    rng = random.Random(seed)
    known = [example for example in examples if example.categories is not None]
    unsafe = [example for example in known if any(example.categories or ())]
    safe = [example for example in known if not any(example.categories or ())]
    most = int(PROBE_EXAMPLES * MAX_UNSAFE_SHARE)
    if len(unsafe) > most:
        unsafe = rng.sample(unsafe, most)
    room = PROBE_EXAMPLES - len(unsafe)
    return unsafe + rng.sample(safe, min(room, len(safe)))


@torch.no_grad()
def window_features(
    model: Any,
    layer: torch.nn.Linear,
    examples: Sequence[TrainExample],
    *,
    pad_token_id: int,
    input_names: Sequence[str],
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The output layer's input for every window of ``examples`` (eval mode, batched by length
    so that little is padding), and each example's rows."""
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _, args: captured.append(args[0].detach()))
    was_training = model.training
    model.eval()
    device = layer.weight.device
    order = sorted(range(len(examples)), key=lambda i: examples[i].tokens)
    try:
        for start in range(0, len(order), FEATURE_BATCH):
            chunk = [examples[i] for i in order[start : start + FEATURE_BATCH]]
            batch = collate(
                chunk, [1.0] * len(chunk), pad_token_id=pad_token_id, input_names=input_names
            ).to(device)
            model(**batch.inputs)
    finally:
        handle.remove()
        model.train(was_training)
    found = torch.cat(captured).float().cpu()
    if found.dim() != 2:  # a decoder's score layer sees every position, not pooled features
        raise ValueError("the output layer reads token positions; the refit needs pooled features")
    rows: list[torch.Tensor] = [torch.empty(0)] * len(examples)
    at = 0
    for i in order:
        n = len(examples[i].windows)
        rows[i], at = found[at : at + n], at + n
    return torch.cat(rows), _spans([len(example.windows) for example in examples])


def _spans(lengths: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive row ranges [start, end) of parts of these lengths."""
    spans, row = [], 0
    for length in lengths:
        spans.append((row, row + length))
        row += length
    return spans


def fit_rows(
    features: torch.Tensor,
    spans: Sequence[tuple[int, int]],
    targets: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    l2: float,
    steps: int = FIT_STEPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Category rows (weight, bias) fitted to ``targets`` (examples x categories) on the window
    ``features``, starting from ``weight``/``bias``; each example's logit is its windows' max."""
    example_max = _window_max(spans)
    positives = targets.sum(0)
    pos_weight = ((len(targets) - positives) / positives.clamp(min=1.0)).clamp(
        1.0, MAX_POSITIVE_WEIGHT
    )
    w = weight.detach().clone().float().requires_grad_(True)
    b = bias.detach().clone().float().requires_grad_(True)
    optimizer = torch.optim.Adam([w, b], lr=FIT_LR)
    with torch.enable_grad():
        for _ in range(steps):
            logits = example_max(features @ w.T + b)
            loss = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)
            loss = loss + l2 * w.pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return w.detach(), b.detach()


def _subset(
    features: torch.Tensor, spans: Sequence[tuple[int, int]], chosen: Sequence[int]
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    rows = [features[spans[i][0] : spans[i][1]] for i in chosen]
    return torch.cat(rows), _spans([len(part) for part in rows])


def example_scores(
    features: torch.Tensor,
    spans: Sequence[tuple[int, int]],
    weight: torch.Tensor,
    bias: torch.Tensor,
) -> torch.Tensor:
    """Per example and category, the highest logit over its windows."""
    return _window_max(spans)(features @ weight.T + bias)


def _window_max(spans: Sequence[tuple[int, int]]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from window logits (windows x K) to each example's highest (examples x K),
    with the gather index built once (the fit calls it every step)."""
    longest = max(end - start for start, end in spans)
    index = torch.zeros((len(spans), longest), dtype=torch.long)
    real = torch.zeros((len(spans), longest, 1), dtype=torch.bool)
    for row, (start, end) in enumerate(spans):
        index[row, : end - start] = torch.arange(start, end)
        real[row, : end - start] = True

    def example_max(window_logits: torch.Tensor) -> torch.Tensor:
        return window_logits[index].masked_fill(~real, float("-inf")).max(dim=1).values

    return example_max


def choose_l2(
    features: torch.Tensor,
    spans: Sequence[tuple[int, int]],
    targets: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    seed: int,
) -> tuple[float, dict[str, float]]:
    """The L2 of ``L2_GRID`` with the best macro AUPRC on a held-out ``HELD_OUT`` of the
    examples (over the categories with positives there), and each one's figure."""
    from distill.evaluation import average_precision

    order = list(range(len(spans)))
    random.Random(seed).shuffle(order)
    cut = int(len(order) * HELD_OUT)
    held, kept = order[:cut], order[cut:]
    fit_features, fit_spans = _subset(features, spans, kept)
    held_features, held_spans = _subset(features, spans, held)
    y = targets[held].numpy()
    columns = [k for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
    if not columns:
        return L2_GRID[len(L2_GRID) // 2], {}
    measured: dict[str, float] = {}
    for l2 in L2_GRID:
        w, b = fit_rows(fit_features, fit_spans, targets[kept], weight, bias, l2=l2)
        scores = example_scores(held_features, held_spans, w, b).numpy()
        measured[str(l2)] = float(
            sum(average_precision(y[:, k], scores[:, k]) for k in columns) / len(columns)
        )
    best = max(L2_GRID, key=lambda l2: measured[str(l2)])
    return best, measured


def refit_category_columns(
    model: Any,
    examples: Sequence[TrainExample],
    *,
    pad_token_id: int,
    input_names: Sequence[str],
    seed: int,
) -> dict[str, Any]:
    """Refit the category rows of ``model``'s output layer on ``examples`` (in place); returns
    what it fitted on."""
    started = time.perf_counter()
    layer = output_layer(model)
    rows = slice(HEAD_OFFSET, HEAD_OFFSET + len(CATEGORY_CODES))
    if layer.out_features != rows.stop or layer.bias is None:
        raise ValueError(f"the output layer ({layer.out_features} rows) has no category columns")
    chosen = probe_examples(examples, seed)
    targets = torch.tensor([list(example.categories or ()) for example in chosen])
    if not chosen or not targets.any():
        return {"refit": False, "reason": "no examples with known unsafe categories"}
    features, spans = window_features(
        model, layer, chosen, pad_token_id=pad_token_id, input_names=input_names
    )
    start_weight, start_bias = layer.weight[rows].detach().cpu(), layer.bias[rows].detach().cpu()
    l2, held_out = choose_l2(features, spans, targets, start_weight, start_bias, seed)
    weight, bias = fit_rows(features, spans, targets, start_weight, start_bias, l2=l2)
    with torch.no_grad():
        layer.weight[rows] = weight.to(layer.weight)
        layer.bias[rows] = bias.to(layer.bias)
    summary = {
        "refit": True,
        "examples": len(chosen),
        "windows": int(features.shape[0]),
        "l2": l2,
        "held_out_macro_auprc": held_out,
        "positives": {
            code: int(n) for code, n in zip(CATEGORY_CODES, targets.sum(0).tolist(), strict=True)
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info("category_columns_refit", **summary)
    return summary


__all__ = ["output_layer", "refit_category_columns"]
