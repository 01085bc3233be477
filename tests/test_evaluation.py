"""Evaluation: metrics equal scikit-learn's, calibration, reports, and the `evaluate` command."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from sklearn import metrics as sk

from distill.evaluation import (
    add_command,
    average_precision,
    calibrate_threshold,
    evaluate_bundle,
    evaluate_scores,
    fpr_at_recall,
    roc_auc,
    threshold_metrics,
)
from distill.records import Example, write_jsonl
from tests.tiny_guard import FILLER, SAFE, UNSAFE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def evaluate_command(argv: list[str]) -> int:
    """`harmaug distill evaluate ARGV` through this module's own parser."""
    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers())
    args = parser.parse_args(["evaluate", *argv])
    return int(args.func(args))


def known_inputs(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Noisy scores with many ties (rounded to 2 decimals), about 30% positives."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    scores = np.clip(0.35 * labels + rng.normal(0.4, 0.2, n), 0, 1).round(2)
    return labels, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    labels, scores = known_inputs(seed)
    assert average_precision(labels, scores) == pytest.approx(
        sk.average_precision_score(labels, scores), abs=1e-12
    )
    assert roc_auc(labels, scores) == pytest.approx(sk.roc_auc_score(labels, scores), abs=1e-12)
    for threshold in (0.3, 0.5, 0.71):
        ours = threshold_metrics(labels, scores, threshold)
        predicted = (scores >= threshold).astype(int)
        assert ours["precision"] == pytest.approx(sk.precision_score(labels, predicted))
        assert ours["recall"] == pytest.approx(sk.recall_score(labels, predicted))
        assert ours["f1"] == pytest.approx(sk.f1_score(labels, predicted))
    fpr, tpr, _ = sk.roc_curve(labels, scores, drop_intermediate=False)
    for recall in (0.5, 0.9, 0.95):
        assert fpr_at_recall(labels, scores, recall) == pytest.approx(fpr[tpr >= recall].min())


def test_metrics_on_a_hand_checked_example():
    labels = [0, 0, 1, 1]
    scores = [0.1, 0.4, 0.35, 0.8]
    assert average_precision(labels, scores) == pytest.approx((1 + 2 / 3) / 2)
    assert roc_auc(labels, scores) == pytest.approx(0.75)
    assert fpr_at_recall(labels, scores, 1.0) == pytest.approx(0.5)
    assert threshold_metrics(labels, scores, 0.5)["precision"] == 1.0


@pytest.mark.parametrize("seed", [0, 3])
def test_calibration_picks_the_max_f1_threshold(seed):
    labels, scores = known_inputs(seed)
    best = max(sk.f1_score(labels, scores >= t) for t in np.unique(scores))
    threshold = calibrate_threshold(labels, scores)
    assert threshold_metrics(labels, scores, threshold)["f1"] == pytest.approx(best)
    assert threshold not in set(scores)  # halfway between two scores: >= and > agree
    assert sk.f1_score(labels, scores > threshold) == pytest.approx(best)


def test_calibration_for_a_target_false_positive_rate():
    labels, scores = known_inputs(4)
    threshold = calibrate_threshold(labels, scores, method="target_fpr", target_fpr=0.05)
    at = threshold_metrics(labels, scores, threshold)
    assert at["fpr"] <= 0.05
    # No lower threshold (more recall) keeps the FPR within the target.
    lower = [t for t in np.unique(scores) if t < threshold]
    assert threshold_metrics(labels, scores, max(lower))["fpr"] > 0.05
    with pytest.raises(ValueError, match="both safe and unsafe"):
        calibrate_threshold([1, 1], [0.2, 0.3])


def test_per_source_breakdown_and_report(tmp_path):
    labels, scores = known_inputs(5, n=120)
    sources = ["a" if i % 3 else "b" for i in range(120)]
    result = evaluate_scores(labels, scores, sources, threshold=0.5, guard_version="v-test")
    assert set(result.per_source) == {"a", "b"}
    mask = np.array(sources) == "b"
    assert result.per_source["b"]["n"] == mask.sum()
    assert result.per_source["b"]["auprc"] == pytest.approx(
        sk.average_precision_score(labels[mask], scores[mask])
    )
    report = result.write_report(tmp_path / "report")
    text = report.read_text()
    assert "| a |" in text and "| b |" in text and "pr_curve.png" in text
    assert (tmp_path / "report/pr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "report/metrics.json").read_text())["guard_version"] == "v-test"


def toy_eval_records() -> list[Example]:
    safe = [Example(prompt=t, label=0, source="toy-safe") for t in SAFE]
    unsafe = [Example(prompt=t, label=1, source="toy-unsafe") for t in UNSAFE]
    long_unsafe = [
        Example(prompt=" ".join([FILLER] * 12) + " " + t, label=1, source="toy-long")
        for t in UNSAFE[:6]
    ]
    return [*safe, *unsafe, *long_unsafe, Example(prompt="unlabelled", source="toy-safe")]


def test_evaluate_bundle_scores_the_bundle_as_served(tiny_torch_bundle):
    result = evaluate_bundle(tiny_torch_bundle, toy_eval_records(), threads=1, progress=False)
    assert result.guard_version == "tiny-torch-1" and result.threshold == 0.5
    assert result.n == len(SAFE) + len(UNSAFE) + 6 and result.skipped_unlabelled == 1
    assert result.auprc > 0.95 and result.f1 > 0.9
    # The long prompts are windowed (harm at the end is seen), not truncated.
    assert result.per_source["toy-long"]["recall"] == 1.0
    custom = evaluate_bundle(tiny_torch_bundle, toy_eval_records(), threshold=0.99, progress=False)
    assert custom.threshold == 0.99 and custom.auprc == result.auprc


def test_evaluate_command_prints_one_json_object(tiny_torch_bundle, tmp_path, capsys):
    data = write_jsonl(tmp_path / "eval.jsonl", toy_eval_records())
    report = tmp_path / "report"
    args = ["--guard", str(tiny_torch_bundle), "--data", str(data), "--report", str(report)]
    code = evaluate_command([*args, "--json", "--threads", "1"])
    assert code == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(line)
    for key in ("n", "precision", "recall", "f1", "auprc", "roc_auc", "threshold", "fpr_at_recall"):
        assert isinstance(summary[key], float | int), key
    assert summary["threshold"] == 0.5 and summary["n"] == len(toy_eval_records()) - 1
    assert (tmp_path / "report/report.md").is_file() and (
        tmp_path / "report/pr_curve.png"
    ).is_file()


def test_evaluate_command_explains_a_missing_guard(harmaug_home, tmp_path, capsys):
    data = write_jsonl(tmp_path / "eval.jsonl", toy_eval_records())
    assert evaluate_command(["--guard", "champion", "--data", str(data), "--json"]) == 2
    assert "no champion guard" in capsys.readouterr().err
