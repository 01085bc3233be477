"""GuardModel: behaviour on the tiny trained guard, windows at work, batch independence, backends."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from guard_plugin.bundle import GuardBundle, write_manifest
from guard_plugin.model import (
    MAX_PADDING,
    PADDING_SLACK,
    GuardModel,
    collate,
    length_chunks,
    shift_logit,
)
from guard_plugin.settings import GuardSettings
from tests.tiny_guard import FILLER, SAFE, UNSAFE

LONG_FILLER = " ".join([FILLER] * 12)  # ~160 tokens: several 64-token windows
# One intra-op thread: tiny models gain nothing from two, and shared CI cores stall OpenMP.
ONE_THREAD = GuardSettings(threads=1)


@pytest.fixture(scope="module")
def torch_model(tiny_torch_bundle: Path) -> GuardModel:
    return GuardModel.load(tiny_torch_bundle, ONE_THREAD)


def onnx_model(bundle_dir: Path, variant: str, **options: int) -> GuardModel:
    bundle = GuardBundle.load(bundle_dir)
    if bundle.onnx_path(variant) is None:
        pytest.skip(f"the tiny ONNX bundle has no {variant} model (int8 failed its parity check)")
    return GuardModel(bundle, backend="onnx", onnx_variant=variant, threads=1, **options)


def test_in_distribution_texts_are_separated(torch_model: GuardModel) -> None:
    scores = torch_model.score([(text, None) for text in SAFE + UNSAFE])
    safe, unsafe = scores[: len(SAFE)], scores[len(SAFE) :]
    assert max(s.p_unsafe for s in safe) < 0.1
    assert min(s.p_unsafe for s in unsafe) > 0.9
    assert all(s.windows == 1 and not s.window_cap_hit for s in scores)


def test_harmful_end_of_a_long_prompt_is_caught_through_windows(
    torch_model: GuardModel, tiny_torch_bundle: Path
) -> None:
    prompt = LONG_FILLER + " " + UNSAFE[0]
    (windowed,) = torch_model.score([(prompt, None)])
    assert windowed.windows > 2 and not windowed.window_cap_hit
    assert windowed.p_unsafe > 0.9
    # The same model seeing only the first window (what plain truncation sees) misses it.
    first_window_only = GuardModel(GuardBundle.load(tiny_torch_bundle), max_windows=1, threads=1)
    (truncated,) = first_window_only.score([(prompt, None)])
    assert truncated.windows == 1 and truncated.window_cap_hit
    assert truncated.p_unsafe < 0.1


def test_pair_with_long_prompt_still_sees_the_response(torch_model: GuardModel) -> None:
    prompt = LONG_FILLER + " " + SAFE[0] + " " + LONG_FILLER
    complies, refuses = torch_model.score([(prompt, UNSAFE[8]), (prompt, SAFE[3])])
    assert complies.p_unsafe > 0.9
    assert refuses.p_unsafe < 0.1
    long_answer = LONG_FILLER + " " + UNSAFE[2] + " " + LONG_FILLER
    (deep,) = torch_model.score([(prompt, long_answer)])
    assert deep.windows > 1 and deep.p_unsafe > 0.9  # harmful text mid-response


def _mixed_batch(target: tuple[str, str | None]) -> list[tuple[str, str | None]]:
    return [
        (LONG_FILLER * 2, None),
        ("hi", None),
        target,
        (LONG_FILLER, UNSAFE[1]),
        (SAFE[2], SAFE[4]),
        (UNSAFE[5], None),
    ]


@pytest.mark.parametrize("backend", ["torch", "fp32", "int8"])
def test_verdict_does_not_depend_on_the_batch(
    backend: str, tiny_torch_bundle: Path, tiny_onnx_bundle: Path
) -> None:
    if backend == "torch":  # several padded chunks of mixed lengths:
        model = GuardModel(GuardBundle.load(tiny_torch_bundle), max_batch_size=4, threads=1)
    else:
        model = onnx_model(tiny_onnx_bundle, backend, max_batch_size=4)
    targets: list[tuple[str, str | None]] = [
        (SAFE[0], None),
        (UNSAFE[3], None),
        (SAFE[1], UNSAFE[7]),
        (FILLER + " " + UNSAFE[4], None),
    ]
    for target in targets:
        (alone,) = model.score([target])
        in_batch = model.score(_mixed_batch(target))[2]
        assert abs(alone.p_unsafe - in_batch.p_unsafe) < 1e-4
    # The probabilities of the toy model saturate, so check the logits as well.
    windows = [w for item in model.windows.build(_mixed_batch(targets[2])) for w in item.windows]
    padded = model.backend.run(collate(windows, pad_id=model.pad_id, token_types=True))
    for row, window in enumerate(windows):
        single = model.backend.run(collate([window], pad_id=model.pad_id, token_types=True))
        assert np.abs(single[0] - padded[row]).max() < 1e-4


@pytest.mark.parametrize(("variant", "tolerance"), [("fp32", 1e-3), ("int8", 0.05)])
def test_torch_and_onnx_agree(
    torch_model: GuardModel, tiny_onnx_bundle: Path, variant: str, tolerance: float
) -> None:
    model = onnx_model(tiny_onnx_bundle, variant)
    assert model.backend.name == f"onnx-{variant}"
    pairs: list[tuple[str, str | None]] = [(t, None) for t in SAFE[::5] + UNSAFE[::5]]
    pairs += [(LONG_FILLER + " " + UNSAFE[6], None), (LONG_FILLER, UNSAFE[9]), ("", None)]
    for a, b in zip(torch_model.score(pairs), model.score(pairs), strict=True):
        assert abs(a.p_unsafe - b.p_unsafe) < tolerance
        assert (a.windows, a.window_cap_hit) == (b.windows, b.window_cap_hit)


def test_a_pair_mixes_its_reading_in_context_with_the_response_alone(
    torch_model: GuardModel, tiny_torch_bundle: Path, tmp_path: Path
) -> None:
    """A harmful request answered safely (and the reverse): with a response weight, the pair's
    P(unsafe) is the weighted mean of the pair read in its windows and the response read alone;
    a prompt alone is read once. The manifest's weight and logit shift apply to pairs only."""
    pairs: list[tuple[str, str | None]] = [
        (UNSAFE[0], SAFE[1]),
        (SAFE[0], UNSAFE[1]),
        (UNSAFE[2], None),
    ]
    in_pair = torch_model.score(pairs)  # the tiny bundle's weight is 0: the pair only
    alone = torch_model.score([(SAFE[1], None), (UNSAFE[1], None)])
    mixed = torch_model.score(pairs, response_weight=0.25)
    for i in (0, 1):
        expected = 0.75 * in_pair[i].p_unsafe + 0.25 * alone[i].p_unsafe
        assert mixed[i].p_unsafe == pytest.approx(expected, abs=1e-9)
        assert mixed[i].windows == in_pair[i].windows + alone[i].windows
    assert mixed[2].p_unsafe == pytest.approx(in_pair[2].p_unsafe)
    assert mixed[2].windows == in_pair[2].windows

    root = tmp_path / "responses-alone"
    shutil.copytree(tiny_torch_bundle, root)
    manifest = GuardBundle.load(root).manifest
    write_manifest(
        root, manifest.model_copy(update={"response_weight": 1.0, "response_shift": 2.0})
    )
    served = GuardModel.load(root, ONE_THREAD).score(pairs)
    assert served[0].p_unsafe == pytest.approx(float(shift_logit(alone[0].p_unsafe, 2.0)))
    assert served[0].windows == alone[0].windows  # weight 1: the context is not read at all
    assert served[0].p_unsafe > in_pair[0].p_unsafe or in_pair[0].p_unsafe > 0.99
    assert served[2].p_unsafe == pytest.approx(in_pair[2].p_unsafe)


def test_unsafe_label_index_is_honoured(tiny_torch_bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "flipped"
    shutil.copytree(tiny_torch_bundle, root)
    manifest = GuardBundle.load(tiny_torch_bundle).manifest
    write_manifest(root, manifest.model_copy(update={"unsafe_label_index": 0}))
    flipped = GuardModel.load(root, ONE_THREAD)
    original = GuardModel.load(tiny_torch_bundle, ONE_THREAD)
    pairs: list[tuple[str, str | None]] = [(SAFE[0], None), (UNSAFE[0], None)]
    for a, b in zip(original.score(pairs), flipped.score(pairs), strict=True):
        assert math.isclose(a.p_unsafe, 1 - b.p_unsafe, abs_tol=1e-6)


def test_bad_input_gives_defined_scores(torch_model: GuardModel) -> None:
    scores = torch_model.score([("", None), ("", ""), ("\ud800", "\udfff"), ("a\x00b", "\ufffe")])
    assert all(0.0 <= s.p_unsafe <= 1.0 and s.windows == 1 for s in scores)
    assert torch_model.score([]) == []


def test_five_megabyte_prompt_has_bounded_cost(torch_model: GuardModel) -> None:
    prompt = (FILLER + " ") * (5_000_000 // (len(FILLER) + 1)) + UNSAFE[0]
    started = time.perf_counter()
    (score,) = torch_model.score([(prompt, None)])
    assert time.perf_counter() - started < 10.0
    assert score.window_cap_hit and score.windows == torch_model.windows.max_windows
    assert score.p_unsafe > 0.9  # the end of the text is always kept


def test_length_chunks_keep_padding_small() -> None:
    lengths = sorted([5, 5, 6, 7, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 100, 110, 128, 256])
    chunks = length_chunks(lengths, 8)
    assert [i for start, end in chunks for i in range(start, end)] == list(range(len(lengths)))
    for start, end in chunks:
        assert 1 <= end - start <= 8
        width = lengths[end - 1]
        assert width - lengths[start] <= max(PADDING_SLACK, MAX_PADDING * width)
    assert (0, 4) in chunks  # short windows within the slack share a batch
    assert length_chunks([], 8) == [] and length_chunks([3], 8) == [(0, 1)]
    assert length_chunks([10] * 20, 8) == [(0, 8), (8, 16), (16, 20)]


def test_forward_batches_group_windows_of_similar_length(torch_model: GuardModel) -> None:
    widths: list[tuple[int, int]] = []  # (batch width, shortest window) of each forward
    run = torch_model.backend.run

    def recording(batch: dict[str, np.ndarray]) -> np.ndarray:
        lengths = batch["attention_mask"].sum(axis=1)
        widths.append((batch["input_ids"].shape[1], int(lengths.min())))
        return run(batch)

    pairs = [(" ".join([FILLER] * k) + " " + UNSAFE[k % len(UNSAFE)], None) for k in range(1, 9)]
    pairs += [(text, None) for text in SAFE[:8]]
    torch_model.backend.run = recording  # type: ignore[method-assign,assignment]
    try:
        batched = torch_model.score(pairs)
    finally:
        del torch_model.backend.run
    assert len(widths) >= 2
    for width, shortest in widths:
        assert width - shortest <= max(PADDING_SLACK, MAX_PADDING * width)
    alone = [torch_model.score([pair])[0].p_unsafe for pair in pairs]
    assert [s.p_unsafe for s in batched] == pytest.approx(alone, abs=1e-4)
