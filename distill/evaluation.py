"""Measure a guard honestly: ranking and threshold metrics, calibration, a report and a PR curve.

The metrics are small numpy implementations (checked against scikit-learn in the tests), so the
numbers here are exactly what ``harmaug distill evaluate`` prints and the registry gate compares.
A text counts as unsafe when ``p_unsafe >= threshold``, as in the runtime's verdicts.

``evaluate_bundle`` scores records with :class:`guard_plugin.model.GuardModel`, i.e. the exact
bundle (backend, ONNX variant, windows) that the gateway serves.

Categories (a bundle with ``categories`` in ``guard.json``): each Llama Guard 3 category is
measured on the records whose categories are known (``distill.categories.category_targets``:
safe records count as negatives of every category, unsafe ones with codes as positives of theirs
and negatives of the others, unsafe ones without codes are left out): AUPRC of the category's
probability, and precision / recall / F1 at its threshold. ``calibrate_categories`` picks those
thresholds on validation (see there).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from distill.records import Example
    from guard_plugin.model import GuardModel

DEFAULT_TARGET_RECALL = 0.9
DEFAULT_TARGET_FPR = 0.01
CalibrationMethod = Literal["max_f1", "target_fpr"]
SUMMARY_FIELDS = (
    "n",
    "precision",
    "recall",
    "f1",
    "auprc",
    "roc_auc",
    "fpr",
    "fpr_at_recall",
    "target_recall",
    "threshold",
    "calibrated_threshold",
    "guard_version",
    "window_cap_hits",
    "skipped_unlabelled",
    "per_source",
    "cascade",
    "categories",
)
# Per-category thresholds (``calibrate_categories``): the F1-maximising one on validation, kept
# within [floor, ceiling] (a handful of validation items must not set a category to fire on
# nearly everything or nearly nothing); a category with fewer than CATEGORY_MIN_POSITIVES known
# positives (or no negatives) on validation gets the fallback.
CATEGORY_MIN_POSITIVES = 5
CATEGORY_THRESHOLD_FLOOR = 0.1
CATEGORY_THRESHOLD_CEILING = 0.9
CATEGORY_FALLBACK_THRESHOLD = 0.5


# -- metrics -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Curve:
    """Confusion counts at every distinct score, thresholds descending (one point per score)."""

    thresholds: np.ndarray
    tps: np.ndarray
    fps: np.ndarray
    positives: int
    negatives: int

    @property
    def recall(self) -> np.ndarray:
        return self.tps / max(self.positives, 1)

    @property
    def precision(self) -> np.ndarray:
        return self.tps / np.maximum(self.tps + self.fps, 1)

    @property
    def fpr(self) -> np.ndarray:
        return self.fps / max(self.negatives, 1)


def _arrays(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray):
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-d and equally long ({y.shape} vs {s.shape})")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (safe) or 1 (unsafe)")
    return y, s


def curve(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> Curve:
    y, s = _arrays(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(s)), y.size - 1] if y.size else np.array([])
    last = last_of_each_score.astype(np.int64)
    tps = np.cumsum(y)[last] if y.size else np.zeros(0)
    fps = (last + 1) - tps
    return Curve(
        s[last], tps.astype(np.float64), fps.astype(np.float64), int(y.sum()), int(y.size - y.sum())
    )


def average_precision(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> float:
    """AUPRC as average precision: sum over thresholds of (recall step) x precision."""
    c = curve(labels, scores)
    if c.positives == 0:
        return float("nan")
    recall_steps = np.diff(np.r_[0.0, c.recall])
    return float(np.sum(recall_steps * c.precision))


def roc_auc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (trapezoids; ties count one half)."""
    c = curve(labels, scores)
    if c.positives == 0 or c.negatives == 0:
        return float("nan")
    tpr = np.r_[0.0, c.tps / c.positives]
    fpr = np.r_[0.0, c.fps / c.negatives]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def fpr_at_recall(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    recall: float = DEFAULT_TARGET_RECALL,
) -> float:
    """The lowest false-positive rate of any threshold that reaches ``recall``."""
    c = curve(labels, scores)
    if c.positives == 0 or c.negatives == 0:
        return float("nan")
    reached = np.flatnonzero(c.recall >= recall - 1e-12)
    return float(c.fpr[reached[0]])


def threshold_metrics(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float
) -> dict[str, float]:
    """Precision, recall, F1, FPR and accuracy of the verdicts ``p_unsafe >= threshold``.

    Precision is 0 when nothing is flagged (scikit-learn's convention); metrics that need an
    unsafe (or a safe) item are NaN on a set without one.
    """
    y, s = _arrays(labels, scores)
    predicted = s >= threshold
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    fn = int(np.sum(~predicted & (y == 1)))
    tn = int(np.sum(~predicted & (y == 0)))
    positives = tp + fn
    nan = float("nan")  # undefined: no unsafe (or no safe) items to measure on
    precision = (tp / (tp + fp) if tp + fp else 0.0) if positives else nan
    recall = tp / positives if positives else nan
    f1 = 2 * tp / (2 * tp + fp + fn) if positives else nan
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fpr": fp / (fp + tn) if fp + tn else nan,
        "accuracy": (tp + tn) / y.size if y.size else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def calibrate_threshold(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    method: CalibrationMethod = "max_f1",
    target_fpr: float = DEFAULT_TARGET_FPR,
) -> float:
    """Pick a threshold on validation data: the F1-maximising one, or the most sensitive one
    whose false-positive rate stays within ``target_fpr``.

    The threshold returned lies halfway between the chosen score and the next lower one, so the
    same items are flagged whether a consumer compares with ``>=`` or ``>``.
    """
    c = curve(labels, scores)
    if c.positives == 0 or c.negatives == 0:
        raise ValueError("threshold calibration needs both safe and unsafe examples")
    if method == "max_f1":
        f1 = 2 * c.tps / np.maximum(c.tps + c.fps + c.positives, 1)
        chosen = int(np.argmax(f1))  # first maximum: the highest threshold among ties
    elif method == "target_fpr":
        allowed = np.flatnonzero(c.fpr <= target_fpr)
        if allowed.size == 0:  # even the top score has too many false positives: flag nothing
            return float(min(1.0, np.nextafter(c.thresholds[0], np.inf)))
        chosen = int(allowed[-1])
    else:
        raise ValueError(f"unknown calibration method {method!r}")
    upper = c.thresholds[chosen]
    lower = c.thresholds[chosen + 1] if chosen + 1 < c.thresholds.size else None
    return float(upper if lower is None else (upper + lower) / 2)


def summary_metrics(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    threshold: float,
    target_recall: float = DEFAULT_TARGET_RECALL,
) -> dict[str, float]:
    """Every metric of one evaluation: ranking metrics plus the verdicts at ``threshold``."""
    y, _ = _arrays(labels, scores)
    return {
        "n": int(y.size),
        "positives": int(y.sum()),
        **threshold_metrics(labels, scores, threshold),
        "auprc": average_precision(labels, scores),
        "roc_auc": roc_auc(labels, scores),
        "fpr_at_recall": fpr_at_recall(labels, scores, target_recall),
    }


# -- one evaluation ----------------------------------------------------------------------------
@dataclass
class EvalResult:
    """Metrics of one guard on one labelled set; per-item scores kept for calibration and plots."""

    n: int
    precision: float
    recall: float
    f1: float
    auprc: float
    roc_auc: float
    fpr: float
    fpr_at_recall: float
    target_recall: float
    threshold: float
    calibrated_threshold: float | None
    guard_version: str
    per_source: dict[str, dict[str, float]]
    window_cap_hits: int = 0
    skipped_unlabelled: int = 0
    cascade: dict[str, Any] | None = None  # the first stage + student, beside the student
    categories: dict[str, Any] | None = None  # per-category metrics (category-aware guards)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    sources: list[str] = field(default_factory=list, repr=False)
    # (items, K) category probabilities in ``category_codes`` order, and each item's targets
    category_codes: tuple[str, ...] = field(default=(), repr=False)
    category_scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)
    category_targets: list[tuple[str, ...] | None] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-item arrays)."""
        return {key: _jsonable(getattr(self, key)) for key in SUMMARY_FIELDS}

    def write_report(self, out_dir: Path) -> Path:
        """Write ``report.md``, ``pr_curve.png`` and ``metrics.json`` into ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(self.to_dict(), indent=2), "utf-8")
        plot_pr_curves(self, out_dir / "pr_curve.png")
        report = out_dir / "report.md"
        report.write_text(markdown_report(self), encoding="utf-8")
        return report


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


# -- categories --------------------------------------------------------------------------------
def _category_rows(
    targets: Sequence[tuple[str, ...] | None], code: str
) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the items whose categories are known, 1 where ``code`` is among them)."""
    known = np.array([i for i, t in enumerate(targets) if t is not None], dtype=np.int64)
    y = np.array([int(code in (targets[i] or ())) for i in known], dtype=np.int64)
    return known, y


def category_metrics(
    codes: Sequence[str],
    scores: np.ndarray,
    targets: Sequence[tuple[str, ...] | None],
    thresholds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Per-category AUPRC (and precision, recall, F1 at ``thresholds``) of category
    probabilities ``scores`` (items x codes), on the items whose ``targets`` are known."""
    per_category: dict[str, dict[str, Any]] = {}
    for k, code in enumerate(codes):
        known, y = _category_rows(targets, code)
        s = scores[known, k] if known.size else np.zeros(0)
        row: dict[str, Any] = {"positives": int(y.sum())}
        row["auprc"] = average_precision(y, s) if y.sum() else None
        if thresholds is not None and code in thresholds:
            at = threshold_metrics(y, s, thresholds[code]) if y.size else {}
            row["threshold"] = thresholds[code]
            for name in ("precision", "recall", "f1", "fpr"):
                row[name] = at.get(name)
        per_category[code] = row
    found = [row["auprc"] for row in per_category.values() if row["auprc"] is not None]
    unsafe_known = sum(1 for t in targets if t)
    return {
        "n": sum(t is not None for t in targets),
        "unsafe_known": unsafe_known,
        "unsafe_unknown": sum(t is None for t in targets),
        "macro_auprc": float(np.mean(found)) if found else None,
        "per_category": per_category,
    }


def calibrate_category_thresholds(
    codes: Sequence[str], scores: np.ndarray, targets: Sequence[tuple[str, ...] | None]
) -> dict[str, float]:
    """Each category's threshold on validation: max F1 over its known items, clipped to
    [``CATEGORY_THRESHOLD_FLOOR``, ``CATEGORY_THRESHOLD_CEILING``]; the fallback
    ``CATEGORY_FALLBACK_THRESHOLD`` with fewer than ``CATEGORY_MIN_POSITIVES`` positives."""
    chosen: dict[str, float] = {}
    for k, code in enumerate(codes):
        known, y = _category_rows(targets, code)
        if y.sum() < CATEGORY_MIN_POSITIVES or y.sum() == y.size:
            chosen[code] = CATEGORY_FALLBACK_THRESHOLD
            continue
        best = calibrate_threshold(y, scores[known, k])
        chosen[code] = float(min(max(best, CATEGORY_THRESHOLD_FLOOR), CATEGORY_THRESHOLD_CEILING))
    return chosen


def calibrate_categories(result: EvalResult) -> dict[str, float]:
    """Category thresholds from an evaluation on validation (``evaluate_bundle``, as served);
    {} when the guard has no categories."""
    if not result.category_codes:
        return {}
    return calibrate_category_thresholds(
        result.category_codes, result.category_scores, result.category_targets
    )


def evaluate_scores(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    sources: Sequence[str],
    *,
    threshold: float,
    guard_version: str = "unknown",
    target_recall: float = DEFAULT_TARGET_RECALL,
    window_cap_hits: int = 0,
    skipped_unlabelled: int = 0,
) -> EvalResult:
    """Overall and per-source metrics of already computed scores."""
    y, s = _arrays(labels, scores)
    if y.size == 0:
        raise ValueError("nothing to evaluate: no labelled records")
    overall = summary_metrics(y, s, threshold, target_recall)
    source_array = np.asarray(list(sources), dtype=object)
    per_source = {
        name: summary_metrics(
            y[source_array == name], s[source_array == name], threshold, target_recall
        )
        for name in sorted(set(sources))
    }
    try:
        calibrated: float | None = calibrate_threshold(y, s)
    except ValueError:
        calibrated = None
    return EvalResult(
        n=int(y.size),
        precision=overall["precision"],
        recall=overall["recall"],
        f1=overall["f1"],
        auprc=overall["auprc"],
        roc_auc=overall["roc_auc"],
        fpr=overall["fpr"],
        fpr_at_recall=overall["fpr_at_recall"],
        target_recall=target_recall,
        threshold=threshold,
        calibrated_threshold=calibrated,
        guard_version=guard_version,
        per_source=per_source,
        window_cap_hits=window_cap_hits,
        skipped_unlabelled=skipped_unlabelled,
        labels=y,
        scores=s,
        sources=list(sources),
    )


RESPONSE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class FprCap:
    """At most ``max_fpr`` of the safe records of ``sources`` may be flagged: ``calibrate``
    raises the threshold until they are. ``name`` keys the rate reached in a bundle's metrics."""

    name: str
    sources: frozenset[str]
    max_fpr: float

    def safe(self, sources: Sequence[str], labels: np.ndarray) -> np.ndarray:
        """Which records (by source and label) this cap counts: the safe ones of its sources."""
        return np.isin(list(sources), list(self.sources)) & (labels == 0)


@dataclass(frozen=True)
class Calibration:
    """How a guard reads and judges: the manifest fields that ``calibrate`` chose."""

    response_weight: float
    weight_auprc: dict[str, float]  # validation pairs' AUPRC at each candidate weight
    threshold: float  # for prompts (and everything, when the validation holds no pairs)
    response_threshold: float | None  # for pairs, before the shift; None: the threshold

    @property
    def response_shift(self) -> float:
        """Added to a pair's logit so that ``response_threshold`` lands on ``threshold``."""
        if self.response_threshold is None:
            return 0.0
        from guard_plugin.model import logit

        return float(logit(self.threshold) - logit(self.response_threshold))

    def manifest_fields(self) -> dict[str, float]:
        """The ``guard.json`` fields that carry this calibration."""
        return {
            "threshold": self.threshold,
            "response_weight": self.response_weight,
            "response_shift": self.response_shift,
        }


def calibrate(
    model: GuardModel,
    records: Sequence[Example],
    *,
    caps: Sequence[FprCap] = (),
    fallback_threshold: float | None = None,
) -> Calibration:
    """Choose a guard's response weight, threshold and response threshold on labelled records.

    * Response weight (``GuardModel.score``): of ``RESPONSE_WEIGHTS``, the one with the highest
      AUPRC on the (prompt, response) records (ties: the smaller weight); 0 without pairs of
      both labels.
    * Threshold: max F1 on the prompts, raised where needed so that every cap of ``caps`` holds
      (at most its ``max_fpr`` of the safe records of its sources flagged); the same on the
      pairs gives the response threshold. Without prompts of both labels, one threshold for all
      records; without any, ``fallback_threshold`` (else ValueError).
    """
    labelled = [record for record in records if record.label is not None]
    labels = np.array([int(record.label) for record in labelled], dtype=np.int64)  # type: ignore[arg-type]
    paired = np.array([bool(record.response) for record in labelled], dtype=bool)
    sources = [record.source for record in labelled]
    capped_safe = [(cap, cap.safe(sources, labels)) for cap in caps]
    items = [(record.prompt, record.response) for record in labelled]
    raw = model.score(items, response_weight=0.0, response_shift=0.0)  # pairs read in context
    scores = np.array([score.p_unsafe for score in raw])
    responses: list[tuple[str, str | None]] = [(r.response or "", None) for r in labelled]
    pairs = [item for item, is_pair in zip(responses, paired, strict=True) if is_pair]
    alone = np.array([score.p_unsafe for score in model.score(pairs)])
    in_pair = scores[paired]
    weight_auprc: dict[str, float] = {}
    if pairs and 0 < labels[paired].sum() < len(pairs):
        for weight in RESPONSE_WEIGHTS:
            mixed = (1 - weight) * in_pair + weight * alone
            weight_auprc[str(weight)] = round(average_precision(labels[paired], mixed), 4)
    weight = max(RESPONSE_WEIGHTS, key=lambda w: (weight_auprc.get(str(w), 0.0), -w))
    if pairs:
        scores[paired] = (1 - weight) * in_pair + weight * alone

    def capped(mask: np.ndarray) -> float | None:
        try:
            threshold = calibrate_threshold(labels[mask], scores[mask])
        except ValueError:  # not both labels
            return None
        for cap, safe in capped_safe:
            keep = mask & (safe | (labels == 1))
            if (keep & safe).any():
                raised = calibrate_threshold(
                    labels[keep], scores[keep], method="target_fpr", target_fpr=cap.max_fpr
                )
                threshold = max(threshold, raised)
        return threshold

    threshold, response_threshold = capped(~paired), capped(paired)
    if threshold is None:  # no prompts of both labels: one threshold for every record
        threshold, response_threshold = capped(np.ones_like(paired)), None
    if threshold is None:
        if fallback_threshold is None:
            raise ValueError("threshold calibration needs both safe and unsafe examples")
        threshold = fallback_threshold
    return Calibration(weight, weight_auprc, threshold, response_threshold)


def evaluate_bundle(
    bundle_path: Path | str,
    records: Sequence[Example],
    *,
    threshold: float | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    batch_size: int = 64,
    threads: int = 2,
    progress: bool = True,
) -> EvalResult:
    """Score labelled ``records`` with the bundle exactly as served, and measure it.

    ``threshold`` defaults to the bundle's own. Records without a ``label`` are skipped (counted).
    """
    from guard_plugin.model import GuardModel
    from guard_plugin.settings import GuardSettings

    model = GuardModel.load(Path(bundle_path), GuardSettings(threads=threads))
    labelled = [record for record in records if record.label is not None]
    scores: list[float] = []
    codes = tuple(head.code for head in model.manifest.categories or ())
    category_rows: list[list[float]] = []
    cap_hits = 0
    with tqdm(total=len(labelled), desc="evaluate", unit="ex", disable=not progress) as bar:
        for start in range(0, len(labelled), batch_size):
            chunk = labelled[start : start + batch_size]
            for score in model.score([(record.prompt, record.response) for record in chunk]):
                scores.append(score.p_unsafe)
                category_rows.append([score.categories[code] for code in codes])
                cap_hits += int(score.window_cap_hit)
            bar.update(len(chunk))
    result = evaluate_scores(
        [int(record.label) for record in labelled],  # type: ignore[arg-type]
        scores,
        [record.source for record in labelled],
        threshold=model.threshold if threshold is None else threshold,
        guard_version=model.version,
        target_recall=target_recall,
        window_cap_hits=cap_hits,
        skipped_unlabelled=len(records) - len(labelled),
    )
    if codes:
        from distill.categories import category_targets

        result.category_codes = codes
        result.category_scores = np.array(category_rows, dtype=np.float64).reshape(-1, len(codes))
        result.category_targets = [category_targets(record) for record in labelled]
        thresholds = {head.code: head.threshold for head in model.manifest.categories or ()}
        result.categories = category_metrics(
            codes, result.category_scores, result.category_targets, thresholds
        )
    if model.first_stage is not None and labelled:
        from distill.cascade import cascade_metrics, routed

        items = [(record.prompt, record.response) for record in labelled]
        first = model.first_stage.scores(items)
        cleared = routed(items, first, model.first_stage.manifest)
        result.cascade = cascade_metrics(
            result.labels, result.scores, first, cleared, result.threshold
        )
    return result


# -- report ------------------------------------------------------------------------------------
def plot_pr_curves(result: EvalResult, path: Path) -> Path:
    """Precision-recall curve overall and for every source that has both classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5))
    groups = [("all", np.ones(result.n, dtype=bool))]
    sources = np.asarray(result.sources, dtype=object)
    groups += [(name, sources == name) for name in sorted(set(result.sources))]
    for name, mask in groups:
        y, s = result.labels[mask], result.scores[mask]
        if y.sum() == 0 or y.sum() == y.size or (name != "all" and len(groups) == 2):
            continue
        c = curve(y, s)
        ap = average_precision(y, s)
        style = {"linewidth": 2.2, "color": "black"} if name == "all" else {"linewidth": 1}
        ax.step(
            np.r_[0.0, c.recall],
            np.r_[1.0, c.precision],
            where="post",
            label=f"{name} (AP {ap:.3f})",
            **style,
        )
    at = threshold_metrics(result.labels, result.scores, result.threshold)
    ax.scatter(
        [at["recall"]],
        [at["precision"]],
        color="red",
        zorder=5,
        label=f"threshold {result.threshold:.3f}",
    )
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02))
    ax.set_title(f"guard {result.guard_version}: precision-recall (n={result.n})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown_report(result: EvalResult) -> str:
    columns = [
        "n",
        "positives",
        "precision",
        "recall",
        "f1",
        "fpr",
        "auprc",
        "roc_auc",
        "fpr_at_recall",
    ]
    lines = [
        f"# Guard evaluation: {result.guard_version}",
        "",
        f"- items: {result.n} (unlabelled skipped: {result.skipped_unlabelled}; "
        f"window cap hit: {result.window_cap_hits})",
        f"- threshold: {result.threshold:.4f} (unsafe when p_unsafe >= threshold); "
        f"max-F1 threshold on this set: {_fmt(result.calibrated_threshold)}",
        f"- fpr_at_recall: lowest false-positive rate at recall >= {result.target_recall}",
        "",
        "![precision-recall curve](pr_curve.png)",
        "",
        "| source | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    overall = summary_metrics(result.labels, result.scores, result.threshold, result.target_recall)
    for name, metrics in [("**all**", overall), *result.per_source.items()]:
        lines.append(f"| {name} | " + " | ".join(_fmt(metrics[c]) for c in columns) + " |")
    lines += ["", "– : undefined (the source has only unsafe or only safe items).", ""]
    if result.cascade is not None:
        found = result.cascade
        lines += [
            "## Cascade (first stage, then the student)",
            "",
            "| | auprc | recall | fpr |",
            "|---|---|---|---|",
            f"| student alone | {_fmt(found['student_auprc'])} | {_fmt(found['student_recall'])} "
            f"| {_fmt(result.fpr)} |",
            f"| cascade | {_fmt(found['auprc'])} | {_fmt(found['recall'])} | {_fmt(found['fpr'])} |",
            "",
            f"- items that reached the student: {_fmt(found['student_share'])} "
            f"(safe items: {_fmt(found['student_share_safe'])})",
            f"- unsafe items the student catches that the first stage cleared: "
            f"{found['missed_of_caught']} of {found['caught']}",
            "",
        ]
    if result.categories is not None:
        lines += category_report(result.categories)
    return "\n".join(lines)


def category_report(found: dict[str, Any]) -> list[str]:
    """The report's "Categories" section (``EvalResult.categories``)."""
    from distill.categories import CATEGORY_NAMES

    columns = ("positives", "auprc", "threshold", "precision", "recall", "f1")
    lines = [
        "## Categories (Llama Guard 3)",
        "",
        f"- items with known categories: {found['n']} (unsafe with codes: "
        f"{found['unsafe_known']}; unsafe without, left out: {found['unsafe_unknown']}); "
        f"macro AUPRC over the categories with positives: {_fmt(found['macro_auprc'])}",
        "",
        "| category | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for code, row in found["per_category"].items():
        name = CATEGORY_NAMES.get(code, code)
        lines.append(f"| {code} {name} | " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    return [*lines, "", "– : undefined (no positives of the category on this set).", ""]


# -- CLI ---------------------------------------------------------------------------------------
def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "evaluate",
        help="measure a guard on a labelled JSONL set",
        description="Score a labelled JSONL set with a guard exactly as the gateway serves it and "
        "print precision, recall, F1, AUPRC, ROC-AUC and FPR at a fixed recall.",
    )
    parser.add_argument(
        "--guard", default="champion", help="bundle path, registry version or 'champion'"
    )
    parser.add_argument("--data", required=True, type=Path, help="JSONL of records with a label")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument(
        "--report", type=Path, help="write report.md, pr_curve.png, metrics.json here"
    )
    parser.add_argument("--threshold", type=float, help="override the bundle's threshold")
    parser.add_argument(
        "--recall", type=float, default=DEFAULT_TARGET_RECALL, help="recall for fpr_at_recall"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from distill.records import read_jsonl
    from guard_plugin.bundle import BundleError
    from guard_plugin.locate import resolve_guard_path
    from guard_plugin.settings import GuardSettings

    try:
        guard_path = resolve_guard_path(GuardSettings(guard=args.guard))
        records = read_jsonl(args.data)
        result = evaluate_bundle(
            guard_path,
            records,
            threshold=args.threshold,
            target_recall=args.recall,
            batch_size=args.batch_size,
            threads=args.threads,
            progress=not args.json,
        )
    except (BundleError, OSError, ValueError) as exc:
        print(f"harmaug distill evaluate: {exc}", file=sys.stderr)
        return 2
    summary = result.to_dict()
    if args.report:
        summary["report"] = str(result.write_report(args.report))
    if args.json:
        print(json.dumps(summary))
    else:
        print(markdown_report(result))
        if args.report:
            print(f"report written to {summary['report']}")
    return 0
