"""GuardModel: P(unsafe) for (prompt, response) pairs from a guard bundle, on ONNX Runtime or PyTorch.

``score`` is synchronous and batched: the windows of all items are flattened, sorted by length and
run in chunks of at most ``max_batch_size`` windows of similar length (little padding); an item's
P(unsafe) is the maximum over its windows (a pair's mixed with its response read alone when the
manifest says so). Padding is masked, so a score does not depend on the rest of the batch.
Call it from one thread at a time (the micro-batcher's worker thread).

A category-aware bundle (``categories`` in ``guard.json``) has ``2 + K`` outputs: P(unsafe) is the
softmax over columns 0 and 1 only, and category ``i``'s probability is the sigmoid of column
``2 + i``. An item's category probability is its maximum over the item's windows, like P(unsafe);
a model whose output width is not ``2 + K`` is refused at load (:class:`BundleError`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from guard_plugin.bundle import (
    ONNX_FILES,
    VERDICT_COLUMNS,
    BundleError,
    GuardBundle,
    GuardManifest,
)
from guard_plugin.first_stage import FirstStage
from guard_plugin.settings import GuardSettings
from guard_plugin.windows import ItemWindows, Window, WindowBuilder

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


# Windows run in batches of similar length: no window of a forward batch is shorter than the
# batch's width by more than MAX_PADDING of it, or PADDING_SLACK tokens (short windows are cheap).
MAX_PADDING = 0.15
PADDING_SLACK = 8


@dataclass(frozen=True)
class Score:
    """One item's P(unsafe), the windows it was read in, and (category-aware bundles) each
    category's probability by code; empty when the bundle has no categories."""

    p_unsafe: float
    windows: int
    window_cap_hit: bool
    categories: dict[str, float] = field(default_factory=dict)


class Backend(Protocol):
    """Runs one padded batch: int64 arrays of shape (batch, length) -> logits (batch, labels)."""

    name: str

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray: ...


class OnnxBackend:
    """ONNX Runtime session: CPU (or CUDA when available), sequential, graph optimizations on."""

    def __init__(self, model_file: Path, *, threads: int, variant: str) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting: the gateway's event loop shares these cores. Measured (2 cores, 64
        # callers): spinning makes one forward 1.6 ms faster but micro-batched throughput 0.93x
        # of one-at-a-time instead of 1.31x, as two workers' spinning threads fight for cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider",) if p in available]
        providers.append("CPUExecutionProvider")
        try:
            # Add + LayerNormalization stay unfused: ORT's SkipLayerNormalization CPU kernel is
            # ~7x slower (see distill.export.fuse_transformer_ops).
            self.session = ort.InferenceSession(
                str(model_file),
                options,
                providers=providers,
                disabled_optimizers=["SkipLayerNormFusion"],
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(f"{model_file}: not a loadable ONNX model ({exc})") from exc
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}
        self.name = f"onnx-{variant}"

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        feed = {
            name: array.astype(np.int32) if self.input_types[name] == "tensor(int32)" else array
            for name, array in inputs.items()
            if name in self.input_names
        }
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)


class TorchBackend:
    """PyTorch ``AutoModelForSequenceClassification`` from safetensors, in inference mode."""

    name = "torch"

    def __init__(self, model_dir: Path, *, threads: int) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        self.threads = threads
        torch.set_num_threads(threads)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                str(model_dir), use_safetensors=True, trust_remote_code=False
            )
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(
                f"{model_dir / 'model.safetensors'}: cannot load the PyTorch model ({exc})"
            ) from exc
        self.model = model.float().eval()
        self.accepted = set(inspect.signature(self.model.forward).parameters)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        if torch.get_num_threads() != self.threads:  # the setting is per thread with OpenMP
            torch.set_num_threads(self.threads)
        tensors = {k: torch.from_numpy(v) for k, v in inputs.items() if k in self.accepted}
        with torch.inference_mode():
            return self.model(**tensors).logits.float().numpy()


class GuardModel:
    """A loaded guard: tokenizer, window builder and one backend."""

    def __init__(
        self,
        bundle: GuardBundle,
        *,
        backend: str | None = None,
        onnx_variant: str | None = None,
        threads: int = 2,
        window_stride: int | None = None,
        max_windows: int | None = None,
        max_batch_size: int = 32,
        cascade: bool = True,
    ) -> None:
        self.bundle = bundle
        manifest = bundle.manifest
        self.backend_name = backend or manifest.backend
        self.max_batch_size = max_batch_size
        self.tokenizer = load_tokenizer(bundle.path)
        self.uses_token_types = "token_type_ids" in self.tokenizer.model_input_names
        self.pad_id = self.tokenizer.pad_token_id or 0
        try:
            self.windows = WindowBuilder(
                self.tokenizer,
                max_length=manifest.max_length,
                stride=manifest.window_stride if window_stride is None else window_stride,
                max_windows=max_windows or manifest.max_windows,
            )
        except ValueError as exc:
            raise BundleError(f"{bundle.path}: {exc}") from exc
        self.backend: Backend = self._open_backend(self.backend_name, onnx_variant, threads)
        self.category_codes: tuple[str, ...] = tuple(
            head.code for head in manifest.categories or ()
        )
        if manifest.categories is not None:
            self._check_output_width()
        self.first_stage: FirstStage | None = None
        if cascade and manifest.first_stage is not None:
            self.first_stage = FirstStage.load(
                bundle.path, manifest.first_stage, max_chunks=self.windows.max_windows
            )

    @classmethod
    def load(
        cls,
        path_or_bundle: str | os.PathLike[str] | GuardBundle,
        settings: GuardSettings | None = None,
    ) -> GuardModel:
        """Load and verify a bundle (or plain HF dir) with the runtime settings."""
        settings = settings or GuardSettings()
        bundle = (
            path_or_bundle
            if isinstance(path_or_bundle, GuardBundle)
            else GuardBundle.load(path_or_bundle)
        )
        return cls(
            bundle,
            backend=settings.backend,
            onnx_variant=settings.onnx_variant,
            threads=settings.threads,
            window_stride=settings.window_stride,
            max_windows=settings.max_windows,
            max_batch_size=settings.max_batch_size,
            cascade=settings.cascade,
        )

    @property
    def manifest(self) -> GuardManifest:
        return self.bundle.manifest

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def threshold(self) -> float:
        return self.bundle.manifest.threshold

    def score(
        self,
        pairs: Sequence[tuple[str, str | None]],
        *,
        response_weight: float | None = None,
        response_shift: float | None = None,
    ) -> list[Score]:
        """P(unsafe) of each (prompt, response) pair; response None scores the prompt alone.

        A pair is read in its windows (the response with its prompt as context) and, when the
        ``response_weight`` is above 0, also as the response alone; its P(unsafe) is the weighted
        mean of the two readings (all windows run in the same batches), with ``response_shift``
        added to its logit. Both default to the manifest's.

        Category probabilities (category-aware bundles): each is the maximum over the item's
        windows; for a pair read both ways (``0 < response_weight < 1``) it is the larger of the
        two readings, not their mean: a category the response shows when read alone is present
        in the pair, whatever the context dilutes. ``response_shift`` does not apply to them (it
        calibrates P(unsafe) to the one threshold; each category has its own).
        """
        weight = self.manifest.response_weight if response_weight is None else response_weight
        shift = self.manifest.response_shift if response_shift is None else response_shift
        paired = [i for i, (_, response) in enumerate(pairs) if response]
        if weight >= 1.0:  # the response alone: its windows are the item's
            items = self.windows.build([(r, None) if r else (p, r) for p, r in pairs])
        else:
            items = self.windows.build(pairs)
        mixed = 0.0 < weight < 1.0
        alone = self.windows.build([(pairs[i][1] or "", None) for i in paired]) if mixed else []
        readings, category_readings = self._max_over_windows([*items, *alone])
        p_unsafe = readings[: len(items)]
        categories = category_readings[: len(items)]
        windows = [len(entry.windows) for entry in items]
        cap_hit = [entry.cap_hit for entry in items]
        for k, (i, entry, reading) in enumerate(
            zip(paired, alone, readings[len(items) :], strict=False)
        ):
            p_unsafe[i] = (1.0 - weight) * p_unsafe[i] + weight * reading
            windows[i] += len(entry.windows)
            cap_hit[i] = cap_hit[i] or entry.cap_hit
            if self.category_codes:
                categories[i] = np.maximum(categories[i], category_readings[len(items) + k])
        for i in paired if shift else []:
            p_unsafe[i] = float(shift_logit(p_unsafe[i], shift))
        codes = self.category_codes
        return [
            Score(
                p_unsafe=p,
                windows=n,
                window_cap_hit=hit,
                categories={code: float(c) for code, c in zip(codes, cats, strict=True)},
            )
            for p, n, hit, cats in zip(p_unsafe, windows, cap_hit, categories, strict=True)
        ]

    def _max_over_windows(
        self, items: Sequence[ItemWindows]
    ) -> tuple[list[float], list[np.ndarray]]:
        """Each item's maximum P(unsafe) over its windows, and its maximum probability of each
        category (an empty array without categories), run in length-sorted chunks."""
        flat = [(item, window) for item, entry in enumerate(items) for window in entry.windows]
        flat.sort(key=lambda pair: len(pair[1].input_ids))
        best = [0.0] * len(items)
        width = len(self.category_codes)
        best_categories = [np.zeros(width) for _ in items]
        lengths = [len(window.input_ids) for _, window in flat]
        for start, end in length_chunks(lengths, self.max_batch_size):
            chunk = flat[start:end]
            probabilities, categories = self._probabilities([window for _, window in chunk])
            for row, ((item, _), p) in enumerate(zip(chunk, probabilities, strict=True)):
                best[item] = max(best[item], float(p))
                if width:
                    np.maximum(best_categories[item], categories[row], out=best_categories[item])
        return best, best_categories

    def _probabilities(self, windows: list[Window]) -> tuple[np.ndarray, np.ndarray]:
        """P(unsafe) of each window, shape (n,), and its category probabilities, (n, K)."""
        batch = collate(windows, pad_id=self.pad_id, token_types=self.uses_token_types)
        logits = self.backend.run(batch).astype(np.float64)
        expected = self.manifest.output_width
        if expected is None:
            return self._p_unsafe(logits), np.zeros((len(windows), 0))
        if logits.ndim != 2 or logits.shape[1] != expected:
            raise self._width_error(logits.shape[1] if logits.ndim == 2 else logits.shape)
        return self._p_unsafe(logits[:, :VERDICT_COLUMNS]), sigmoid(logits[:, VERDICT_COLUMNS:])

    def _p_unsafe(self, logits: np.ndarray) -> np.ndarray:
        index = self.manifest.unsafe_label_index
        if logits.shape[1] == 1:  # a single-logit head: sigmoid of the unsafe logit
            return 1.0 / (1.0 + np.exp(-logits[:, 0]))
        if index >= logits.shape[1]:
            raise BundleError(
                f"{self.bundle.path / 'guard.json'}: unsafe_label_index {index} but the model "
                f"has {logits.shape[1]} labels"
            )
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp[:, index] / exp.sum(axis=1)

    def _check_output_width(self) -> None:
        """Refuse a category-aware bundle whose model does not have 2 + K outputs (one probe
        forward of a one-word window, so it holds for every backend)."""
        (probe,) = self.windows.build([("hello", None)])
        batch = collate(probe.windows[:1], pad_id=self.pad_id, token_types=self.uses_token_types)
        try:
            logits = np.asarray(self.backend.run(batch))
        except Exception as exc:  # a backend that cannot run at all
            raise BundleError(
                f"{self.bundle.path}: the model cannot score a probe ({exc})"
            ) from exc
        width = logits.shape[1] if logits.ndim == 2 else logits.shape
        if width != self.manifest.output_width:
            raise self._width_error(width)

    def _width_error(self, width: object) -> BundleError:
        heads = self.manifest.categories or []
        return BundleError(
            f"{self.bundle.path / 'guard.json'}: lists {len(heads)} categories "
            f"({', '.join(head.code for head in heads)}), so the model needs "
            f"{VERDICT_COLUMNS + len(heads)} outputs (safe, unsafe, then one per category), "
            f"but it has {width}"
        )

    def _open_backend(self, name: str, onnx_variant: str | None, threads: int) -> Backend:
        root = self.bundle.path
        if name == "torch":
            for needed in ("config.json", "model.safetensors"):
                if not (root / needed).is_file():
                    raise BundleError(
                        f"{root / needed}: missing; the torch backend needs config.json + "
                        "model.safetensors (use the onnx backend for ONNX-only bundles)"
                    )
            return TorchBackend(root, threads=threads)
        if name != "onnx":
            raise BundleError(f"{root}: unknown backend {name!r} (onnx or torch)")
        variant = onnx_variant or self.manifest.onnx_variant or "fp32"
        if variant not in ONNX_FILES:
            raise BundleError(f"{root}: unknown ONNX variant {variant!r} (int8 or fp32)")
        model_file = root / ONNX_FILES[variant]
        if not model_file.is_file():
            raise BundleError(
                f"{model_file}: missing; the onnx backend ({variant}) needs it "
                "(export one with `harmaug distill export`, or use the torch backend)"
            )
        return OnnxBackend(model_file, threads=threads, variant=variant)


def logit(p: float | np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))``, with ``p`` kept off 0 and 1 so that it is finite."""
    clipped = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0 - 1e-12)
    return np.log(clipped / (1.0 - clipped))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow for large negative logits."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def shift_logit(p: float | np.ndarray, shift: float) -> np.ndarray:
    """``sigmoid(logit(p) + shift)``."""
    return 1.0 / (1.0 + np.exp(-(logit(p) + shift)))


def length_chunks(lengths: Sequence[int], max_size: int) -> list[tuple[int, int]]:
    """``[start, end)`` chunks of ascending ``lengths``: at most ``max_size`` each, and each
    member at most ``MAX_PADDING`` of the chunk's width (or ``PADDING_SLACK`` tokens) shorter
    than the longest, so padding wastes little compute (a chunk of 8 random lengths of 10-150
    tokens is ~40% padding)."""
    chunks: list[tuple[int, int]] = []
    start = 0
    for index in range(1, len(lengths) + 1):
        if (
            index == len(lengths)
            or index - start >= max_size
            or lengths[index] - lengths[start] > max(PADDING_SLACK, MAX_PADDING * lengths[index])
        ):
            chunks.append((start, index))
            start = index
    return chunks


def collate(windows: Sequence[Window], *, pad_id: int, token_types: bool) -> dict[str, np.ndarray]:
    """Pad ``windows`` to the longest one: int64 ``input_ids``, ``attention_mask`` (and
    ``token_type_ids``), shape (len(windows), longest)."""
    width = max(len(window.input_ids) for window in windows)
    input_ids = np.full((len(windows), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(windows), width), dtype=np.int64)
    token_type_ids = np.zeros((len(windows), width), dtype=np.int64)
    for row, window in enumerate(windows):
        length = len(window.input_ids)
        input_ids[row, :length] = window.input_ids
        attention_mask[row, :length] = 1
        token_type_ids[row, :length] = window.token_type_ids
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_types:
        batch["token_type_ids"] = token_type_ids
    return batch


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    """The bundle's tokenizer: local files only, never remote code."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(model_dir), use_fast=True, trust_remote_code=False, local_files_only=True
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{model_dir}: cannot load the tokenizer ({exc})") from exc
    return tokenizer


__all__ = [
    "Backend",
    "GuardModel",
    "OnnxBackend",
    "Score",
    "TorchBackend",
    "collate",
    "length_chunks",
    "load_tokenizer",
]
