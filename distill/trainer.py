"""The KD trainer: distill the teacher's P(unsafe) into a small sequence classifier.

The recipe (``distill.settings.TrainRecipe``, HarmAug's numbers as named defaults) in one loop
that reads top to bottom: class-balanced, length-bucketed batches; per example
``(1 - kd_weight) * CE(hard label) + kd_weight * KL(teacher || student)`` (plain CE without a
teacher score); AdamW without decay on biases and LayerNorm; linear warm-up then linear decay;
gradient clipping and accumulation; checkpoints and resume; a progress bar and a metrics log.

Multi-label (``recipe.categories``): the classifier has ``2 + 14`` outputs, columns 0/1 safe/unsafe
(the loss above, a softmax over those two) and one logit per Llama Guard 3 category
(``distill.categories``: ``HEAD_OFFSET``, ``CATEGORY_CODES``), trained with
``category_weight x`` the binary cross-entropy summed over the 14 columns, each column's logit the
maximum over the example's windows (as the runtime reads it). The category loss is masked: a safe
record is all-negative, an unsafe record trains on its known codes, and an unsafe record whose
categories are unknown adds nothing (it is never taught "no category"). A 2-label base (a champion
from before the categories, retrained by the loop) is widened: its safe/unsafe rows are kept and
the 14 new rows start as a new head would (the model's own initialiser, seeded by
``recipe.seed``), their biases at ``logit(CATEGORY_PRIOR)`` (a category is rare);
``categories=False`` on a base with category columns drops them. After training, with
``recipe.category_probe``, the category rows are refitted on the trained encoder's frozen features
(``distill.category_probe``; what it fitted on goes to ``<out>/category_probe.json``).

The same code runs in one process or data-parallel under ``accelerate launch``: each process
takes its share of every global batch and the loss is normalised by the global example count,
so N processes follow the one-process optimisation path (up to float summation order).

Run directory::

    <out>/config.json       the recipe, base model, data summary (a resume must match it)
    <out>/metrics.jsonl     one line per ``log_every`` steps: loss, ce, kl (category), lr, ...
    <out>/checkpoints/      latest.json -> step-<n>/ (model, optimizer, per-process RNG state)
    <out>/model/            the final Hugging Face directory (safetensors + tokenizer)

Checkpoints hold no pickle: tensors go to safetensors (the optimizer state flattened to
``<param>.<name>`` keys), everything else to JSON, so resuming never unpickles a file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from distill.categories import HEAD_OFFSET, head_categories, head_id2label
from distill.category_probe import refit_category_columns
from distill.data import (
    Batch,
    build_training_set,
    collate,
    epoch_batches,
    shard,
    steps_per_epoch,
)
from distill.settings import TrainRecipe

if TYPE_CHECKING:
    from distill.records import Example

# Recipe fields that may change between an interrupted run and its resume.
RESUME_FREE_FIELDS = {"checkpoint_every", "log_every"}


class TrainError(RuntimeError):
    """A training run that cannot start or resume; the message says why."""


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    model_dir: Path
    steps: int
    examples: int
    resumed_from: int | None
    final_loss: float
    wall_s: float
    steps_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def train(
    records: Sequence[Example],
    *,
    base_model: Path,
    out_dir: Path,
    recipe: TrainRecipe | None = None,
    resume: bool = True,
    threads: int | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train a student from ``base_model`` (an HF encoder, classifier, or guard bundle).

    ``on_step(step)`` runs after every optimizer step (and after that step's checkpoint).
    """
    from accelerate import Accelerator

    recipe = recipe or TrainRecipe()
    if threads:
        torch.set_num_threads(threads)
    accelerator = Accelerator(mixed_precision=recipe.mixed_precision)
    rank, world = accelerator.process_index, accelerator.num_processes
    torch.manual_seed(recipe.seed)  # the same new-head initialisation on every process
    tokenizer, model, unsafe = load_student(Path(base_model), recipe)
    codes = head_categories(model.config.to_dict())
    n_categories = len(codes) if codes else 0
    data = build_training_set(records, tokenizer, recipe, categories=bool(codes))
    examples = data.examples
    run = RunDir(Path(out_dir))
    config = run_config(recipe, Path(base_model), data.summary, world)
    config["categories"] = list(codes) if codes else None
    optimizer = torch.optim.AdamW(
        param_groups(model, recipe.weight_decay),
        lr=recipe.lr,
        fused=accelerator.device.type in ("cpu", "cuda"),  # one kernel: ~8x faster on CPU
    )
    step = run.restore(config, model, optimizer, accelerator) if resume else None
    resumed_from = step
    if step is None:
        step = 0
        torch.manual_seed(recipe.seed + 1 + rank)  # dropout stream, per process
        if accelerator.is_main_process:
            run.start(config)
    accelerator.wait_for_everyone()
    model, optimizer = accelerator.prepare(model, optimizer)
    per_epoch = steps_per_epoch(len(examples), recipe)
    total = recipe.epochs * per_epoch
    if recipe.max_steps is not None:
        total = min(total, recipe.max_steps)
    warmup = int(recipe.warmup_ratio * total)

    show = progress and accelerator.is_main_process
    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not show)
    started, start_step = time.perf_counter(), step
    tally = torch.zeros(5)  # loss, ce, kl, category, examples since the last metrics line
    batches: list[list[int]] = []
    batches_epoch = -1
    model.train()
    while step < total:
        # This optimizer step's micro-batches: the same global batches on every process.
        epoch, offset = divmod(step, per_epoch)
        if epoch != batches_epoch:
            batches, batches_epoch = epoch_batches(examples, recipe, epoch), epoch
        micro = batches[offset * recipe.grad_accumulation : (offset + 1) * recipe.grad_accumulation]
        step_examples = sum(len(batch) for batch in micro)
        lr = recipe.lr * lr_factor(step, warmup, total)
        for group in optimizer.param_groups:
            group["lr"] = lr

        sums = torch.zeros(4)  # loss, ce, kl, category summed over this process's examples
        for i, global_batch in enumerate(micro):
            indices, weights = shard(global_batch, rank, world)
            batch = collate(
                [examples[j] for j in indices],
                weights,
                pad_token_id=tokenizer.pad_token_id,
                input_names=tokenizer.model_input_names,
                categories=n_categories,
            ).to(accelerator.device)
            last = i == len(micro) - 1
            with nullcontext() if last else accelerator.no_sync(model), accelerator.autocast():
                window_logits = model(**batch.inputs).logits.float()
                logits = example_logits(window_logits, batch.spans, unsafe)
                loss, ce, kl = kd_loss(logits, batch, unsafe, recipe)
                category = torch.zeros((), device=loss.device)
                if n_categories:
                    category = category_loss(
                        example_category_logits(window_logits, batch.spans), batch
                    )
                    loss = loss + recipe.category_weight * category
                # DDP averages gradients over processes: scale so they sum to the global mean.
                accelerator.backward(loss * world / step_examples)
            sums += torch.stack([loss.detach(), ce.detach(), kl.detach(), category.detach()]).cpu()
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        sums = accelerator.reduce(sums.to(accelerator.device), reduction="sum").cpu()
        tally += torch.cat([sums, torch.tensor([float(step_examples)])])
        if step % recipe.log_every == 0 or step == total:
            elapsed = time.perf_counter() - started
            line = metrics_line(step, per_epoch, tally, lr, float(grad_norm), elapsed, start_step)
            if not n_categories:
                line.pop("category")
            if accelerator.is_main_process:
                run.log(line)
            bar.set_postfix(loss=f"{line['loss']:.4f}", lr=f"{lr:.2e}")
            tally = torch.zeros(5)
        bar.update(1)
        if step % recipe.checkpoint_every == 0 or step == total:
            run.save_checkpoint(step, accelerator, model, optimizer)
        if on_step is not None:
            on_step(step)
    bar.close()

    wall = time.perf_counter() - started
    if accelerator.is_main_process:
        if n_categories and recipe.category_probe:
            probe = refit_category_columns(
                accelerator.unwrap_model(model),
                examples,
                pad_token_id=tokenizer.pad_token_id,
                input_names=tokenizer.model_input_names,
                seed=recipe.seed,
            )
            _write_json(run.root / "category_probe.json", probe)
        run.save_model(accelerator.unwrap_model(model), tokenizer)
    accelerator.wait_for_everyone()
    result = TrainResult(
        run_dir=run.root,
        model_dir=run.model_dir,
        steps=step,
        examples=len(examples),
        resumed_from=resumed_from,
        final_loss=run.last_loss(),
        wall_s=round(wall, 3),
        steps_per_s=round((step - start_step) / wall, 4) if wall > 0 else 0.0,
    )
    if accelerator.is_main_process:
        _write_json(run.root / "result.json", result.to_dict())
    return result


def metrics_line(
    step: int,
    per_epoch: int,
    tally: torch.Tensor,
    lr: float,
    grad_norm: float,
    elapsed: float,
    start_step: int,
) -> dict[str, Any]:
    """One metrics.jsonl line: mean loss, CE, KL and category BCE per example since the previous
    line."""
    loss, ce, kl, category = (tally[:4] / tally[4]).tolist()
    return {
        "step": step,
        "epoch": round(step / per_epoch, 4),
        "loss": loss,
        "ce": ce,
        "kl": kl,
        "category": category,
        "lr": lr,
        "grad_norm": grad_norm,
        "examples": int(tally[4]),
        "elapsed_s": round(elapsed, 3),
        "steps_per_s": round((step - start_step) / elapsed, 4) if elapsed > 0 else 0.0,
    }


# -- the loss ----------------------------------------------------------------------------------
def example_logits(
    window_logits: torch.Tensor, spans: Sequence[tuple[int, int]], unsafe: int
) -> torch.Tensor:
    """Per example, the logits of its most unsafe window (the runtime takes the max P(unsafe))."""
    margin = window_logits[:, unsafe] - window_logits[:, 1 - unsafe]
    rows = [start + int(margin[start:end].argmax()) for start, end in spans]
    return window_logits[rows]


def teacher_distribution(batch: Batch, unsafe: int, temperature: float) -> torch.Tensor:
    """The teacher's (safe, unsafe) distribution, re-tempered: sigmoid(logit(p) / T)."""
    p = batch.teacher.clamp(1e-6, 1 - 1e-6)
    if temperature != 1.0:
        p = torch.sigmoid(torch.logit(p) / temperature)
    return torch.stack([1 - p, p], dim=1) if unsafe == 1 else torch.stack([p, 1 - p], dim=1)


def kd_loss(
    logits: torch.Tensor, batch: Batch, unsafe: int, recipe: TrainRecipe
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed (loss, CE, KL) of a batch; KL only where a teacher score exists. Only the
    safe/unsafe columns (0 and 1) count: a multi-label head's category columns are not part of
    this softmax."""
    log_probs = F.log_softmax(logits[:, :HEAD_OFFSET], dim=-1)
    target = torch.where(batch.labels == 1, unsafe, 1 - unsafe)
    ce = F.nll_loss(log_probs, target, reduction="none")
    teacher = teacher_distribution(batch, unsafe, recipe.teacher_temperature)
    kl = F.kl_div(log_probs, teacher, reduction="none").sum(dim=1)
    w = recipe.kd_weight
    per_example = torch.where(batch.has_teacher, (1 - w) * ce + w * kl, ce)
    kl_known = torch.where(batch.has_teacher, kl, torch.zeros_like(kl))
    weights = batch.weights
    return (per_example * weights).sum(), (ce * weights).sum(), (kl_known * weights).sum()


def example_category_logits(
    window_logits: torch.Tensor, spans: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """Per example and category, the highest logit over its windows: (examples, categories)."""
    columns = window_logits[:, HEAD_OFFSET:]
    return torch.stack([columns[start:end].max(dim=0).values for start, end in spans])


def category_loss(category_logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Summed masked category loss of a batch: per example the BCE summed over the categories
    where its categories are known (``batch.category_known``), 0 where they are not. Summed, not
    averaged, over the 14 columns: each category learns as its own binary classifier would
    (averaged, a positive's pull is a fourteenth of the safe/unsafe loss's, and the short
    bootstrap schedule does not teach the rare categories)."""
    if batch.category_targets is None or batch.category_known is None:
        raise ValueError("the batch has no category targets (collate with categories=K)")
    bce = F.binary_cross_entropy_with_logits(
        category_logits, batch.category_targets, reduction="none"
    ).sum(dim=1)
    return (torch.where(batch.category_known, bce, torch.zeros_like(bce)) * batch.weights).sum()


# -- model and optimizer -----------------------------------------------------------------------
def load_student(base: Path, recipe: TrainRecipe) -> tuple[Any, Any, int]:
    """Tokenizer, classifier and unsafe class index from an HF directory or a guard bundle.

    An encoder without a classification head (e.g. all-MiniLM-L6-v2) gets a new head labelled
    safe/unsafe (and the category codes with ``recipe.categories``); an existing classifier (a
    guard, for retraining) keeps its head, widened with new category rows when the recipe asks
    for categories and it has none, cut to safe/unsafe when the recipe turns them off
    (``resized_classifier``). ``recipe.categories`` None follows the base.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from guard_plugin.bundle import MANIFEST_NAME, GuardBundle, unsafe_label_index

    if (base / MANIFEST_NAME).is_file():
        bundle = GuardBundle.load(base)  # verifies every file's hash
        if not bundle.has_torch_weights():
            raise TrainError(f"{base}: the bundle has no safetensors weights to warm-start from")
    if not (base / "config.json").is_file() or not (base / "model.safetensors").is_file():
        raise TrainError(f"{base}: not a Hugging Face model directory with model.safetensors")
    config = AutoConfig.from_pretrained(base, trust_remote_code=False)
    is_classifier = any(
        arch.endswith("ForSequenceClassification") for arch in config.architectures or []
    )
    has_categories = is_classifier and head_categories(config.to_dict()) is not None
    is_guard = is_classifier and (config.num_labels == 2 or has_categories)
    categories = has_categories if recipe.categories is None else recipe.categories
    id2label = head_id2label() if categories else {0: "safe", 1: "unsafe"}
    kwargs: dict[str, Any] = {"trust_remote_code": False, "use_safetensors": True}
    model: Any
    if is_guard and has_categories != categories:
        model = resized_classifier(base, id2label, unsafe_label_index(config.to_dict()), kwargs)
    else:
        if not is_guard:
            kwargs.update(
                id2label=id2label,
                label2id={name: index for index, name in id2label.items()},
            )
        model = AutoModelForSequenceClassification.from_pretrained(base, **kwargs)
    if categories and not has_categories:  # new category rows
        start_categories_rare(model)
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions is not None and recipe.max_length > max_positions:
        raise TrainError(
            f"max_length {recipe.max_length} exceeds the model's {max_positions} positions"
        )
    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=False)
    return tokenizer, model, unsafe_label_index(model.config.to_dict())


# A new category column starts at this probability (its bias logit(CATEGORY_PRIOR)): any one
# category is rare, and from 0.5 the first steps would spend the clipped gradient on pushing 14
# biases down (the toy model then learned nothing at all).
CATEGORY_PRIOR = 0.05


def start_categories_rare(model: Any) -> None:
    """Set the output bias of the category columns to ``logit(CATEGORY_PRIOR)``."""
    labels = int(model.config.num_labels)
    biases = [
        parameter
        for name, parameter in model.named_parameters()
        if name.endswith("bias") and tuple(parameter.shape) == (labels,)
    ]
    if not biases:
        raise TrainError("found no output bias of the classifier to initialise")
    with torch.no_grad():
        biases[-1][HEAD_OFFSET:] = math.log(CATEGORY_PRIOR / (1 - CATEGORY_PRIOR))


def resized_classifier(
    base: Path, id2label: dict[int, str], unsafe: int, kwargs: dict[str, Any]
) -> Any:
    """A guard from ``base`` with the head of ``id2label``: the body as trained, the head's
    safe and unsafe rows copied (as columns 0 and 1, whatever their order in the base), the
    category rows copied where both heads have them; rows the base lacks keep the model's own
    initialisation (seeded by the caller)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        id2label=id2label,
        label2id={name: index for index, name in id2label.items()},
        ignore_mismatched_sizes=True,
        **kwargs,
    )
    before = load_file(base / "model.safetensors")
    order = [1 - unsafe, unsafe]  # safe, unsafe
    resized = []
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            old = before.get(name)
            if old is None or old.shape == parameter.shape:
                continue
            if old.shape[1:] != parameter.shape[1:] or min(old.shape[0], parameter.shape[0]) < 2:
                raise TrainError(f"{base}: cannot resize {name} {tuple(old.shape)} to the head")
            parameter[:HEAD_OFFSET] = old[order].to(parameter.dtype)
            shared = min(old.shape[0], parameter.shape[0])
            parameter[HEAD_OFFSET:shared] = old[HEAD_OFFSET:shared].to(parameter.dtype)
            resized.append(name)
    if not resized:
        raise TrainError(f"{base}: found no classifier rows to resize")
    return model


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices, none on biases and LayerNorm."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_norm = "layernorm" in name.lower() or "layer_norm" in name.lower() or ".norm" in name
        (no_decay if name.endswith("bias") or is_norm else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up from 0 to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def run_config(
    recipe: TrainRecipe, base: Path, data_summary: dict[str, Any], world: int
) -> dict[str, Any]:
    return {
        "recipe": recipe.model_dump(),
        "base_model": str(base.resolve()),
        "data": data_summary,
        "world_size": world,
    }


# -- the run directory -------------------------------------------------------------------------
class RunDir:
    """config.json, metrics.jsonl, checkpoints and the final model of one training run."""

    def __init__(self, root: Path):
        self.root = root
        self.checkpoints = root / "checkpoints"
        self.model_dir = root / "model"

    def start(self, config: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.checkpoints, ignore_errors=True)
        (self.root / "metrics.jsonl").write_text("", encoding="utf-8")
        _write_json(self.root / "config.json", config)

    def log(self, line: dict[str, Any]) -> None:
        with (self.root / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")

    def last_loss(self) -> float:
        lines = (self.root / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        return float(json.loads(lines[-1])["loss"]) if lines else math.nan

    def save_checkpoint(self, step: int, accelerator: Any, model: Any, optimizer: Any) -> None:
        """Write ``step-<n>/`` (every process its RNG state), then point ``latest.json`` at it."""
        from safetensors.torch import save_file, save_model

        target = self.checkpoints / f"step-{step:07d}"
        if accelerator.is_main_process:
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
        accelerator.wait_for_everyone()
        save_file(rng_state(), target / f"rng-{accelerator.process_index}.safetensors")
        if accelerator.is_main_process:
            save_model(accelerator.unwrap_model(model), str(target / "model.safetensors"))
            tensors, rest = flatten_optimizer(optimizer.state_dict())
            save_file(tensors, target / "optimizer.safetensors")
            _write_json(target / "optimizer.json", rest)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _write_json(self.checkpoints / "latest.json", {"step": step, "dir": target.name})
            for old in self.checkpoints.glob("step-*"):
                if old != target:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def restore(
        self, config: dict[str, Any], model: torch.nn.Module, optimizer: Any, accelerator: Any
    ) -> int | None:
        """Load the latest checkpoint into ``model``/``optimizer``; its step, or None if none."""
        from safetensors.torch import load_file, load_model

        pointer = self.checkpoints / "latest.json"
        if not pointer.is_file():
            return None
        saved = json.loads((self.root / "config.json").read_text(encoding="utf-8"))
        check_resumable(saved, config)
        latest = json.loads(pointer.read_text(encoding="utf-8"))
        source = self.checkpoints / latest["dir"]
        load_model(model, str(source / "model.safetensors"))
        rest = json.loads((source / "optimizer.json").read_text(encoding="utf-8"))
        optimizer.load_state_dict(
            unflatten_optimizer(load_file(source / "optimizer.safetensors"), rest)
        )
        rank = accelerator.process_index
        rng = source / f"rng-{rank}.safetensors"
        if rng.is_file():
            set_rng_state(load_file(rng))
        else:  # resumed with more processes than before: a fresh dropout stream here
            torch.manual_seed(config["recipe"]["seed"] + 1 + rank)
        step = int(latest["step"])
        if accelerator.is_main_process:
            self._truncate_metrics(step)
        return step

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after the checkpoint (they are logged again)."""
        path = self.root / "metrics.jsonl"
        if not path.is_file():
            return
        kept = [
            line
            for line in path.read_text("utf-8").splitlines()
            if json.loads(line)["step"] <= step
        ]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def save_model(self, model: Any, tokenizer: Any) -> Path:
        """The final model as a Hugging Face directory, written next to and then swapped in."""
        final, staging = self.model_dir, self.root / ".model.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        return final


def check_resumable(saved: dict[str, Any], config: dict[str, Any]) -> None:
    """Refuse to resume a run with a different recipe, base model or data."""
    differences = [
        f"recipe.{key}: {saved['recipe'].get(key)!r} -> {value!r}"
        for key, value in config["recipe"].items()
        if key not in RESUME_FREE_FIELDS and saved["recipe"].get(key) != value
    ]
    if saved["base_model"] != config["base_model"]:
        differences.append(f"base_model: {saved['base_model']} -> {config['base_model']}")
    if saved["data"]["fingerprint"] != config["data"]["fingerprint"]:
        differences.append("training data changed")
    if differences:
        raise TrainError(
            "cannot resume: the run directory was started with different settings ("
            + "; ".join(differences)
            + "); use a new --out directory or --no-resume"
        )


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state -> (``<param>.<name>`` tensors for safetensors, the rest for JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{param}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        param, name = key.split(".", 1)
        state.setdefault(int(param), {})[name] = value
    for param, values in rest["scalars"].items():
        state.setdefault(int(param), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


def rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


# -- CLI ---------------------------------------------------------------------------------------
RECIPE_FLAGS = {  # flag -> recipe field; defaults come from DistillSettings (HARMAUG_TRAIN__*)
    "--epochs": "epochs",
    "--max-steps": "max_steps",
    "--batch-size": "batch_size",
    "--grad-accumulation": "grad_accumulation",
    "--lr": "lr",
    "--max-length": "max_length",
    "--max-windows": "max_windows",
    "--kd-weight": "kd_weight",
    "--category-weight": "category_weight",
    "--seed": "seed",
    "--checkpoint-every": "checkpoint_every",
}


def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "train",
        help="distill labelled/teacher-scored records into a student model",
        description="Train a student classifier on a JSONL of records (label and/or teacher "
        "p_unsafe). Resumes from the run directory's latest checkpoint. Data-parallel: "
        "`accelerate launch --multi_gpu --num_processes N -m distill.trainer ARGS` (on CPUs "
        "with ACCELERATE_USE_CPU=true: gloo). Recipe defaults: HARMAUG_TRAIN__<FIELD>.",
    )
    parser.add_argument("--data", required=True, type=Path, help="training records (JSONL)")
    parser.add_argument("--base", required=True, type=Path, help="HF model dir or guard bundle")
    parser.add_argument("--out", required=True, type=Path, help="run directory")
    for flag, name in RECIPE_FLAGS.items():
        field = TrainRecipe.model_fields[name]
        kind = float if field.annotation is float else int
        parser.add_argument(flag, type=kind, dest=name, help=field.description)
    parser.add_argument(
        "--categories",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the 14 Llama Guard 3 category columns too (--no-categories: the 2-label "
        "model; default: HARMAUG_TRAIN__CATEGORIES, else follow the base)",
    )
    parser.add_argument(
        "--category-probe",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="refit the category columns as linear probes after training (default: "
        "HARMAUG_TRAIN__CATEGORY_PROBE, else on)",
    )
    parser.add_argument("--no-resume", action="store_true", help="start over, ignoring checkpoints")
    parser.add_argument("--threads", type=int, help="torch intra-op threads per process")
    parser.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from distill.records import read_jsonl
    from distill.settings import DistillSettings

    switches = ["categories", "category_probe"]
    given = {name: getattr(args, name) for name in [*RECIPE_FLAGS.values(), *switches]}
    overrides = {name: value for name, value in given.items() if value is not None}
    try:
        recipe = TrainRecipe.model_validate({**DistillSettings().train.model_dump(), **overrides})
        result = train(
            read_jsonl(args.data),
            base_model=args.base,
            out_dir=args.out,
            recipe=recipe,
            resume=not args.no_resume,
            threads=args.threads,
        )
    except (TrainError, OSError, ValueError) as exc:
        print(f"harmaug distill train: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result.to_dict()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m distill.trainer ARGS`` == ``harmaug distill train ARGS`` (for accelerate -m)."""
    parser = argparse.ArgumentParser(prog="python -m distill.trainer")
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
