"""A decoder student, the larger judge's architecture (``benchmarks/larger_judge.py --bundle``):
a Llama sequence classifier reading ``prompt <|im_end|> response <|im_end|>`` exports to a
bundle that the guard serves as PyTorch does, window by window and in padded batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.export import write_bundle
from guard_plugin.bundle import GuardBundle
from guard_plugin.model import GuardModel
from tests.test_export import PAIRS, bundle_kwargs, max_batch_shift, p_unsafe
from tests.tiny_llm import build_tiny_decoder_classifier


@pytest.fixture(scope="module")
def decoder_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("decoder")
    hf_dir = build_tiny_decoder_classifier(root / "model")
    return write_bundle(hf_dir, root / "bundle", **bundle_kwargs(base_model="tiny-llama")).path


def test_the_exported_decoder_scores_like_torch(decoder_bundle: Path) -> None:
    bundle = GuardBundle.load(decoder_bundle)
    torch_p = p_unsafe(GuardModel(bundle, backend="torch"), PAIRS)
    onnx_p = p_unsafe(GuardModel(bundle, backend="onnx", onnx_variant="fp32"), PAIRS)
    assert max(abs(a - b) for a, b in zip(torch_p, onnx_p, strict=True)) < 1e-4
    assert max(torch_p) - min(torch_p) > 0.01  # the random model's scores differ by input


def test_every_window_ends_on_the_token_the_classifier_reads(decoder_bundle: Path) -> None:
    model = GuardModel.load(decoder_bundle)
    end = model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    items = model.windows.build(PAIRS)
    assert len(items[20].windows) > 1  # the long prompt (PAIRS[20]) is scored in windows
    for item in items:
        for window in item.windows:
            assert window.input_ids[-1] == end
    pair = items[21].windows[0].input_ids  # (safe prompt, unsafe response)
    assert pair.count(end) == 2


def test_a_padded_batch_scores_each_window_as_alone(decoder_bundle: Path) -> None:
    """The classifier reads the last token before the padding: every window of the items scores
    the same inside one padded batch (from 8 tokens to 64) as alone, in ONNX as in PyTorch."""
    bundle = GuardBundle.load(decoder_bundle)
    for model in (GuardModel(bundle, backend="torch"), GuardModel(bundle, onnx_variant="fp32")):
        lengths = {len(w.input_ids) for item in model.windows.build(PAIRS) for w in item.windows}
        assert min(lengths) < 16 and max(lengths) == 64  # the batch really pads
        assert max_batch_shift(model, model.backend) < 1e-4
