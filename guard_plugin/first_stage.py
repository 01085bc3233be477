"""The first stage of the cascade: a scorer ~50x cheaper than the student that clears easy traffic.

Static token embeddings (``model2vec``, distilled from the student's encoder) are mean-pooled per
text and read by a small MLP head trained to predict the student's own P(unsafe) on the training
mix (``distill.cascade``). An item whose first-stage score is below its part's clear-safe cut is
decided safe without the student; every other item goes to the student, whose verdict is final.

Files, all under ``stage1/`` of the bundle and hashed in ``guard.json`` like the rest:
``model.safetensors`` + ``tokenizer.json`` + ``config.json`` (the static model, as model2vec saves
it) and ``head.safetensors`` (the MLP). Nothing is unpickled.

Features of an item: ``[prompt context, screened text, is a completion]``. A prompt is screened
text with no context; a completion is screened with its prompt as context (the context is cut to
``CONTEXT_CHARS`` from each end, it only conditions the score). The screened text is read whole,
in chunks of ``CHUNK_WORDS`` words, and the highest chunk decides. Text that would need more chunks
than the student has windows (or more than ``MAX_CHARS`` characters) is never cleared by the first
stage: it goes to the student, which reads it in windows. So the first stage's work per item is
bounded, and it runs inline on the caller's thread (about 0.2 ms for a 64-token prompt on one
core: ``benchmarks/guard_latency.py``), while the micro-batcher carries the student's forwards.
The token vectors are mean-pooled here rather than by ``StaticModel.encode``, so that the training
(``distill.cascade``) pools exactly the ids the runtime does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from guard_plugin.bundle import BundleError

if TYPE_CHECKING:
    from model2vec import StaticModel

    from guard_plugin.bundle import FirstStageManifest

STAGE1_DIR = "stage1"
HEAD_FILE = "head.safetensors"
STATIC_FILES = ("model.safetensors", "tokenizer.json", "config.json")
CHUNK_WORDS = 96
CHUNK_OVERLAP = 24
CONTEXT_CHARS = 2000
MAX_CHARS = 12 * CHUNK_WORDS * 8  # generous for 8 chunks of 96 words (English averages ~6)
HEAD_TENSORS = ("w1", "b1", "w2", "b2")
WORD_CACHE_SIZE = 65536
GEMV_ROWS = 4
# BertNormalizer(clean_text) deletes control characters (\t \n \r become spaces); on ASCII text
# BertPreTokenizer then keeps runs of letters and digits and isolates each punctuation mark.
_ASCII_CONTROLS = dict.fromkeys([*range(9), 11, 12, *range(14, 32), 127])
_ASCII_WORDS = re.compile(r"[a-z0-9]+|[!-/:-@\[-`{-~]")


class WordPieceWords:
    """Token ids of ASCII text, word by word through a cache: what a BERT (WordPiece) tokenizer
    gives, at a fraction of its cost per call (the first stage runs on the event loop, and one
    tokenizer call was half of its time).

    Exact for tokenizers built as BertNormalizer (lower case, clean text) + BertPreTokenizer +
    WordPiece, which is what model2vec keeps from a BERT base: on ASCII text normalising is
    lower-casing and deleting control characters, pre-tokenising is splitting into letter/digit
    runs and single punctuation marks, and WordPiece reads each such word on its own. Anything
    else (other tokenizers, non-ASCII text, text holding a special token such as ``[SEP]``) goes
    through the tokenizer itself. ``tests/test_cascade.py`` checks the parity.
    """

    def __init__(self, tokenizer: Any, max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.specials = [token.content for token in tokenizer.get_added_tokens_decoder().values()]
        self._words: dict[str, list[int]] = {}

    @classmethod
    def fits(cls, tokenizer: Any) -> bool:
        """Whether ``tokenizer`` is a WordPiece tokenizer this class reproduces."""
        config = json.loads(tokenizer.to_str())
        normalizer = config.get("normalizer") or {}
        return (
            normalizer.get("type") == "BertNormalizer"
            and normalizer.get("lowercase") is True
            and normalizer.get("clean_text") is True
            and (config.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
            and (config.get("model") or {}).get("type") == "WordPiece"
        )

    def ids(self, text: str) -> list[int] | None:
        """The ids of ``text`` (special tokens kept, cut at ``max_tokens`` as the tokenizer
        truncates), or None where only the tokenizer can say."""
        if not text.isascii() or any(special in text for special in self.specials):
            return None
        words = self._words
        out: list[int] = []
        for word in _ASCII_WORDS.findall(text.translate(_ASCII_CONTROLS).lower()):
            found = words.get(word)
            if found is None:
                found = self.tokenizer.encode(word, add_special_tokens=False).ids
                if len(words) < WORD_CACHE_SIZE:
                    words[word] = found
            out.extend(found)
        return out[: self.max_tokens]


def chunks(text: str, max_chunks: int) -> list[str] | None:
    """``text`` in overlapping chunks of ``CHUNK_WORDS`` words; None when it needs more than
    ``max_chunks`` (or is over ``MAX_CHARS``): such text is not the first stage's to clear."""
    if len(text) > MAX_CHARS:
        return None
    words = text.split()
    if len(words) <= CHUNK_WORDS:
        return [text]
    step = CHUNK_WORDS - CHUNK_OVERLAP
    starts = range(0, len(words) - CHUNK_OVERLAP, step)
    if len(starts) > max_chunks:
        return None
    return [" ".join(words[start : start + CHUNK_WORDS]) for start in starts]


def context(prompt: str) -> str:
    if len(prompt) <= 2 * CONTEXT_CHARS:
        return prompt
    return f"{prompt[:CONTEXT_CHARS]} ... {prompt[-CONTEXT_CHARS:]}"


class StaticFeatures:
    """Feature rows of items from a model2vec ``StaticModel``: its tokenizer and token vectors,
    mean-pooled here (as model2vec does) so that training and serving pool the same ids."""

    def __init__(self, static: StaticModel, *, max_chunks: int) -> None:
        self.static = static
        self.max_chunks = max_chunks
        self.dim = int(static.dim)
        self.width = 2 * self.dim + 1
        self.max_tokens = int(static.max_length or 512)  # the tokenizer truncates there
        self.unk = static.unk_token_id  # model2vec drops it from every text
        fits = WordPieceWords.fits(static.tokenizer)
        self.words = WordPieceWords(static.tokenizer, self.max_tokens) if fits else None

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """``StaticModel.tokenize`` of ``texts``, the ASCII ones through the word cache."""
        found = [self.words.ids(text) for text in texts] if self.words else [None] * len(texts)
        rest = [text for text, ids in zip(texts, found, strict=True) if ids is None]
        if rest:
            tokenized = iter(self.static.tokenize(rest))
            return [next(tokenized) if ids is None else self._known(ids) for ids in found]
        return [self._known(ids) for ids in found if ids is not None]

    def _known(self, ids: list[int]) -> list[int]:
        return ids if self.unk is None or self.unk not in ids else [i for i in ids if i != self.unk]

    def pool(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Mean token vector of each id list (zeros for none), L2-normalised if the model is."""
        vectors = np.asarray(self.static.embedding)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for row, found in enumerate(ids):
            if len(found):
                out[row] = vectors[list(found)].mean(axis=0)
        if self.static.normalize:
            out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-32
        return out

    def layout(
        self, items: Sequence[tuple[str, str | None]]
    ) -> tuple[list[list[int]], list[str], list[int]]:
        """The chunks an item is read in: per row the screened chunk's token ids and its
        context ("" for a prompt), and per item how many rows are its own (0: not readable by
        the first stage, also when a chunk would be cut at the tokenizer's limit)."""
        counts = [0] * len(items)
        owners: list[int] = []
        screened: list[str] = []
        contexts: list[str] = []
        for index, (prompt, response) in enumerate(items):
            text, ctx = (response, context(prompt)) if response else (prompt, "")
            for part in chunks(text, self.max_chunks) or []:
                owners.append(index)
                screened.append(part)
                contexts.append(ctx)
        ids = self.token_ids(screened)
        cut = {
            owner for owner, found in zip(owners, ids, strict=True) if len(found) >= self.max_tokens
        }
        kept = [row for row, owner in enumerate(owners) if owner not in cut]
        for row in kept:
            counts[owners[row]] += 1
        return [ids[row] for row in kept], [contexts[row] for row in kept], counts

    def rows(self, items: Sequence[tuple[str, str | None]]) -> tuple[np.ndarray, list[int]]:
        """Feature rows ``[context, screened chunk, is a completion]`` of every readable chunk,
        and per item how many rows are its own."""
        ids, contexts, counts = self.layout(items)
        distinct = sorted(set(contexts) - {""})  # a chat's prompt is embedded once per call
        vectors = dict(zip(distinct, self.pool(self.token_ids(distinct)), strict=True))
        zero = np.zeros(self.dim, dtype=np.float32)
        rows = np.zeros((len(ids), self.width), dtype=np.float32)
        if ids:
            rows[:, : self.dim] = np.stack([vectors.get(ctx, zero) for ctx in contexts])
            rows[:, self.dim : 2 * self.dim] = self.pool(ids)
            rows[:, -1] = [1.0 if ctx else 0.0 for ctx in contexts]
        return rows, counts


def mlp(head: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """The head's P(unsafe) of feature rows: ``sigmoid(relu(rows w1 + b1) w2 + b2)``.

    A few rows are multiplied one by one: OpenBLAS's matrix-matrix product of 2 rows by the
    513 x 256 weights takes 28 us against 5 us per row (2-core EPYC)."""
    w1 = head["w1"]
    product = rows @ w1 if len(rows) > GEMV_ROWS else np.stack([row @ w1 for row in rows])
    hidden = np.maximum(product + head["b1"], 0.0)
    logits = (hidden @ head["w2"] + head["b2"]).astype(np.float64)
    return 1.0 / (1.0 + np.exp(-logits))


class FirstStage:
    """A loaded first stage: ``scores(items)`` and the routing rule ``clears(items)``."""

    def __init__(
        self, features: StaticFeatures, head: dict[str, np.ndarray], manifest: FirstStageManifest
    ) -> None:
        self.features = features
        self.manifest = manifest
        self.weights = {name: head[name].astype(np.float32) for name in HEAD_TENSORS}
        hidden = self.weights["b1"].shape[0]
        w1, w2 = self.weights["w1"], self.weights["w2"]
        if w1.shape != (features.width, hidden) or w2.shape != (hidden,):
            raise BundleError(
                f"first-stage head shapes {w1.shape}, {w2.shape} do not fit "
                f"{features.dim}-dimensional embeddings"
            )

    @classmethod
    def load(cls, root: Path, manifest: FirstStageManifest, *, max_chunks: int) -> FirstStage:
        """The first stage of the bundle at ``root`` (its files hash-checked by the bundle)."""
        from model2vec import StaticModel
        from safetensors.numpy import load_file

        folder = root / manifest.path
        for name in (*STATIC_FILES, HEAD_FILE):
            if not (folder / name).is_file():
                raise BundleError(f"{folder / name}: missing; the bundle's first stage needs it")
        try:
            static = StaticModel.from_pretrained(folder)
            head = load_file(str(folder / HEAD_FILE))
        except Exception as exc:  # safetensors and model2vec raise their own types
            raise BundleError(f"{folder}: cannot load the first stage ({exc})") from exc
        missing = [name for name in HEAD_TENSORS if name not in head]
        if missing:
            raise BundleError(f"{folder / HEAD_FILE}: no tensor {', '.join(missing)}")
        try:
            return cls(StaticFeatures(static, max_chunks=max_chunks), head, manifest)
        except BundleError as exc:
            raise BundleError(f"{folder / HEAD_FILE}: {exc}") from None

    def scores(self, items: Sequence[tuple[str, str | None]]) -> np.ndarray:
        """Each item's first-stage score (its highest chunk); NaN where the item is unreadable."""
        rows, counts = self.features.rows(items)
        chunk_scores = mlp(self.weights, rows) if len(rows) else np.zeros(0)
        out = np.full(len(items), np.nan)
        start = 0
        for index, count in enumerate(counts):
            if count:
                out[index] = float(chunk_scores[start : start + count].max())
            start += count
        return out

    def cut(self, response: str | None) -> float:
        return self.manifest.cut_completion if response else self.manifest.cut_prompt

    def clears(self, items: Sequence[tuple[str, str | None]]) -> list[float | None]:
        """Per item: its first-stage score when that clears it (below its part's cut), else None
        (the student decides)."""
        scores = self.scores(items)
        return [
            float(score) if np.isfinite(score) and score < self.cut(response) else None
            for score, (_, response) in zip(scores, items, strict=True)
        ]


__all__ = [
    "HEAD_FILE",
    "STAGE1_DIR",
    "STATIC_FILES",
    "FirstStage",
    "StaticFeatures",
    "chunks",
    "mlp",
]
