"""Length as a shortcut: measure it, and a sampling weight that takes it away.

In the seed sets safe prompts are mostly short templated questions and unsafe prompts longer
instructions, so text length alone predicts the label. ``length_auroc`` measures how well (0.5:
not at all), ``length_stats`` describes the lengths per group, and ``length_balanced_weights``
gives each record a sampling weight under which both classes have the same length distribution
(the pooled one, at the resolution of ``n_bins`` quantile bins) without changing either class's
total weight. The trainer multiplies these into its class-balanced sampling weights when asked to;
the seeds build writes the data unweighted and reports the length AUROC with and without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from distill.records import Example


def text_length(record: Example) -> int:
    """Characters the guard reads: the prompt plus the response, if any."""
    return len(record.prompt) + len(record.response or "")


def length_stats(lengths: Sequence[int]) -> dict[str, Any]:
    if not lengths:
        return {"n": 0}
    values = np.asarray(lengths, dtype=float)
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    return {
        "n": len(values),
        "mean": round(float(values.mean()), 1),
        "median": round(float(median), 1),
        "p10": round(float(p10), 1),
        "p90": round(float(p90), 1),
    }


def length_auroc(
    records: Sequence[Example], weights: Sequence[float] | None = None
) -> float | None:
    """AUROC of "longer means unsafe" over the labelled records (ties count one half)."""
    labelled = [(i, r) for i, r in enumerate(records) if r.label is not None]
    if not labelled:
        return None
    scores = np.array([text_length(r) for _, r in labelled], dtype=float)
    positive = np.array([r.label == 1 for _, r in labelled])
    w = np.ones(len(labelled)) if weights is None else np.array([weights[i] for i, _ in labelled])
    w_pos, w_neg = w[positive].sum(), w[~positive].sum()
    if w_pos == 0 or w_neg == 0:
        return None
    _, group = np.unique(scores, return_inverse=True)
    pos_at = np.bincount(group, weights=w * positive)
    neg_at = np.bincount(group, weights=w * ~positive)
    neg_below = np.cumsum(neg_at) - neg_at
    return float((pos_at * (neg_below + 0.5 * neg_at)).sum() / (w_pos * w_neg))


def length_balanced_weights(
    records: Sequence[Example], n_bins: int = 10, min_weight: float = 0.05
) -> list[float]:
    """Per-record weights under which both classes have the same length distribution.

    Lengths are cut into ``n_bins`` quantile bins of the labelled records. The common target is
    the overlap of the two classes' length distributions, ``min(share_0(b), share_1(b))``; a
    record of class ``y`` in bin ``b`` gets ``target(b) / share_y(b)`` (at most 1: no record is
    up-weighted, so a rare bin cannot dominate), at least ``min_weight`` (lengths only one class
    has are kept, rarely sampled), then scaled so each class keeps its total weight (class
    balance stays the trainer's business). Unlabelled records get 1.
    """
    weights = np.ones(len(records))
    labels = np.array([-1 if r.label is None else r.label for r in records])
    if not ((labels == 0).any() and (labels == 1).any()):
        return weights.tolist()
    labelled = labels >= 0
    lengths = np.array([text_length(r) for r in records], dtype=float)
    inner = np.linspace(0, 1, n_bins + 1)[1:-1]
    edges = np.unique(np.quantile(lengths[labelled], inner))
    bins = np.searchsorted(edges, lengths, side="right")
    n_cells = len(edges) + 1
    share = {
        y: np.bincount(bins[labels == y], minlength=n_cells) / (labels == y).sum() for y in (0, 1)
    }
    target = np.minimum(share[0], share[1])
    for y in (0, 1):
        mine = labels == y
        w = np.maximum(target[bins[mine]] / share[y][bins[mine]], min_weight)
        weights[mine] = w * (mine.sum() / w.sum())
    return weights.tolist()
