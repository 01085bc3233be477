"""The two-stage guard: a first stage that clears easy items, the student that judges the rest.

On the tiny guard: ``tiny_cascade_bundle`` carries a first stage distilled from it
(``distill.cascade``); routing is checked by counting the student's calls.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.gateway_overhead import copy_with_cuts
from distill import bootstrap
from distill.cascade import MAX_RECALL_LOSS, cascade_metrics, choose_cut
from distill.evaluation import evaluate_bundle
from distill.records import Example
from distill.registry import gate
from distill.settings import TrainRecipe
from guard_plugin.bundle import BundleError, GuardBundle
from guard_plugin.guard import Guard
from guard_plugin.model import GuardModel
from guard_plugin.settings import GuardSettings
from tests.tiny_guard import SAFE, UNSAFE


class CountingModel:
    """Wraps a GuardModel's ``score`` to record every item the student scores."""

    def __init__(self, model: GuardModel) -> None:
        self.items: list[tuple[str, str | None]] = []
        original = model.score

        def score(pairs, **kwargs):  # type: ignore[no-untyped-def]
            self.items.extend(pairs)
            return original(pairs, **kwargs)

        model.score = score  # type: ignore[method-assign]


def guard_of(path: Path, **settings: object) -> tuple[Guard, CountingModel]:
    model = GuardModel.load(path, GuardSettings(cache_size=0, **settings))  # type: ignore[arg-type]
    return Guard(model, GuardSettings(cache_size=0)), CountingModel(model)


async def test_an_item_below_the_cut_never_reaches_the_student_one_above_always_does(
    tiny_cascade_bundle: Path, tmp_path: Path
) -> None:
    model = GuardModel.load(tiny_cascade_bundle, GuardSettings())
    assert model.first_stage is not None
    low, high = model.first_stage.scores([(SAFE[0], None), (UNSAFE[0], None)])
    assert low < high
    cut = float(min((low + high) / 2, model.threshold))
    assert low < cut
    bundle = copy_with_cuts(tiny_cascade_bundle, tmp_path / "b", prompt=cut, completion=0.0)
    guard, student = guard_of(bundle)
    try:
        cleared = await guard.check_prompt(SAFE[0])
        assert cleared.stage == "first_stage" and not cleared.unsafe
        assert cleared.p_unsafe == pytest.approx(float(low)) and student.items == []
        judged = await guard.check_prompt(UNSAFE[0])
        assert judged.stage == "student" and judged.unsafe
        assert student.items == [(UNSAFE[0], None)]
        # completions have their own cut: 0 clears none of them
        pair = await guard.check_completion(UNSAFE[0], SAFE[0])
        assert pair.stage == "student" and student.items[-1] == (UNSAFE[0], SAFE[0])
    finally:
        await guard.aclose()


async def test_the_benchmarks_ceiling_copy_clears_whatever_scores_below_the_threshold(
    tiny_cascade_bundle: Path, tmp_path: Path
) -> None:
    """``gateway_overhead.py --compare-cuts-at-threshold`` serves such a copy: it must load (its
    hashes rewritten) and send on only what the first stage itself scores at or above the
    threshold."""
    none_cleared = copy_with_cuts(tiny_cascade_bundle, tmp_path / "low", prompt=0.0, completion=0.0)
    bundle = copy_with_cuts(none_cleared, tmp_path / "ceiling")
    manifest = GuardBundle.load(bundle).manifest
    assert manifest.first_stage is not None
    assert manifest.first_stage.cut_prompt == manifest.first_stage.cut_completion
    assert manifest.first_stage.cut_prompt == manifest.threshold
    guard, student = guard_of(bundle)
    assert guard.model.first_stage is not None
    texts = [*SAFE, *UNSAFE]
    scores = guard.model.first_stage.scores([(text, None) for text in texts])
    try:
        for text, score in zip(texts, scores, strict=True):
            verdict = await guard.check_prompt(text)
            assert verdict.stage == ("first_stage" if score < manifest.threshold else "student")
        assert student.items == [
            (text, None)
            for text, score in zip(texts, scores, strict=True)
            if score >= manifest.threshold
        ]
        assert 0 < len(student.items) < len(texts)  # the tiny guard's unsafe texts score higher
    finally:
        await guard.aclose()


async def test_a_threshold_below_the_bundles_or_cascade_off_sends_everything_to_the_student(
    tiny_cascade_bundle: Path,
) -> None:
    guard, student = guard_of(tiny_cascade_bundle)
    try:
        assert (await guard.check_prompt(SAFE[0])).stage == "first_stage"
        lower = await guard.check_prompt(SAFE[0], threshold=0.1)  # the cut was chosen for 0.5
        assert lower.stage == "student" and student.items == [(SAFE[0], None)]
    finally:
        await guard.aclose()
    guard, student = guard_of(tiny_cascade_bundle, cascade=False)
    try:
        assert (await guard.check_prompt(SAFE[1])).stage == "student"
        assert student.items == [(SAFE[1], None)]
    finally:
        await guard.aclose()


async def test_text_too_long_for_the_first_stage_goes_to_the_student(
    tiny_cascade_bundle: Path,
) -> None:
    guard, student = guard_of(tiny_cascade_bundle)
    long_safe = " ".join([SAFE[0]] * 400)  # more chunks than the student has windows
    try:
        verdict = await guard.check_prompt(long_safe)
        assert verdict.stage == "student" and student.items == [(long_safe, None)]
    finally:
        await guard.aclose()


async def test_a_failing_first_stage_leaves_the_verdict_to_the_student(
    tiny_cascade_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guard, student = guard_of(tiny_cascade_bundle)
    assert guard.model.first_stage is not None

    def broken(items):  # type: ignore[no-untyped-def]
        raise RuntimeError("first stage broke")

    monkeypatch.setattr(guard.model.first_stage, "clears", broken)
    try:
        verdict = await guard.check_prompt(SAFE[0])
        assert verdict.stage == "student" and not verdict.unsafe
        assert student.items == [(SAFE[0], None)]
    finally:
        await guard.aclose()


def test_the_word_cache_tokenizes_exactly_as_the_tokenizer(tiny_cascade_bundle: Path) -> None:
    model = GuardModel.load(tiny_cascade_bundle, GuardSettings())
    assert model.first_stage is not None
    features = model.first_stage.features
    assert features.words is not None  # a BERT WordPiece tokenizer: the fast path is on
    rng = np.random.default_rng(0)
    alphabet = [*"abcxyz019 ,.!?'-_[]()\t\n\r\x00\x01\x0b\x0c\x7f", "é", "中", "ü"]
    texts = [*SAFE, *UNSAFE, "HOW do I Bake?!", "a" * 150 + " b", "x [SEP] y [UNK] z", ""]
    texts += ["".join(rng.choice(alphabet, size=int(rng.integers(0, 60)))) for _ in range(3000)]
    texts.append("bread " * 700)  # cut at the tokenizer's limit, as it truncates
    expected = features.static.tokenize(texts)
    assert [features.token_ids([text])[0] for text in texts] == expected
    assert features.token_ids(texts) == expected


@pytest.mark.parametrize("name", ["head.safetensors", "model.safetensors", "tokenizer.json"])
def test_a_tampered_first_stage_file_is_refused(
    tiny_cascade_bundle: Path, tmp_path: Path, name: str
) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(tiny_cascade_bundle, bundle)
    target = bundle / "stage1" / name
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"stage1/{name}: sha256 mismatch"):
        GuardModel.load(bundle, GuardSettings())


def test_an_unlisted_or_missing_first_stage_file_is_refused(
    tiny_cascade_bundle: Path, tmp_path: Path
) -> None:
    extra = tmp_path / "extra"
    shutil.copytree(tiny_cascade_bundle, extra)
    (extra / "stage1" / "more.safetensors").write_bytes(b"not listed")
    with pytest.raises(BundleError, match=r"stage1/more\.safetensors"):
        GuardBundle.load(extra)
    missing = tmp_path / "missing"
    shutil.copytree(tiny_cascade_bundle, missing)
    (missing / "stage1" / "head.safetensors").unlink()
    with pytest.raises(
        BundleError, match=r"head\.safetensors: file listed in guard\.json is missing"
    ):
        GuardBundle.load(missing)
    outside = tmp_path / "outside"
    shutil.copytree(tiny_cascade_bundle, outside)
    raw = json.loads((outside / "guard.json").read_text())
    raw["first_stage"]["path"] = "../elsewhere"
    (outside / "guard.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="outside the bundle"):
        GuardBundle.load(outside)
    above = tmp_path / "above"
    shutil.copytree(tiny_cascade_bundle, above)
    raw = json.loads((above / "guard.json").read_text())
    raw["first_stage"]["cut_prompt"] = raw["threshold"] + 0.01  # would clear "unsafe" verdicts
    (above / "guard.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="cut is above the bundle's threshold"):
        GuardBundle.load(above)


async def test_bundles_without_a_first_stage_still_serve_with_the_student(
    tiny_torch_bundle: Path, tiny_hf_dir: Path
) -> None:
    for path in (tiny_torch_bundle, tiny_hf_dir):
        guard, student = guard_of(path)
        try:
            assert guard.model.first_stage is None
            verdict = await guard.check_prompt(UNSAFE[1])
            assert verdict.stage == "student" and verdict.unsafe
            assert student.items == [(UNSAFE[1], None)]
        finally:
            await guard.aclose()


def test_the_cut_clears_at_most_the_allowed_share_of_caught_items() -> None:
    rng = np.random.default_rng(0)
    first = rng.uniform(0, 1, 1000)
    caught = np.zeros(1000, dtype=bool)
    caught[:400] = True  # 400 caught: the 2nd lowest, as floor(0.005 * 401) = 2
    cut = choose_cut(first, caught, 1.0, 0.005)
    assert (first[caught] < cut).sum() == 1
    # so a new item like the caught ones is cleared with probability 2 / 401, within 0.5%: with
    # uniform scores that probability is the cut itself, averaged here over 4,000 validation sets
    every = np.ones(400, dtype=bool)
    cuts = [choose_cut(rng.uniform(0, 1, 400), every, 1.0, 0.005) for _ in range(4000)]
    assert float(np.mean(cuts)) == pytest.approx(2 / 401, rel=0.05)
    assert choose_cut(first, caught, 0.001) == 0.001  # never above the threshold
    assert choose_cut(first, np.zeros(1000, dtype=bool), 1.0) == 0.0  # nothing caught
    few = np.zeros(1000, dtype=bool)
    few[:10] = True  # 10 caught: none may be cleared
    assert (first[few] < choose_cut(first, few, 1.0, 0.005)).sum() == 0


def test_choose_cut_with_few_caught_items_still_misses_at_most_the_bound() -> None:
    """53 caught items (the validation set's caught pairs): no rank meets 0.5%, and the lowest
    score clears a new item with probability 1 / 54; the scaled cut keeps it within 0.5%."""
    rng = np.random.default_rng(3)
    every = np.ones(53, dtype=bool)
    # uniform scores: a new item is cleared with probability equal to the cut
    cuts = [choose_cut(rng.uniform(0, 1, 53), every, 1.0, 0.005) for _ in range(20000)]
    assert float(np.mean(cuts)) == pytest.approx(0.005, rel=0.05)
    # scores piled up near 1 (what a caught item looks like): further inside the bound
    cuts = [choose_cut(rng.beta(4, 1, 53), every, 1.0, 0.005) for _ in range(20000)]
    assert float(np.mean([c**4 for c in cuts])) < 0.005  # the Beta(4, 1) CDF is x**4
    scores = rng.uniform(0, 1, 53)
    assert choose_cut(scores, every, 1.0, 0.005) == pytest.approx(0.27 * scores.min())


def test_cross_fitted_scores_come_from_fits_that_never_saw_the_items_prompt(
    tiny_cascade_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caught training items bound the cuts with scores of fits that did not see their
    prompt, alone or in any pair; the distilled embedding they start from is left untouched."""
    from model2vec import StaticModel

    from distill import cascade

    static = StaticModel.from_pretrained(tiny_cascade_bundle / "stage1")
    distilled = np.array(static.embedding, copy=True)
    items = [(text, None) for text in SAFE + UNSAFE]
    items += [(a, b) for a, b in zip(SAFE, UNSAFE, strict=False)]
    targets = np.asarray([0.9 if (b or a) in UNSAFE else 0.1 for a, b in items])
    fitted_on: list[set[str]] = []
    fit = cascade.fit_first_stage

    def recording_fit(fold_static, fold_items, fold_targets, **kwargs):  # type: ignore[no-untyped-def]
        fitted_on.append({prompt for prompt, _ in fold_items})
        return fit(fold_static, fold_items, fold_targets, **kwargs)

    monkeypatch.setattr(cascade, "fit_first_stage", recording_fit)
    scores = cascade.cross_fitted(
        static, items, targets, folds=3, max_chunks=2, threshold=0.5, seed=1
    )
    assert len(fitted_on) == 3 and np.isfinite(scores).all()
    prompts = {prompt for prompt, _ in items}
    # each prompt is held out of exactly one fit: its score (alone and in pairs) comes from there
    assert all(sum(prompt not in seen for seen in fitted_on) == 1 for prompt in prompts)
    assert np.array_equal(np.asarray(static.embedding), distilled)


@pytest.mark.parametrize("centre", [0.5, 0.1])
def test_a_first_stage_fitted_at_any_centre_serves_scores_on_the_students_scale(
    tiny_cascade_bundle: Path, centre: float
) -> None:
    """A fit centred elsewhere than 0.5 learns moved targets, and its head is moved back: what it
    serves ranks the student's flagged items over its passed ones and matches the student's
    scores (the cuts, bounded by the threshold, are compared with them)."""
    from model2vec import StaticModel

    from distill import cascade
    from guard_plugin.bundle import FirstStageManifest
    from guard_plugin.first_stage import FirstStage, StaticFeatures

    static = StaticModel.from_pretrained(tiny_cascade_bundle / "stage1")
    items = [(text, None) for text in SAFE + UNSAFE]
    targets = np.asarray([0.9 if text in UNSAFE else 0.05 for text, _ in items])
    repeats = 40  # a few dozen steps of the fit's batches
    head = cascade.fit_first_stage(
        static, items * repeats, np.tile(targets, repeats), max_chunks=2, threshold=0.5,
        centre=centre,
    )  # fmt: skip
    draft = FirstStageManifest(base_model="tiny", cut_prompt=0.0, cut_completion=0.0)
    served = FirstStage(StaticFeatures(static, max_chunks=2), head, draft).scores(items)
    flagged = targets > 0.5
    assert served[flagged].min() > served[~flagged].max()
    assert np.median(served[flagged]) == pytest.approx(0.9, abs=0.02)
    assert np.median(served[~flagged]) == pytest.approx(0.05, abs=0.02)
    with pytest.raises(ValueError, match="centre"):
        cascade.fit_first_stage(static, items, targets, max_chunks=2, threshold=0.5, centre=1.0)


def test_cascade_metrics_count_what_the_first_stage_cleared() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0])
    student = np.array([0.9, 0.8, 0.2, 0.7, 0.1, 0.1])
    first = np.array([0.5, 0.05, 0.5, 0.5, 0.05, 0.05])
    cleared = first < 0.1
    found = cascade_metrics(labels, student, first, cleared, threshold=0.5)
    assert found["caught"] == 2 and found["missed_of_caught"] == 1
    assert found["student_recall"] == pytest.approx(2 / 3)
    assert found["recall"] == pytest.approx(1 / 3)
    assert found["recall_loss"] == pytest.approx(1 / 3)
    assert found["student_share"] == pytest.approx(0.5)
    assert found["student_share_safe"] == pytest.approx(1 / 3)


def test_evaluation_reports_the_cascade_beside_the_student(
    tiny_cascade_bundle: Path, tmp_path: Path
) -> None:
    records = [Example(prompt=t, label=0, source="safe") for t in SAFE[:10]]
    records += [Example(prompt=t, label=1, source="unsafe") for t in UNSAFE[:10]]
    result = evaluate_bundle(tiny_cascade_bundle, records, progress=False)
    assert result.cascade is not None
    assert result.cascade["student_auprc"] == pytest.approx(result.auprc)
    assert result.cascade["recall_loss"] == 0.0 and result.cascade["student_share_safe"] == 0.0
    assert result.to_dict()["cascade"]["caught"] == 10
    report = result.write_report(tmp_path / "report").read_text()
    assert "## Cascade" in report and "0 of 10" in report


def test_the_gate_refuses_a_first_stage_that_loses_too_much_recall() -> None:
    champion = {"auprc": 0.9, "f1": 0.8}
    ok, _ = gate(champion, {"auprc": 0.9, "f1": 0.8, "cascade_recall_loss": 0.0}, 0.005)
    assert ok
    ok, reason = gate(
        champion, {"auprc": 0.95, "f1": 0.85, "cascade_recall_loss": MAX_RECALL_LOSS + 0.01}, 0.005
    )
    assert not ok and "first stage" in reason
    ok, _ = gate(None, {"auprc": 0.9, "f1": 0.8, "cascade_recall_loss": 0.2}, 0.005)
    assert not ok  # a first champion too


RECIPE = TrainRecipe(max_steps=2, batch_size=8, max_length=32, window_stride=8, max_windows=2)


def seal(model_dir: Path, out: Path, records: list[Example]) -> GuardBundle:
    bootstrap.seal_bundle(
        model_dir,
        out,
        version="sealed",
        base_model="tiny-bert",
        recipe=RECIPE,
        max_windows=4,
        calibration=records,
        validation=records,
        test=records,
        training_data={},
        report_dir=out.parent / "report",
        int8=False,
        progress=False,
    )
    return GuardBundle.load(out)


def test_sealing_builds_the_first_stage_and_measures_it_on_the_test_set(
    tiny_hf_dir: Path, tmp_path: Path, toy_train_records: list[Example]
) -> None:
    bundle = seal(tiny_hf_dir, tmp_path / "bundle", toy_train_records)
    first = bundle.manifest.first_stage
    assert first is not None and (bundle.path / "stage1" / "head.safetensors").is_file()
    assert first.metrics["validation"]["missed_of_caught"] == 0
    assert bundle.manifest.metrics["test"]["cascade"]["recall_loss"] <= MAX_RECALL_LOSS
    assert any(name.startswith("stage1/") for name in bundle.manifest.files)


def test_sealing_drops_a_first_stage_that_loses_recall_on_the_test_set(
    tiny_hf_dir: Path,
    tmp_path: Path,
    toy_train_records: list[Example],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a first stage that scores everything 0 and a cut at the threshold: it clears every item
    monkeypatch.setattr(
        "guard_plugin.first_stage.FirstStage.scores", lambda self, items: np.zeros(len(items))
    )
    monkeypatch.setattr("distill.cascade.choose_cut", lambda first, caught, threshold, _: threshold)
    bundle = seal(tiny_hf_dir, tmp_path / "bundle", toy_train_records)
    assert bundle.manifest.first_stage is None and not (bundle.path / "stage1").exists()
    dropped = bundle.manifest.metrics["first_stage_dropped"]
    assert dropped["recall_loss"] > MAX_RECALL_LOSS
    assert "cascade" not in bundle.manifest.metrics["test"] or (
        bundle.manifest.metrics["test"]["cascade"] is None
    )
