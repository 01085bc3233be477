"""The KD trainer on the tiny model: it learns, resumes exactly, and really uses teacher scores."""

from __future__ import annotations

import itertools
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill.data import Batch, TrainExample, build_training_set, collate, epoch_batches, shard
from distill.evaluation import evaluate_bundle
from distill.records import Example, example, write_jsonl
from distill.settings import TrainRecipe
from distill.trainer import (
    TrainError,
    example_logits,
    flatten_optimizer,
    kd_loss,
    lr_factor,
    main,
    param_groups,
    train,
    unflatten_optimizer,
)
from guard_plugin.windows import Window
from tests.tiny_guard import SAFE, UNSAFE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Fast settings for the 2-layer toy model: a high learning rate, short windows.
TOY = TrainRecipe(
    lr=2e-3,
    epochs=12,
    batch_size=16,
    max_length=64,
    window_stride=16,
    checkpoint_every=50,
    log_every=5,
)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[key] - b[key]).abs().max()) for key in a)


def test_trainer_learns_a_separable_toy_set(tiny_encoder_dir, toy_train_records, tmp_path):
    result = train(
        toy_train_records, base_model=tiny_encoder_dir, out_dir=tmp_path / "run", recipe=TOY
    )

    assert result.steps == 12 * 7  # 104 examples, batches of 16
    metrics = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").open()]
    assert metrics[0]["loss"] > 0.6 > 0.2 > metrics[-1]["loss"]
    # The final model is a plain HF directory that the runtime serves as is.
    evaluation = evaluate_bundle(result.model_dir, toy_train_records, threads=1, progress=False)
    assert evaluation.auprc == 1.0 and evaluation.f1 == 1.0
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "safe", "1": "unsafe"}
    assert (result.model_dir / "tokenizer.json").is_file()
    assert not [p for p in result.run_dir.rglob("*") if p.suffix in {".bin", ".pt", ".pkl"}]
    saved = json.loads((tmp_path / "run/config.json").read_text())
    assert saved["recipe"] == TOY.model_dump()
    assert saved["data"]["examples"] == 104 and saved["data"]["unsafe"] == len(UNSAFE)


def test_resume_after_a_crash_reproduces_the_uninterrupted_run(
    tiny_encoder_dir, toy_train_records, tmp_path
):
    # Dropout on, gradient accumulation, teacher scores on part of the data: the resumed run
    # must restore model, optimizer, schedule position and RNG state to match bit for bit.
    records = [
        record.model_copy(update={"p_unsafe": 0.8 if record.label else 0.3}) if i % 2 else record
        for i, record in enumerate(toy_train_records)
    ]
    recipe = TOY.model_copy(update={"epochs": 4, "grad_accumulation": 2, "checkpoint_every": 5})
    full = train(records, base_model=tiny_encoder_dir, out_dir=tmp_path / "full", recipe=recipe)

    class Crash(Exception):
        pass

    def crash_at_step_8(step: int) -> None:
        if step == 8:
            raise Crash

    with pytest.raises(Crash):
        train(
            records,
            base_model=tiny_encoder_dir,
            out_dir=tmp_path / "crashed",
            recipe=recipe,
            on_step=crash_at_step_8,
        )
    resumed = train(
        records, base_model=tiny_encoder_dir, out_dir=tmp_path / "crashed", recipe=recipe
    )

    assert resumed.resumed_from == 5 and resumed.steps == full.steps == 16
    assert max_difference(weights(full.model_dir), weights(resumed.model_dir)) == 0.0

    def losses(run: str) -> list[tuple[int, float]]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [(json.loads(line)["step"], json.loads(line)["loss"]) for line in lines]

    assert losses("full") == losses("crashed")


def test_resume_refuses_a_changed_recipe(tiny_encoder_dir, toy_train_records, tmp_path):
    recipe = TOY.model_copy(update={"max_steps": 2, "checkpoint_every": 1})
    train(toy_train_records, base_model=tiny_encoder_dir, out_dir=tmp_path / "run", recipe=recipe)
    changed = recipe.model_copy(update={"lr": 1e-4})
    with pytest.raises(TrainError, match=r"recipe\.lr"):
        train(
            toy_train_records, base_model=tiny_encoder_dir, out_dir=tmp_path / "run", recipe=changed
        )
    # Starting over is explicit.
    restarted = train(
        toy_train_records,
        base_model=tiny_encoder_dir,
        out_dir=tmp_path / "run",
        recipe=changed,
        resume=False,
    )
    assert restarted.resumed_from is None


def toy_batch(labels: list[int], teacher: list[float | None]) -> Batch:
    window = Window(input_ids=[2, 5, 3], token_type_ids=[0, 0, 0])
    examples = [TrainExample((window,), y, t) for y, t in zip(labels, teacher, strict=True)]
    return collate(examples, [1.0] * len(examples), pad_token_id=0, input_names=["input_ids"])


def test_kd_loss_uses_the_teacher_scores():
    recipe = TrainRecipe()
    labels = [1, 1, 0]

    def loss_and_grad(teacher: list[float | None]) -> tuple[float, torch.Tensor]:
        logits = torch.tensor([[0.2, 0.9], [1.0, -0.5], [0.3, 0.1]], requires_grad=True)
        loss, _, _ = kd_loss(logits, toy_batch(labels, teacher), 1, recipe)
        loss.backward()
        assert logits.grad is not None
        return loss.item(), logits.grad

    confident, grad_confident = loss_and_grad([0.99, 0.99, 0.01])
    hesitant, grad_hesitant = loss_and_grad([0.6, 0.6, 0.4])
    hard_only, _ = loss_and_grad([None, None, None])
    assert confident != pytest.approx(hesitant)
    assert not torch.allclose(grad_confident, grad_hesitant)

    # The recipe: 0.5 * CE(hard label) + 0.5 * KL(teacher || student); plain CE without teacher.
    logits = torch.tensor([[0.2, 0.9], [1.0, -0.5], [0.3, 0.1]])
    log_p = torch.log_softmax(logits, dim=1)
    ce = -log_p[torch.arange(3), torch.tensor(labels)]
    t = torch.tensor([[0.4, 0.6], [0.4, 0.6], [0.6, 0.4]])
    kl = (t * (t.log() - log_p)).sum(dim=1)
    assert hesitant == pytest.approx(float((0.5 * ce + 0.5 * kl).sum()), rel=1e-5)
    assert hard_only == pytest.approx(float(ce.sum()), rel=1e-5)


def test_teacher_temperature_softens_the_target():
    logits = torch.tensor([[0.0, 0.0]])
    _, _, kl_sharp = kd_loss(logits, toy_batch([1], [0.95]), 1, TrainRecipe())
    _, _, kl_soft = kd_loss(logits, toy_batch([1], [0.95]), 1, TrainRecipe(teacher_temperature=4.0))
    assert float(kl_soft) < float(kl_sharp)  # a tempered 0.95 is closer to the student's 0.5


def test_distillation_follows_a_soft_teacher(tiny_encoder_dir, toy_train_records, tmp_path):
    # Teacher says 0.75 / 0.25 for the unsafe / safe texts: with pure KD the student's
    # probabilities settle near the teacher's, not near the hard labels' 1 / 0.
    records = [
        record.model_copy(update={"p_unsafe": 0.75 if record.label else 0.25})
        for record in toy_train_records
    ]
    recipe = TOY.model_copy(update={"kd_weight": 1.0})
    result = train(records, base_model=tiny_encoder_dir, out_dir=tmp_path / "kd", recipe=recipe)
    evaluation = evaluate_bundle(result.model_dir, records, threads=1, progress=False)
    unsafe = evaluation.scores[evaluation.labels == 1]
    safe = evaluation.scores[evaluation.labels == 0]
    assert 0.6 < unsafe.mean() < 0.88 and 0.12 < safe.mean() < 0.4
    assert evaluation.auprc == 1.0


def test_the_most_unsafe_window_carries_the_loss():
    window_logits = torch.tensor([[2.0, -1.0], [0.0, 3.0], [1.0, 1.5], [4.0, 0.0], [0.5, 0.0]])
    chosen = example_logits(window_logits, [(0, 3), (3, 5)], unsafe=1)
    assert torch.equal(chosen, window_logits[[1, 4]])
    assert torch.equal(example_logits(window_logits, [(0, 3)], unsafe=0), window_logits[[0]])


def test_long_examples_are_windowed_like_the_runtime(tiny_hf_dir):
    from transformers import AutoTokenizer

    from guard_plugin.windows import WindowBuilder

    tokenizer = AutoTokenizer.from_pretrained(tiny_hf_dir)
    long_prompt = " ".join(SAFE) + " " + UNSAFE[0]
    records = [Example(prompt=long_prompt, response="sure", label=1, source="long")]
    recipe = TrainRecipe(max_length=32, window_stride=8, max_windows=3)
    (example,) = build_training_set(records, tokenizer, recipe).examples
    builder = WindowBuilder(tokenizer, max_length=32, stride=8, max_windows=3)
    (item,) = builder.build([(long_prompt, "sure")])
    assert list(example.windows) == item.windows and len(item.windows) == 1
    (item,) = builder.build([(long_prompt, None)])
    assert len(item.windows) == 3 and item.cap_hit


def test_epoch_batches_are_balanced_bucketed_and_deterministic():
    lengths = [5 + (i * 37) % 60 for i in range(200)]
    examples = [
        TrainExample((Window([1] * n, [0] * n),), int(i % 10 == 0), None)
        for i, n in enumerate(lengths)
    ]
    recipe = TrainRecipe(batch_size=8, bucket_size=5, seed=3)
    batches = epoch_batches(examples, recipe, epoch=0)
    assert batches == epoch_batches(examples, recipe, epoch=0)
    assert batches != epoch_batches(examples, recipe, epoch=1)
    assert sum(len(batch) for batch in batches) == len(examples)
    drawn = Counter(examples[i].label for batch in batches for i in batch)
    assert 0.4 < drawn[1] / len(examples) < 0.6  # 10% unsafe in the data, about half drawn

    def padding(batches: list[list[int]]) -> int:
        return sum(
            max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches
        )

    plain = TrainRecipe(batch_size=8, seed=3, length_bucketing=False, balanced_sampling=False)
    unbucketed = epoch_batches(examples, plain, epoch=0)
    assert sorted(i for b in unbucketed for i in b) == list(range(200))  # a permutation
    bucketed = epoch_batches(examples, plain.model_copy(update={"length_bucketing": True}), 0)
    assert padding(bucketed) < padding(unbucketed) / 3


def test_source_weights_shift_draws_within_a_class_only(tiny_hf_dir):
    """A safe source of weight 4 is drawn 4x as often as its share of the safe class; the
    classes stay balanced; weights come from the recipe by record source."""
    from transformers import AutoTokenizer

    records = [
        *(example(f"everyday question {i}", label=0, source="easy") for i in range(90)),
        *(example(f"edgy question {i}", label=0, source="edgy") for i in range(10)),
        *(example(f"harmful request {i}", label=1, source="harm") for i in range(100)),
    ]
    recipe = TrainRecipe(batch_size=8, seed=1, source_weights={"edgy": 4.0})
    built = build_training_set(records, AutoTokenizer.from_pretrained(tiny_hf_dir), recipe)
    assert [e.weight for e in built.examples] == [1.0] * 90 + [4.0] * 10 + [1.0] * 100
    drawn = Counter()
    for epoch in range(30):
        for batch in epoch_batches(built.examples, recipe, epoch):
            drawn.update(records[i].source for i in batch)
    safe = drawn["easy"] + drawn["edgy"]
    assert 0.45 < safe / (safe + drawn["harm"]) < 0.55
    assert 0.26 < drawn["edgy"] / safe < 0.36  # 40 of 130 weighted: 0.31 (unweighted: 0.10)


def test_shards_cover_a_global_batch_once():
    batch = [7, 3, 9, 4, 1]
    parts = [shard(batch, rank, 2) for rank in range(2)]
    assert sorted(i for part, _ in parts for i in part) == sorted(batch)
    assert shard([7], 1, 2) == ([7], [0.0])  # an empty share still joins, with weight 0


def test_no_weight_decay_on_bias_and_layernorm(tiny_hf_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_hf_dir)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(
        names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in no_decay["params"]
    )
    assert any("LayerNorm.weight" in names[id(p)] for p in no_decay["params"])
    assert all("LayerNorm" not in names[id(p)] for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)


def test_learning_rate_warms_up_then_decays_linearly():
    factors = [lr_factor(step, warmup=4, total=20) for step in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and factors[-1] == pytest.approx(1 / 16)
    assert all(a > b for a, b in itertools.pairwise(factors[4:]))


def test_optimizer_state_round_trips_through_safetensors_and_json():
    parameter = torch.nn.Parameter(torch.randn(3))
    optimizer = torch.optim.AdamW([parameter], lr=0.1)
    parameter.sum().backward()
    optimizer.step()
    tensors, rest = flatten_optimizer(optimizer.state_dict())
    json.dumps(rest)  # the non-tensor part is plain JSON
    restored = torch.optim.AdamW([torch.nn.Parameter(parameter.detach().clone())], lr=0.1)
    restored.load_state_dict(unflatten_optimizer(tensors, json.loads(json.dumps(rest))))
    for key, value in optimizer.state_dict()["state"][0].items():
        assert torch.equal(restored.state_dict()["state"][0][key], value)


def test_warm_start_from_a_guard_bundle_keeps_its_head(tiny_torch_bundle, tmp_path):
    records = [Example(prompt=t, label=1, source="x") for t in UNSAFE[:4]]
    recipe = TrainRecipe(lr=1e-12, max_steps=1, batch_size=4, max_length=64)
    result = train(records, base_model=tiny_torch_bundle, out_dir=tmp_path / "re", recipe=recipe)
    assert max_difference(weights(tiny_torch_bundle), weights(result.model_dir)) < 1e-6


def test_tampered_bundle_is_refused_as_a_base(tiny_torch_bundle, tmp_path):
    from guard_plugin.bundle import BundleError

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_torch_bundle, copy)
    with (copy / "tokenizer.json").open("a", encoding="utf-8") as handle:
        handle.write(" ")
    records = [Example(prompt="x", label=1, source="x")]
    with pytest.raises(BundleError, match="sha256 mismatch"):
        train(records, base_model=copy, out_dir=tmp_path / "run", recipe=TrainRecipe(max_steps=1))


def test_records_without_label_or_teacher_are_skipped(tiny_hf_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_hf_dir)
    records = [
        Example(prompt="a", label=1, source="s"),
        Example(prompt="b", p_unsafe=0.7, source="s"),  # hard label from the teacher: 1
        Example(prompt="c", source="s"),
    ]
    data = build_training_set(records, tokenizer, TrainRecipe(max_length=32))
    assert [e.label for e in data.examples] == [1, 1] and data.skipped == 1
    assert data.summary["with_teacher"] == 1
    with pytest.raises(ValueError, match="no usable training records"):
        build_training_set(records[2:], tokenizer, TrainRecipe(max_length=32))


def test_cli_trains_from_a_jsonl_file(tiny_encoder_dir, toy_train_records, tmp_path, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", toy_train_records)
    args = ["--data", str(data), "--base", str(tiny_encoder_dir), "--out", str(tmp_path / "run")]
    flags = ["--max-steps", "3", "--max-length", "64", "--lr", "0.001", "--kd-weight", "0"]
    assert main([*args, *flags, "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and Path(summary["model_dir"]).is_dir()
    recipe = json.loads((tmp_path / "run/config.json").read_text())["recipe"]
    assert (recipe["max_length"], recipe["lr"], recipe["kd_weight"]) == (64, 0.001, 0.0)

    assert main([*args, "--batch-size", "0"]) == 2
    assert "batch_size" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "missing.jsonl"), *args[2:]]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
