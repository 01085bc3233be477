"""The guard bundle: a directory with ``guard.json``, tokenizer files and model weights.

Two layouts load:

* a harmaug bundle: ``guard.json`` (the :class:`GuardManifest`) lists the sha256 of every file;
  a missing, extra-but-listed or tampered file is refused before anything is parsed;
* a plain Hugging Face sequence-classification directory (``config.json`` +
  ``model.safetensors`` + tokenizer), e.g. the published HarmAug-Guard. Its unsafe label index
  is read from ``config.json`` (``label2id``/``id2label``) and defaults to 1.

Only safetensors and ONNX weights are ever loaded: no pickle, no ``trust_remote_code``.

A category-aware bundle lists its category heads in ``guard.json`` (``categories``: Llama Guard 3
codes S1..S14, each with its name and threshold). Its model then has ``2 + K`` outputs: columns 0
and 1 are safe / unsafe as in any bundle (P(unsafe) is the softmax over those two), column
``2 + i`` is the logit of category ``i`` (its probability is the sigmoid). Without ``categories``
(plain Hugging Face directories, earlier bundles) a guard gives P(unsafe) only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from adapters.teachers.llama_guard_prompt import LLAMA_GUARD_3_CATEGORIES

# The Llama Guard 3 taxonomy, code -> name ("S1" -> "Violent Crimes"), in taxonomy order.
CATEGORY_NAMES: dict[str, str] = {code: name.rstrip(".") for code, name in LLAMA_GUARD_3_CATEGORIES}
CATEGORY_CODES: tuple[str, ...] = tuple(CATEGORY_NAMES)
# Columns of a category-aware model before its category logits: safe, unsafe.
VERDICT_COLUMNS = 2

MANIFEST_NAME = "guard.json"
FORMAT_VERSION = 1
ONNX_FILES = {"int8": "model.int8.onnx", "fp32": "model.onnx"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class BundleError(RuntimeError):
    """A guard bundle that cannot be loaded. The message names the offending file.

    A RuntimeError on purpose: LiteLLM skips guardrails whose constructor raises
    ValueError/TypeError and then serves unguarded; a RuntimeError stops the proxy.
    """


def taxonomy_order(codes: Iterable[str]) -> tuple[str, ...]:
    """Unique category codes in taxonomy order (S1, S2, ..., S10, ...); unknown codes last."""
    unique = set(codes)
    known = tuple(code for code in CATEGORY_CODES if code in unique)
    return known + tuple(sorted(unique - set(known)))


class CategoryHead(BaseModel):
    """One of ``guard.json``'s ``categories``: a Llama Guard 3 category the model scores.

    Its probability is the sigmoid of the model's output column ``2 + i`` (``i``: its position in
    ``categories``); it fires at or above ``threshold``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(description="A Llama Guard 3 category code, S1..S14.")
    name: str = Field(description="The category's name, e.g. 'Violent Crimes'.")
    threshold: float = Field(ge=0.0, le=1.0, description="Probability at which it fires.")

    @field_validator("code")
    @classmethod
    def _known_code(cls, value: str) -> str:
        if value not in CATEGORY_NAMES:
            raise ValueError(
                f"{value!r} is not a Llama Guard 3 category code ({', '.join(CATEGORY_CODES)})"
            )
        return value


class FirstStageManifest(BaseModel):
    """``guard.json``'s ``first_stage``: the cascade's cheap scorer and its clear-safe cuts.

    An item whose first-stage score is below its part's cut is decided safe without the student.
    Each cut is chosen so that the first stage alone clears an unsafe item the student would
    catch at its threshold with probability at most ``max_missed`` (a bound from the caught
    validation items and the caught training items scored across folds,
    ``distill.cascade.choose_cut``); ``metrics`` holds the rates measured on validation and on
    the test set.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["model2vec-mlp"] = "model2vec-mlp"
    path: str = Field(default="stage1", description="Directory of its files, in the bundle.")
    base_model: str = Field(description="What the static embeddings were distilled from.")
    cut_prompt: float = Field(ge=0.0, le=1.0, description="Clear-safe cut for prompts.")
    cut_completion: float = Field(ge=0.0, le=1.0, description="Clear-safe cut for completions.")
    max_missed: float = Field(
        default=0.005,
        ge=0.0,
        le=1.0,
        description="Probability with which the cut may clear an unsafe item the student "
        "catches, bounded from the caught validation and cross-fitted training items.",
    )
    metrics: dict[str, Any] = Field(default_factory=dict)


class GuardManifest(BaseModel):
    """``guard.json``: what a bundle is, how to run it, and the hash of every file in it."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: int = FORMAT_VERSION
    name: str = "harmaug-guard"
    version: str
    base_model: str
    max_length: int = Field(default=256, ge=16, description="Tokens per window, specials included.")
    window_stride: int = Field(
        default=64, ge=0, description="Tokens shared by consecutive windows of one text."
    )
    max_windows: int = Field(default=8, ge=1, description="Cap on windows per scored item.")
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    response_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="A (prompt, response) pair's P(unsafe) is (1 - w) x the pair's reading plus "
        "w x the response read alone; 0 (plain HF bundles, earlier bundles): the pair only.",
    )
    response_shift: float = Field(
        default=0.0,
        description="Added to the logit of a pair's P(unsafe), so that the one threshold fits "
        "prompts and responses alike (responses are calibrated on their own validation pairs).",
    )
    unsafe_label_index: int = 1
    backend: Literal["onnx", "torch"] = "onnx"
    onnx_variant: Literal["int8", "fp32"] | None = Field(
        default=None, description="ONNX file served by default; None when the bundle has no ONNX."
    )
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256")
    first_stage: FirstStageManifest | None = Field(
        default=None, description="The cascade's first stage; None: the student scores all."
    )
    categories: list[CategoryHead] | None = Field(
        default=None,
        description="The category heads, in the order of the model's outputs 2, 3, ...; "
        "None: the guard gives P(unsafe) only.",
    )
    training_data: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    @model_validator(mode="after")
    def _cuts_below_threshold(self) -> GuardManifest:
        """What the first stage clears must be a safe verdict at the bundle's threshold."""
        stage = self.first_stage
        if stage is not None and max(stage.cut_prompt, stage.cut_completion) > self.threshold:
            raise ValueError("first_stage: a clear-safe cut is above the bundle's threshold")
        return self

    @model_validator(mode="after")
    def _categories_fit(self) -> GuardManifest:
        """Category heads are unique, and P(unsafe) is one of the two verdict columns."""
        if self.categories is None:
            return self
        codes = [head.code for head in self.categories]
        repeated = sorted({code for code in codes if codes.count(code) > 1})
        if repeated:
            raise ValueError(f"categories: {', '.join(repeated)} listed more than once")
        if self.unsafe_label_index not in range(VERDICT_COLUMNS):
            raise ValueError(
                "categories: with category heads, unsafe_label_index must be 0 or 1 "
                f"(columns 0 and 1 are safe / unsafe), got {self.unsafe_label_index}"
            )
        return self

    @property
    def output_width(self) -> int | None:
        """The model outputs a category-aware bundle needs (2 + K); None without categories."""
        return None if self.categories is None else VERDICT_COLUMNS + len(self.categories)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class GuardBundle:
    """A verified guard directory. Construct with :meth:`load`."""

    def __init__(self, path: Path, manifest: GuardManifest, *, is_plain_hf: bool = False):
        self.path = path
        self.manifest = manifest
        self.is_plain_hf = is_plain_hf

    @property
    def version(self) -> str:
        return self.manifest.version

    def onnx_path(self, variant: str | None = None) -> Path | None:
        chosen = variant or self.manifest.onnx_variant
        if chosen is None:
            return None
        path = self.path / ONNX_FILES[chosen]
        return path if path.is_file() else None

    def has_torch_weights(self) -> bool:
        return (self.path / "model.safetensors").is_file() and (self.path / "config.json").is_file()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GuardBundle:
        root = Path(path).expanduser()
        if not root.is_dir():
            raise BundleError(f"guard bundle not found: {root} is not a directory")
        manifest_file = root / MANIFEST_NAME
        if manifest_file.is_file():
            return cls(root, _read_manifest(manifest_file))
        if (root / "config.json").is_file():
            return cls(root, _plain_hf_manifest(root), is_plain_hf=True)
        raise BundleError(
            f"{root} is neither a guard bundle (no {MANIFEST_NAME}) nor a Hugging Face "
            "model directory (no config.json)"
        )


def _read_manifest(manifest_file: Path) -> GuardManifest:
    root = manifest_file.parent
    try:
        raw = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_file}: unreadable manifest ({exc})") from exc
    if not isinstance(raw, dict):
        raise BundleError(f"{manifest_file}: manifest is not a JSON object")
    found = raw.get("format_version")
    if found != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_file}: unsupported format_version {found!r} "
            f"(this harmaug-guard reads version {FORMAT_VERSION})"
        )
    try:
        manifest = GuardManifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{manifest_file}: invalid manifest: {exc}") from exc
    if not manifest.files:
        raise BundleError(f"{manifest_file}: manifest lists no files")
    if manifest.first_stage is not None:
        base = root.resolve()
        stage_dir = (base / manifest.first_stage.path).resolve()
        if base not in stage_dir.parents:
            raise BundleError(f"{manifest_file}: first_stage.path points outside the bundle")
        unlisted = [
            str(path.relative_to(base))
            for path in sorted(stage_dir.rglob("*"))
            if path.is_file() and str(path.relative_to(base)) not in manifest.files
        ]
        if unlisted or not stage_dir.is_dir():
            raise BundleError(
                f"{manifest_file}: first-stage files missing or not listed with a sha256: "
                f"{', '.join(unlisted) or manifest.first_stage.path}"
            )
    for rel, expected in sorted(manifest.files.items()):
        file = (root / rel).resolve()
        if root.resolve() not in file.parents:
            raise BundleError(f"{manifest_file}: file entry {rel!r} points outside the bundle")
        if file.suffix in PICKLE_SUFFIXES:
            raise BundleError(f"{root / rel}: pickle-based weights are never loaded")
        if not file.is_file():
            raise BundleError(f"{root / rel}: file listed in {MANIFEST_NAME} is missing")
        actual = sha256_file(file)
        if actual != expected:
            raise BundleError(
                f"{root / rel}: sha256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…); "
                "the bundle was modified or is incomplete"
            )
    return manifest


def _plain_hf_manifest(root: Path) -> GuardManifest:
    config_file = root / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{config_file}: unreadable config ({exc})") from exc
    has_onnx = (root / ONNX_FILES["fp32"]).is_file()
    if not (root / "model.safetensors").is_file() and not has_onnx:
        raise BundleError(
            f"{root}: no model.safetensors (or model.onnx); pickle weights are never loaded"
        )
    max_positions = int(config.get("max_position_embeddings", 512))
    return GuardManifest(
        name=str(config.get("_name_or_path") or root.name),
        version=f"hf:{root.name}",
        base_model=str(config.get("_name_or_path") or config.get("model_type", "unknown")),
        max_length=min(512, max_positions),
        unsafe_label_index=unsafe_label_index(config),
        backend="onnx" if has_onnx else "torch",
        onnx_variant="fp32" if has_onnx else None,
        categories=config_categories(config),
    )


def config_categories(config: dict[str, Any]) -> list[CategoryHead] | None:
    """The category columns of a plain HF classifier: labels 2.. of its ``id2label`` when every
    one is a Llama Guard 3 code (as the multi-label student names them), each firing at 0.5;
    None otherwise (a 2-label guard, or another head)."""
    id2label = {int(index): str(label) for index, label in (config.get("id2label") or {}).items()}
    codes = [id2label[index] for index in sorted(id2label) if index >= 2]
    if not codes or any(code not in CATEGORY_NAMES for code in codes):
        return None
    return [CategoryHead(code=code, name=CATEGORY_NAMES[code], threshold=0.5) for code in codes]


def unsafe_label_index(config: dict[str, Any]) -> int:
    """Index of the unsafe class from a HF config: a label named 'unsafe'/'harmful'/'toxic', else 1."""
    for index, label in (config.get("id2label") or {}).items():
        if str(label).lower() in {"unsafe", "harmful", "toxic"}:
            return int(index)
    return 1


def write_manifest(root: Path, manifest: GuardManifest) -> GuardManifest:
    """Hash every file under ``root`` (except guard.json) into the manifest and write it atomically."""
    files = {
        str(path.relative_to(root)): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
    final = manifest.model_copy(update={"files": files})
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".guard.json.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(final.model_dump_json(indent=2))
    os.replace(tmp, root / MANIFEST_NAME)
    return final
