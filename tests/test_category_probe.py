"""The category columns refitted as linear probes after training (``distill.category_probe``).

The refit must teach the category rows what the records' codes say, on the trained encoder's
frozen features, and touch nothing else: the encoder and the safe/unsafe rows stay bit for bit
what training gave, so P(unsafe) does not move; unsafe records whose codes are unknown are left
out (never fitted as "no category").
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.category_probe import probe_examples, refit_category_columns
from distill.data import build_training_set, collate
from distill.trainer import example_category_logits, load_student
from tests.test_multilabel_training import (  # noqa: F401  (multilabel_run: a fixture)
    S1,
    S9,
    TOY,
    codes_of,
    multilabel_run,
    toy_records,
)
from tests.tiny_guard import SAFE, UNSAFE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def category_logits(model, tokenizer, examples) -> torch.Tensor:
    model.eval()
    batch = collate(
        examples,
        [1.0] * len(examples),
        pad_token_id=tokenizer.pad_token_id,
        input_names=tokenizer.model_input_names,
    )
    with torch.no_grad():
        return example_category_logits(model(**batch.inputs).logits, batch.spans)


def test_refit_separates_the_categories_and_leaves_the_rest_untouched(
    request: pytest.FixtureRequest,
):
    # a trained multi-label student whose category rows are then scrambled
    result, _, _ = request.getfixturevalue("multilabel_run")
    tokenizer, model, _ = load_student(result.model_dir, TOY)
    torch.manual_seed(0)
    with torch.no_grad():
        model.classifier.weight[2:].normal_(0.0, 0.02)
        model.classifier.bias[2:].zero_()
    examples = build_training_set(toy_records(), tokenizer, TOY, categories=True).examples
    before = {name: value.clone() for name, value in model.state_dict().items()}

    summary = refit_category_columns(
        model,
        examples,
        pad_token_id=tokenizer.pad_token_id,
        input_names=tokenizer.model_input_names,
        seed=0,
    )

    after = model.state_dict()
    for name, value in before.items():
        if not name.startswith("classifier."):
            assert torch.equal(after[name], value), name
    assert torch.equal(after["classifier.weight"][:2], before["classifier.weight"][:2])
    assert torch.equal(after["classifier.bias"][:2], before["classifier.bias"][:2])
    assert not torch.equal(after["classifier.weight"][2:], before["classifier.weight"][2:])
    assert summary["refit"] and summary["positives"]["S9"] == sum(
        codes_of(t) == ["S9"] for t in UNSAFE
    )

    logits = category_logits(model, tokenizer, examples)
    safe, unsafe = logits[: len(SAFE)], logits[len(SAFE) :]
    is_s9 = torch.tensor([codes_of(t) == ["S9"] for t in UNSAFE])
    assert unsafe[is_s9, S9].min() > unsafe[~is_s9, S9].max()
    assert unsafe[~is_s9, S1].min() > max(safe[:, S1].max(), unsafe[is_s9, S1].max())


def test_unsafe_records_with_unknown_codes_are_left_out(tiny_encoder_dir: Path):
    tokenizer, _, _ = load_student(tiny_encoder_dir, TOY)
    examples = build_training_set(
        toy_records(unknown_every=3), tokenizer, TOY, categories=True
    ).examples
    chosen = probe_examples(examples, seed=0)
    assert all(example.categories is not None for example in chosen)
    assert len(chosen) == len(SAFE) + len(UNSAFE) - len(UNSAFE[::3])


def test_a_model_without_category_columns_is_refused(tiny_encoder_dir: Path):
    tokenizer, model, _ = load_student(
        tiny_encoder_dir, TOY.model_copy(update={"categories": False})
    )
    examples = build_training_set(toy_records(), tokenizer, TOY, categories=True).examples
    with pytest.raises(ValueError, match="no category columns"):
        refit_category_columns(
            model,
            examples,
            pad_token_id=tokenizer.pad_token_id,
            input_names=tokenizer.model_input_names,
            seed=0,
        )


def test_the_probe_reads_a_bounded_sample_with_safe_examples_in_it(
    tiny_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    from distill import category_probe

    tokenizer, _, _ = load_student(tiny_encoder_dir, TOY)
    examples = build_training_set(toy_records(), tokenizer, TOY, categories=True).examples
    monkeypatch.setattr(category_probe, "PROBE_EXAMPLES", 20)
    chosen = probe_examples(examples, seed=0)
    unsafe = [example for example in chosen if any(example.categories or ())]
    assert len(chosen) == 20 and len(unsafe) == 16  # 80% at most, the rest safe
