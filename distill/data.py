"""Training data for the KD trainer: tokenized examples, the epoch's batches, and padded tensors.

Every example is tokenized exactly as the runtime scores it: ``guard_plugin.windows`` turns a
(prompt, response) pair into the model's windows (one for short text, overlapping ones for long
text). The runtime's P(unsafe) is the maximum over windows, so the trainer trains that maximum
(multiple-instance learning): of an example's windows, the one the model finds most unsafe
carries the example's loss. A short example has one window and this is plain fine-tuning.
With category columns (``TrainRecipe.categories``), each category's logit is likewise the
maximum over the example's windows (the trainer's ``example_category_logits``), and each example
carries its category targets: all negative for a safe record, its codes for an unsafe one, none
(masked out of the category loss) for an unsafe record whose categories are unknown
(``distill.categories.category_targets``).

Batches are a pure function of (seed, epoch): class-balanced sampling with replacement (each
record weighted by its source's weight in the recipe), then length bucketing (pools of
``bucket_size`` batches sorted by length, batch order shuffled).
So every process of a data-parallel run computes the same global batches, and a resumed run
picks up exactly where the interrupted one was.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from guard_plugin.windows import Window, WindowBuilder

if TYPE_CHECKING:
    from distill.records import Example
    from distill.settings import TrainRecipe


@dataclass(frozen=True)
class TrainExample:
    """One tokenized training example: its windows, hard label and the teacher's P(unsafe)."""

    windows: tuple[Window, ...]
    label: int
    teacher: float | None
    weight: float = 1.0  # sampling weight (the recipe's weight of the record's source)
    # category targets (0/1 per CATEGORY_CODES); None: unknown (masked) or no category columns
    categories: tuple[float, ...] | None = None

    @property
    def tokens(self) -> int:
        return sum(len(window.input_ids) for window in self.windows)


@dataclass(frozen=True)
class TrainingSet:
    examples: list[TrainExample]
    skipped: int
    summary: dict[str, Any]


def hard_label(record: Example) -> int | None:
    """The record's label, else the teacher's verdict ``p_unsafe > 0.5``, else None."""
    if record.label is not None:
        return int(record.label)
    if record.p_unsafe is not None:
        return int(record.p_unsafe > 0.5)
    return None


def category_vector(record: Example, label: int) -> tuple[float, ...] | None:
    """The record's category targets in ``CATEGORY_CODES`` order, None when unknown."""
    from distill.categories import CATEGORY_CODES, category_targets

    codes = category_targets(record, label)
    if codes is None:
        return None
    return tuple(float(code in codes) for code in CATEGORY_CODES)


def build_training_set(
    records: Sequence[Example], tokenizer: Any, recipe: TrainRecipe, *, categories: bool = False
) -> TrainingSet:
    """Tokenize the usable records (a label or a teacher score) into the runtime's windows;
    with ``categories``, each gets its category targets too."""
    labelled = [(record, hard_label(record)) for record in records]
    usable = [(record, label) for record, label in labelled if label is not None]
    if not usable:
        raise ValueError("no usable training records: each needs a label or a teacher p_unsafe")
    builder = WindowBuilder(
        tokenizer,
        max_length=recipe.max_length,
        stride=recipe.window_stride,
        max_windows=recipe.max_windows,
    )
    items = builder.build([(record.prompt, record.response) for record, _ in usable])
    examples = [
        TrainExample(
            tuple(item.windows),
            label,
            record.p_unsafe,
            recipe.source_weights.get(record.source, 1.0),
            category_vector(record, label) if categories else None,
        )
        for (record, label), item in zip(usable, items, strict=True)
    ]
    digest = hashlib.sha256()
    for (record, _), built in zip(usable, examples, strict=True):
        row: list[Any] = [record.prompt, record.response, record.label, record.p_unsafe]
        if categories:
            row.append(built.categories)
        digest.update(json.dumps(row).encode("utf-8", "surrogatepass") + b"\n")
    summary = {
        "examples": len(examples),
        "unsafe": sum(example.label for example in examples),
        "with_teacher": sum(example.teacher is not None for example in examples),
        "windows": sum(len(example.windows) for example in examples),
        "window_cap_hits": sum(item.cap_hit for item in items),
        "skipped_unlabelled": len(records) - len(usable),
        "sources": dict(sorted(Counter(record.source for record, _ in usable).items())),
        "fingerprint": digest.hexdigest(),
    }
    if categories:
        summary["categories"] = category_summary(examples)
    return TrainingSet(examples, len(records) - len(usable), summary)


def category_summary(examples: Sequence[TrainExample]) -> dict[str, Any]:
    """How many examples the category loss sees: known (safe + unsafe with codes), masked
    (unsafe, unknown), and the positives of each code."""
    from distill.categories import CATEGORY_CODES

    known = [example.categories for example in examples if example.categories is not None]
    return {
        "known": len(known),
        "known_unsafe": sum(any(vector) for vector in known),
        "masked": len(examples) - len(known),
        "positives": {
            code: int(sum(vector[i] for vector in known)) for i, code in enumerate(CATEGORY_CODES)
        },
    }


def epoch_batches(
    examples: Sequence[TrainExample], recipe: TrainRecipe, epoch: int
) -> list[list[int]]:
    """The global batches (example indices) of one epoch; the same on every process."""
    generator = torch.Generator().manual_seed(recipe.seed * 1_000_003 + epoch)
    n = len(examples)
    labels = torch.tensor([example.label for example in examples])
    weights = torch.tensor([example.weight for example in examples], dtype=torch.float64)
    mass = torch.zeros(2, dtype=torch.float64).index_add_(0, labels, weights)
    if recipe.balanced_sampling and bool((mass > 0).all()):
        # each class draws half of the batch; within it, examples in proportion to their weight
        order = torch.multinomial(
            weights / mass[labels], n, replacement=True, generator=generator
        ).tolist()
    elif bool((weights != 1.0).any()):
        order = torch.multinomial(weights, n, replacement=True, generator=generator).tolist()
    else:
        order = torch.randperm(n, generator=generator).tolist()
    size = recipe.batch_size
    pool = size * recipe.bucket_size if recipe.length_bucketing else None
    return length_batches(order, lambda i: examples[i].tokens, size, pool, generator)


def length_batches(
    order: list[int],
    length: Callable[[int], Any],
    size: int,
    pool: int | None,
    generator: torch.Generator,
) -> list[list[int]]:
    """``order`` (indices, already drawn) cut into batches of ``size``, in random order; with a
    ``pool``, the indices are first sorted by ``length`` within consecutive runs of ``pool`` so
    that a batch pads little."""
    if pool:
        order = [
            index
            for start in range(0, len(order), pool)
            for index in sorted(order[start : start + pool], key=length)
        ]
    batches = [order[start : start + size] for start in range(0, len(order), size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def steps_per_epoch(n_examples: int, recipe: TrainRecipe) -> int:
    return math.ceil(math.ceil(n_examples / recipe.batch_size) / recipe.grad_accumulation)


def shard(batch: Sequence[int], rank: int, world: int) -> tuple[list[int], list[float]]:
    """This process's share of a global batch, and a weight per example.

    A process whose share is empty (a tiny last batch) gets one example with weight 0, so that
    it still joins the gradient all-reduce without changing the result.
    """
    part = list(batch[rank::world])
    if not part:
        return [batch[0]], [0.0]
    return part, [1.0] * len(part)


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]  # one row per window, padded to the longest window
    spans: list[tuple[int, int]]  # rows of each example: windows [start, end)
    labels: torch.Tensor  # (examples,) hard labels 0/1
    teacher: torch.Tensor  # (examples,) P(unsafe), 0 where unknown
    has_teacher: torch.Tensor  # (examples,) bool
    weights: torch.Tensor  # (examples,) 1, or 0 for padding examples
    # (examples, categories) 0/1 targets, 0 where unknown; None without category columns
    category_targets: torch.Tensor | None = None
    category_known: torch.Tensor | None = None  # (examples,) bool: the targets count

    def to(self, device: torch.device) -> Batch:
        self.inputs = {key: value.to(device) for key, value in self.inputs.items()}
        for name in ("labels", "teacher", "has_teacher", "weights"):
            setattr(self, name, getattr(self, name).to(device))
        if self.category_targets is not None and self.category_known is not None:
            self.category_targets = self.category_targets.to(device)
            self.category_known = self.category_known.to(device)
        return self


def collate(
    examples: Sequence[TrainExample],
    weights: Sequence[float],
    *,
    pad_token_id: int,
    input_names: Sequence[str],
    categories: int = 0,
) -> Batch:
    """Pad every window of ``examples`` to the longest one (dynamic padding); with
    ``categories`` (the number of category columns), their targets and mask too.

    ``input_names`` is the tokenizer's ``model_input_names``: models without token types (e.g.
    DistilBERT) get no ``token_type_ids``.
    """
    windows = [window for example in examples for window in example.windows]
    longest = max(len(window.input_ids) for window in windows)

    def padded(rows: list[list[int]], pad: int) -> torch.Tensor:
        return torch.tensor([row + [pad] * (longest - len(row)) for row in rows])

    inputs = {
        "input_ids": padded([w.input_ids for w in windows], pad_token_id),
        "attention_mask": padded([[1] * len(w.input_ids) for w in windows], 0),
    }
    if "token_type_ids" in input_names:
        inputs["token_type_ids"] = padded([w.token_type_ids for w in windows], 0)
    spans, start = [], 0
    for example in examples:
        spans.append((start, start + len(example.windows)))
        start += len(example.windows)
    teacher = [example.teacher for example in examples]
    batch = Batch(
        inputs=inputs,
        spans=spans,
        labels=torch.tensor([example.label for example in examples]),
        teacher=torch.tensor([0.0 if t is None else t for t in teacher]),
        has_teacher=torch.tensor([t is not None for t in teacher]),
        weights=torch.tensor(list(weights)),
    )
    if categories:
        unknown = (0.0,) * categories
        batch.category_targets = torch.tensor(
            [list(example.categories or unknown) for example in examples], dtype=torch.float32
        )
        batch.category_known = torch.tensor(
            [example.categories is not None for example in examples]
        )
    return batch
