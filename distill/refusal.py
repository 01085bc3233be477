"""A refusal detector: P(a response refuses the request), for the offline composition teacher.

Logistic regression on the all-MiniLM-L6-v2 sentence embedding of the response's opening
(``HEAD_CHARS``) plus one feature, whether the refusal pattern of ``distill.harmaug`` matches.
The pattern alone misses refusals without stock phrases ("Creating a fake ID is illegal and
unethical..."); the embedding generalises from the labelled ones.

Training data, from labelled (request, response) records of the train split:
refusals = safe pairs that are human-labelled refusals or match the pattern;
compliance = unsafe pairs (the model did what was asked) and safe pairs from the paired
benign/harmful Q&A set (helpful answers). Classes are weighted to count equally.

Saved as ``refusal.safetensors`` (weight, bias) with ``refusal.json`` (feature layout, the
weights' sha256, training counts); loading verifies the hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.embeddings import Embedder
from distill.harmaug import is_refusal
from distill.records import Example, atomic_writer

HEAD_CHARS = 600
WEIGHTS = "refusal.safetensors"
META = "refusal.json"
COMPLYING_SAFE_SOURCES = frozenset({"rho_refusal_pairs"})


class RefusalDetectorError(RuntimeError):
    """A missing or tampered detector; the message names the file."""


def training_rows(records: Sequence[Example]) -> tuple[list[str], list[int]]:
    """(responses, 1 = refusal) from labelled pair records, one row per distinct response."""
    rows: dict[str, int] = {}
    for record in records:
        if record.response is None or record.label is None:
            continue
        response = record.response.strip()
        if record.label == 1:
            rows.setdefault(response, 0)
        elif record.meta.get("kind") == "refusal" or is_refusal(response[:300]):
            rows[response] = 1
        elif record.source in COMPLYING_SAFE_SOURCES:
            rows.setdefault(response, 0)
    texts = sorted(rows)
    return texts, [rows[t] for t in texts]


def features(embedder: Embedder, responses: Sequence[str]) -> np.ndarray:
    heads = [r[:HEAD_CHARS] for r in responses]
    flags = np.array([[float(is_refusal(r[:300]))] for r in responses], dtype=np.float32)
    return np.hstack([embedder.embed(heads), flags.reshape(len(responses), 1)])


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, steps: int = 500
) -> tuple[np.ndarray, float]:
    """Class-balanced L2 logistic regression by full-batch L-BFGS (torch); (weight, bias)."""
    import torch

    if len(set(y.tolist())) < 2:
        raise ValueError("refusal detector: need both refusals and complying answers")
    xt = torch.tensor(x, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64)
    positives = float(yt.sum())
    sample_weight = torch.where(yt == 1, 0.5 / positives, 0.5 / (len(yt) - positives))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = xt @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, yt, weight=sample_weight, reduction="sum"
        )
        loss = loss + l2 * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach().numpy().astype(np.float32), float(b.detach()[0])


@dataclass
class RefusalDetector:
    weight: np.ndarray
    bias: float
    embedder: Embedder
    digest: str = ""

    def scores(self, responses: Sequence[str]) -> list[float]:
        if not responses:
            return []
        logits = features(self.embedder, responses) @ self.weight + self.bias
        return (1.0 / (1.0 + np.exp(-logits))).astype(float).tolist()

    def save(self, out: Path, info: dict[str, Any]) -> Path:
        from safetensors.numpy import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file(
            {"weight": self.weight, "bias": np.array([self.bias], dtype=np.float32)},
            str(out / WEIGHTS),
        )
        self.digest = hashlib.sha256((out / WEIGHTS).read_bytes()).hexdigest()
        meta = {
            "format": 1,
            "embedder": self.embedder.name,
            "head_chars": HEAD_CHARS,
            "features": "embedding(response[:head_chars]) + [refusal pattern matches]",
            "sha256": self.digest,
            **info,
        }
        with atomic_writer(out / META) as handle:
            json.dump(meta, handle, indent=2)
        return out

    @classmethod
    def load(cls, path: Path, embedder: Embedder) -> RefusalDetector:
        from safetensors.numpy import load_file

        weights, meta_file = path / WEIGHTS, path / META
        for file in (weights, meta_file):
            if not file.is_file():
                raise RefusalDetectorError(f"{file}: missing refusal detector file")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if digest != meta.get("sha256"):
            raise RefusalDetectorError(f"{weights}: sha256 does not match {META}; refusing")
        if meta.get("embedder") != embedder.name:
            raise RefusalDetectorError(
                f"{path}: trained on {meta.get('embedder')!r} embeddings, got {embedder.name!r}"
            )
        tensors = load_file(str(weights))
        return cls(tensors["weight"], float(tensors["bias"][0]), embedder, digest)


def train_refusal_detector(records: Sequence[Example], embedder: Embedder) -> RefusalDetector:
    texts, labels = training_rows(records)
    weight, bias = fit_logistic(features(embedder, texts), np.array(labels, dtype=np.float32))
    return RefusalDetector(weight, bias, embedder)
