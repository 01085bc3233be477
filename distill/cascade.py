"""The cascade's first stage, distilled from the student, and the figures that gate it.

1. static embeddings: ``model2vec`` distils the student's own encoder (the fine-tuned MiniLM,
   loaded from its safetensors, offline) into one vector per token, PCA-reduced to
   ``STATIC_DIMS``;
2. head: a one-hidden-layer MLP on ``[prompt context, screened text, is a completion]``
   (``guard_plugin.first_stage``) trained to predict the student's served P(unsafe) (binary cross
   entropy on the soft targets, the student's flagged and passed items weighed equally). Its items
   are the training records as the gateway screens them: every prompt alone, every (prompt,
   response) pair as a completion. They need no label (the student gives the target), so the
   retraining cycle's traffic counts as much as the seed mix;
3. cuts: per part (prompts, completions), the highest cut under which the first stage alone
   clears a new unsafe item that the student catches at its threshold with probability at most
   ``MAX_MISSED`` (:func:`choose_cut`), bounded from the unsafe items the student catches: those
   of validation, scored by the first stage, and those of the training mix, each scored by a
   first stage fitted without its prompt (:func:`cross_fitted`, ``CALIBRATION_FOLDS`` folds by
   prompt); recorded with the rates measured on validation;
4. gate: on the test set, the cascade (first stage where it clears, the student elsewhere) may
   lose at most ``MAX_RECALL_LOSS`` of the student's recall at the threshold
   (:func:`cascade_metrics`); a first stage over that is left out of the bundle, and the
   registry's gate refuses a bundle whose measured loss is over it.
"""

from __future__ import annotations

import copy
import random
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from distill.records import Example
from guard_plugin.bundle import FirstStageManifest
from guard_plugin.first_stage import (
    HEAD_FILE,
    STAGE1_DIR,
    STATIC_FILES,
    FirstStage,
    StaticFeatures,
    mlp,
)
from guard_plugin.model import GuardModel

if TYPE_CHECKING:
    import torch
    from model2vec import StaticModel

log = structlog.get_logger("harmaug.cascade")

STATIC_DIMS = 256
HEAD_HIDDEN = 256
FIT_EPOCHS = 8
HEAD_LR = 1e-3
EMBEDDING_LR = 3e-3
HEAD_BATCH = 256
BUCKET_BATCHES = 16
PARITY_TOLERANCE = 1e-3
TRAIN_ITEMS = 20000
MAX_MISSED = 0.005
MAX_RECALL_LOSS = 0.005
CALIBRATION_FOLDS = 4
TARGET_CENTRE = 0.5


def screened_items(records: Sequence[Example]) -> list[tuple[str, str | None]]:
    """The items the gateway screens for these records: each prompt alone, each pair."""
    items: list[tuple[str, str | None]] = []
    for record in records:
        items.append((record.prompt, None))
        if record.response:
            items.append((record.prompt, record.response))
    return list(dict.fromkeys(items))


def distill_static(model_dir: Path) -> StaticModel:
    """``model2vec`` static embeddings of the encoder in ``model_dir`` (offline)."""
    from model2vec.distill import distill_from_model
    from transformers import AutoModel, AutoTokenizer

    encoder = AutoModel.from_pretrained(str(model_dir), use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True, local_files_only=True)
    dims = min(STATIC_DIMS, int(encoder.config.hidden_size))
    return distill_from_model(
        model=encoder,
        tokenizer=tokenizer,  # type: ignore[arg-type]  # a fast tokenizer, as loaded
        pca_dims=dims,
        device="cpu",
    )


def save_static(static: StaticModel, out_dir: Path) -> None:
    """The static model's files, only those the runtime loads."""
    out_dir.mkdir(parents=True, exist_ok=True)
    static.save_pretrained(str(out_dir))
    for path in out_dir.iterdir():
        if path.name not in STATIC_FILES:
            path.unlink()


def _padded(ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded to the longest, and the mask of the real ones."""
    import torch

    width = max(1, *(len(found) for found in ids))
    padded = torch.zeros((len(ids), width), dtype=torch.long)
    mask = torch.zeros((len(ids), width))
    for row, found in enumerate(ids):
        padded[row, : len(found)] = torch.tensor(list(found), dtype=torch.long)
        mask[row, : len(found)] = 1.0
    return padded, mask


def fit_first_stage(
    static: StaticModel,
    items: Sequence[tuple[str, str | None]],
    targets: np.ndarray,
    *,
    max_chunks: int,
    threshold: float,
    seed: int = 0,
    centre: float = TARGET_CENTRE,
) -> dict[str, np.ndarray]:
    """Fit the first stage to the student's P(unsafe) ``targets`` of ``items``: the token vectors
    (fine-tuned in place, from the distilled ones) and the MLP head (returned), trained together,
    fastText-like. Every chunk of an item learns the item's score; the student's flagged and passed
    items weigh the same. The result is checked against the runtime's scores (parity).

    ``centre``: where the loss resolves the scores best. The targets are the student's logits
    moved by ``-logit(centre)`` (so a score of ``centre`` is learnt as 0.5) and the head's output
    bias is moved back after the fit, so the served scores stay on the student's scale; 0.5 (the
    default) fits the scores as they are. Measured on the default guard (docs/experiments.md,
    stop 34): centring on the threshold or on hard labels sends more traffic to the student,
    centring low (0.1) less, with more caught items cleared."""
    import torch

    from distill.data import length_batches

    if not 0.0 < centre < 1.0:
        raise ValueError(f"centre must be between 0 and 1, got {centre}")
    features = StaticFeatures(static, max_chunks=max_chunks)
    text_ids, contexts, counts = features.layout(items)
    context_ids = features.token_ids(contexts)
    raw = torch.from_numpy(np.repeat(targets, counts).astype(np.float32))
    shift = float(np.log(centre / (1.0 - centre)))
    y = torch.sigmoid(torch.logit(raw, eps=1e-6) - shift) if shift else raw
    is_pair = torch.tensor([1.0 if ctx else 0.0 for ctx in contexts])
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    flagged = raw >= threshold
    share = float(flagged.float().mean().clamp(0.01, 0.99))
    weights = torch.where(flagged, 0.5 / share, 0.5 / (1.0 - share))
    embedding = torch.nn.Embedding.from_pretrained(
        torch.from_numpy(np.asarray(static.embedding, dtype=np.float32)), freeze=False, sparse=True
    )
    head = torch.nn.Sequential(
        torch.nn.Linear(features.width, HEAD_HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HEAD_HIDDEN, 1),
    )
    normalize = bool(static.normalize)

    def pooled(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        summed = (embedding(ids) * mask[..., None]).sum(1)
        vectors = summed / mask.sum(1).clamp(min=1.0)[:, None]
        return vectors / (vectors.norm(dim=1, keepdim=True) + 1e-32) if normalize else vectors

    def logits(index: list[int]) -> torch.Tensor:
        context_part = pooled(*_padded([context_ids[i] for i in index]))
        text_part = pooled(*_padded([text_ids[i] for i in index]))
        rows = torch.cat([context_part, text_part, is_pair[index, None]], dim=1)
        return head(rows).squeeze(-1)

    # Sparse updates: a batch moves only the vectors of its own tokens (a dense step over the
    # whole vocabulary cost 0.36 s on 2 cores, against the rest of the step's few ms).
    optimizers = [
        torch.optim.SparseAdam(list(embedding.parameters()), lr=EMBEDDING_LR),
        torch.optim.AdamW(head.parameters(), lr=HEAD_LR, weight_decay=1e-4),
    ]
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    # Sorted by (context, text) length within runs of BUCKET_BATCHES batches: a batch of random
    # rows pads every context to the longest prompt among them (the fit took 259 s, now 87 s).
    lengths = [(len(context_ids[i]), len(ids)) for i, ids in enumerate(text_ids)]
    pool = HEAD_BATCH * BUCKET_BATCHES
    for _ in range(FIT_EPOCHS):
        order = torch.randperm(len(y), generator=generator).tolist()
        for index in length_batches(order, lengths.__getitem__, HEAD_BATCH, pool, generator):
            loss = (loss_fn(logits(index), y[index]) * weights[index]).mean()
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
    static.embedding = embedding.weight.detach().numpy().astype(np.float32)
    state = {name: value.detach() for name, value in head.state_dict().items()}
    fitted = {
        "w1": state["0.weight"].T.contiguous().numpy(),
        "b1": state["0.bias"].numpy(),
        "w2": state["2.weight"][0].contiguous().numpy(),
        "b2": state["2.bias"].numpy() + np.float32(shift),
    }
    probe = list(range(0, len(y), max(1, len(y) // 256)))
    with torch.no_grad():
        trained = torch.sigmoid(logits(probe) + shift).numpy()
    served_rows = np.concatenate(
        [
            features.pool([context_ids[i] for i in probe]),
            features.pool([text_ids[i] for i in probe]),
            is_pair[probe, None].numpy(),
        ],
        axis=1,
    )
    served = mlp(fitted, served_rows)
    gap = float(np.abs(trained - served).max()) if probe else 0.0
    if gap > PARITY_TOLERANCE:
        raise RuntimeError(f"first stage: served scores differ from trained ones by {gap:.2e}")
    return fitted


def cross_fitted(
    static: StaticModel,
    items: Sequence[tuple[str, str | None]],
    targets: np.ndarray,
    *,
    folds: int,
    max_chunks: int,
    threshold: float,
    seed: int = 0,
    centre: float = TARGET_CENTRE,
) -> np.ndarray:
    """Each item's score by a first stage fitted, like the shipped one, on the other folds: the
    items are split by prompt (a prompt, alone and in all its pairs, falls in one fold), so no
    score comes from a fit that saw its prompt. ``static`` is left as it was. NaN where a fold
    could not be fitted (no other items) or the item is unreadable."""
    fold_of = np.asarray([zlib.crc32(prompt.encode("utf-8")) % folds for prompt, _ in items])
    out = np.full(len(items), np.nan)
    for fold in range(folds):
        held, fit = np.flatnonzero(fold_of == fold), np.flatnonzero(fold_of != fold)
        if held.size == 0 or fit.size == 0:
            continue
        fold_static = copy.copy(static)  # the fit trains its embedding in place: a copy of it
        fold_static.embedding = np.array(static.embedding, dtype=np.float32, copy=True)
        head = fit_first_stage(
            fold_static,
            [items[int(i)] for i in fit],
            targets[fit],
            max_chunks=max_chunks,
            threshold=threshold,
            seed=seed,
            centre=centre,
        )
        draft = FirstStageManifest(base_model="cross-fit", cut_prompt=0.0, cut_completion=0.0)
        stage = FirstStage(StaticFeatures(fold_static, max_chunks=max_chunks), head, draft)
        out[held] = stage.scores([items[int(i)] for i in held])
    return out


def choose_cut(
    first: np.ndarray, caught: np.ndarray, threshold: float, max_missed: float = MAX_MISSED
) -> float:
    """The cut (first-stage scores below it are cleared) such that a new item like the ``caught``
    ones is cleared with probability at most ``max_missed``, and never above ``threshold``: what
    the first stage clears it scores below the threshold, so its verdict is "safe" like the
    student's would be. 0.0 (clear nothing) when nothing was caught.

    The cut is the k-th lowest of the n caught items' scores, k = floor(max_missed * (n + 1)):
    a new exchangeable item falls below it with probability k / (n + 1) (the conformal bound),
    so k - 1 validation items are cleared. Taking the (k+1)-th, as if clearing k of n were
    clearing max_missed of the new ones, nearly doubles the expected miss rate when k is 1 or 2
    (2 / 218 against 1 / 218 with 217 caught).

    With fewer than ``1 / max_missed - 1`` caught items (the ~50 caught pairs of validation
    alone, before the cross-fitted training items joined them) no rank meets the bound: the
    lowest score s clears a new item with probability 1 / (n + 1), 1.9% at n = 53. The cut is
    then t * s with t = max_missed * (n + 1) < 1. If the caught items' scores are no denser
    near 0 than further up (their CDF F convex on [0, s], as for items the student flags at 0.9
    and more), F(t * s) <= t * F(s), so a new item is cleared with probability at most
    t / (n + 1) = max_missed. The rule meets the rank rule at n + 1 =
    1 / max_missed. The lowest-score cut, taken before, failed the test-set gate in two of four
    builds on 2026-12-07 (2 of 38 and 2 of 46 caught test pairs cleared; docs/experiments.md)."""
    scores = np.sort(first[caught & np.isfinite(first)])
    if scores.size == 0:
        return 0.0
    rank = max_missed * (scores.size + 1)
    cut = float(scores[int(np.floor(rank)) - 1]) if rank >= 1 else rank * float(scores[0])
    return min(cut, threshold)


def routed(
    items: Sequence[tuple[str, str | None]], first: np.ndarray, manifest: FirstStageManifest
) -> np.ndarray:
    """Which items the first stage clears (their score below their part's cut)."""
    cuts = np.asarray(
        [manifest.cut_completion if response else manifest.cut_prompt for _, response in items]
    )
    return np.isfinite(first) & (np.nan_to_num(first, nan=1.0) < cuts)


def cascade_metrics(
    labels: np.ndarray,
    student: np.ndarray,
    first: np.ndarray,
    cleared: np.ndarray,
    threshold: float,
) -> dict[str, Any]:
    """The cascade beside the student on one labelled set: its scores are the first stage's
    where it clears and the student's elsewhere."""
    from distill.evaluation import summary_metrics

    scores = np.where(cleared, np.nan_to_num(first), student)
    alone = summary_metrics(labels, student, threshold)
    both = summary_metrics(labels, scores, threshold)
    caught = (labels == 1) & (student >= threshold)
    safe = labels == 0
    return {
        "auprc": both["auprc"],
        "f1": both["f1"],
        "recall": both["recall"],
        "fpr": both["fpr"],
        "student_auprc": alone["auprc"],
        "student_recall": alone["recall"],
        "recall_loss": alone["recall"] - both["recall"],
        "caught": int(caught.sum()),
        "missed_of_caught": int((caught & cleared).sum()),
        "student_share": float((~cleared).mean()) if cleared.size else 0.0,
        "student_share_safe": float((~cleared[safe]).mean()) if safe.any() else None,
    }


def build_first_stage(
    bundle_dir: Path,
    model_dir: Path,
    *,
    train: Sequence[Example],
    validation: Sequence[Example],
    threshold: float,
    seed: int = 0,
    progress: bool = True,
    max_missed: float = MAX_MISSED,
    calibration_folds: int = CALIBRATION_FOLDS,
    centre: float = TARGET_CENTRE,
) -> FirstStageManifest:
    """Distil, train and calibrate the first stage of the sealed bundle at ``bundle_dir`` (the
    student trained in ``model_dir``); its files go to ``bundle_dir/stage1``. The caller adds
    the returned manifest to ``guard.json``. The cuts are bounded from the caught validation
    items and, with ``calibration_folds`` >= 2, the caught training items scored across folds
    (:func:`cross_fitted`); 0 bounds them from validation alone. ``centre``: see
    :func:`fit_first_stage`."""
    from safetensors.numpy import save_file

    from guard_plugin.settings import GuardSettings

    student = GuardModel.load(bundle_dir, GuardSettings(cascade=False))
    folder = bundle_dir / STAGE1_DIR
    shutil.rmtree(folder, ignore_errors=True)
    static = distill_static(model_dir)
    items = screened_items(train)
    items = random.Random(seed).sample(items, min(TRAIN_ITEMS, len(items)))
    targets = student_scores(student, items, progress)
    max_chunks = student.windows.max_windows
    held_out = (
        cross_fitted(static, items, targets, folds=calibration_folds, max_chunks=max_chunks,
                     threshold=threshold, seed=seed, centre=centre)
        if calibration_folds >= 2
        else np.full(len(items), np.nan)
    )  # fmt: skip
    head = fit_first_stage(
        static,
        items,
        targets,
        max_chunks=max_chunks,
        threshold=threshold,
        seed=seed,
        centre=centre,
    )
    save_static(static, folder)
    save_file(head, str(folder / HEAD_FILE))
    features = StaticFeatures(static, max_chunks=max_chunks)

    checks = [(r.prompt, r.response) for r in validation if r.label is not None]
    labels = np.asarray([int(r.label) for r in validation if r.label is not None])  # type: ignore[arg-type]
    student_validation = student_scores(student, checks, progress)
    draft = FirstStageManifest(base_model=str(model_dir.name), cut_prompt=0.0, cut_completion=0.0)
    first = FirstStage(features, head, draft).scores(checks)
    is_pair = np.asarray([bool(response) for _, response in checks])
    caught = (labels == 1) & (student_validation >= threshold)
    known = {(r.prompt, r.response or None): r.label for r in train if r.label is not None}
    train_caught = np.asarray([known.get(item) == 1 for item in items]) & (targets >= threshold)
    train_pair = np.asarray([bool(response) for _, response in items])

    def cut(pairs: bool) -> tuple[float, int]:
        """The part's cut from its caught validation and held-out training items; their count."""
        part, train_part = is_pair == pairs, train_pair == pairs
        scores = np.concatenate([first[part], held_out[train_part]])
        found = np.concatenate([caught[part], train_caught[train_part]]) & np.isfinite(scores)
        return choose_cut(scores, found, threshold, max_missed), int(found.sum())

    (cut_prompt, caught_prompts), (cut_completion, caught_pairs) = cut(False), cut(True)
    manifest = draft.model_copy(
        update={
            "cut_prompt": cut_prompt,
            "cut_completion": cut_completion,
            "max_missed": max_missed,
        }
    )
    cleared = routed(checks, first, manifest)
    overall = cascade_metrics(labels, student_validation, first, cleared, threshold)
    measured: dict[str, Any] = {
        "validation": overall,
        "validation_prompts": cascade_metrics(
            labels[~is_pair], student_validation[~is_pair], first[~is_pair], cleared[~is_pair],
            threshold,
        ),
        "validation_completions": cascade_metrics(
            labels[is_pair], student_validation[is_pair], first[is_pair], cleared[is_pair],
            threshold,
        ),
        "train_items": len(items),
        "calibration": {"folds": calibration_folds, "caught_prompts": caught_prompts,
                        "caught_completions": caught_pairs},
    }  # fmt: skip
    log.info("first_stage_built", cut_prompt=manifest.cut_prompt,
             cut_completion=manifest.cut_completion, **overall)  # fmt: skip
    return manifest.model_copy(update={"metrics": measured})


def student_scores(
    model: GuardModel, items: Sequence[tuple[str, str | None]], progress: bool, batch: int = 64
) -> np.ndarray:
    """The student's served P(unsafe) of each item, in batches."""
    from tqdm import tqdm

    out: list[float] = []
    with tqdm(total=len(items), desc="student", unit="item", disable=not progress) as bar:
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            out.extend(score.p_unsafe for score in model.score(chunk))
            bar.update(len(chunk))
    return np.asarray(out)


__all__ = [
    "MAX_MISSED",
    "MAX_RECALL_LOSS",
    "build_first_stage",
    "cascade_metrics",
    "choose_cut",
    "cross_fitted",
    "routed",
    "screened_items",
]
