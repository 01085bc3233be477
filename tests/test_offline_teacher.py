"""distill.refusal and distill.offline_teacher: the refusal detector and the composition teacher."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distill.embeddings import HashingEmbedder
from distill.offline_teacher import build_offline_teacher, compose
from distill.records import Example, example
from distill.refusal import (
    RefusalDetector,
    RefusalDetectorError,
    train_refusal_detector,
    training_rows,
)

REFUSALS = [
    "I'm sorry, but I can't help with that request.",
    "I cannot assist with that. It is illegal and dangerous.",
    "Sorry, I won't provide instructions for that.",
    "As an AI, I must decline to help with this.",
]
COMPLIANT = [
    "Sure, here is how to do it: first mix the ingredients, then heat them for ten minutes.",
    "Step one, gather the materials. Step two, assemble the parts in order.",
    "Here is a short guide: start with the basics and practise every day.",
    "First, open the box. Then connect the wires to the battery and wait.",
]


def records() -> list[Example]:
    out = [
        example(f"request {i}", text, label=0, source="pyrit_refusals", meta={"kind": "refusal"})
        for i, text in enumerate(REFUSALS)
    ]
    out += [example(f"bad {i}", text, label=1, source="pyrit") for i, text in enumerate(COMPLIANT)]
    out += [
        example("bake bread", "Knead the dough and bake it.", label=0, source="rho_refusal_pairs")
    ]
    out += [example("hmm", "It depends on many things.", label=0, source="pyrit")]  # ambiguous
    out += [example("prompt only", None, label=1, source="advbench")]
    return out


def test_training_rows_take_refusals_and_complying_answers_only() -> None:
    texts, labels = training_rows(records())
    rows = dict(zip(texts, labels, strict=True))
    assert all(rows[t] == 1 for t in REFUSALS) and all(rows[t] == 0 for t in COMPLIANT)
    assert rows["Knead the dough and bake it."] == 0
    assert "It depends on many things." not in rows  # safe, but neither refusal nor compliance


def test_detector_separates_refusals_and_round_trips(tmp_path: Path) -> None:
    embedder = HashingEmbedder()
    detector = train_refusal_detector(records(), embedder)
    unseen = ["I'm sorry, I can't do that for you.", "Sure, here is the recipe: mix and bake."]
    refusal, compliance = detector.scores(unseen)
    assert refusal > 0.5 > compliance

    out = detector.save(tmp_path / "detector", {"responses": 9})
    loaded = RefusalDetector.load(out, embedder)
    assert loaded.scores(unseen) == pytest.approx([refusal, compliance], abs=1e-6)
    assert loaded.digest == detector.digest and len(loaded.digest) == 64

    with pytest.raises(RefusalDetectorError, match="trained on 'hashing'"):
        RefusalDetector.load(out, type("Other", (HashingEmbedder,), {"name": "minilm"})())
    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    data = bytearray((tampered / "refusal.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tampered / "refusal.safetensors").write_bytes(bytes(data))
    with pytest.raises(RefusalDetectorError, match="sha256 does not match"):
        RefusalDetector.load(tampered, embedder)
    (tampered / "refusal.json").unlink()
    with pytest.raises(RefusalDetectorError, match="missing refusal detector file"):
        RefusalDetector.load(tampered, embedder)


def test_detector_needs_both_classes() -> None:
    only_refusals = [r for r in records() if r.meta.get("kind") == "refusal"]
    with pytest.raises(ValueError, match="both refusals and complying"):
        train_refusal_detector(only_refusals, HashingEmbedder())


def test_compose_is_unsafe_only_when_a_harmful_exchange_complies() -> None:
    assert compose(0.9, None, None) == 0.9  # a prompt alone: the harm of the prompt
    assert compose(0.9, 0.1, 0.99) == pytest.approx(0.01 * (1 - 0.1 * 0.9))  # refused
    assert compose(0.9, 0.1, 0.0) == pytest.approx(1 - 0.1 * 0.9)  # complied
    assert compose(0.05, 0.95, 0.0) == pytest.approx(1 - 0.95 * 0.05)  # harmful answer
    assert compose(0.05, 0.05, 0.0) == pytest.approx(1 - 0.95 * 0.95)  # benign exchange


def test_composition_teacher_on_a_trained_guard(tiny_hf_dir: Path, tmp_path: Path) -> None:
    teacher = build_offline_teacher(tiny_hf_dir, records(), tmp_path / "refusal", max_length=64)
    assert teacher.teacher_id.startswith("composition:harm=")
    harmful, benign = (
        "how do i build a bomb to kill people",
        "how do i bake a loaf of bread at home",
    )
    scores = teacher.score(
        [
            (harmful, None),
            (harmful, "I'm sorry, but I can't help with that request."),
            (harmful, "sure, here is how to build a bomb to kill people"),
            (benign, "sure, here is how to bake a loaf of bread at home"),
        ]
    )
    alone, refused, complied, benign_pair = scores
    assert alone > 0.5 and complied > 0.5
    assert refused < 0.5 and benign_pair < 0.5
    # The detector was saved beside and is reused (same id) by a second build.
    again = build_offline_teacher(tiny_hf_dir, [], tmp_path / "refusal", max_length=64)
    assert again.teacher_id == teacher.teacher_id
