"""Shared fixtures: tiny trained guards (built once per session) and an isolated HARMAUG_HOME."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from guard_plugin.bundle import GuardManifest, write_manifest
from tests.tiny_guard import build_tiny_guard


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain Hugging Face sequence-classification directory of the tiny trained guard."""
    return build_tiny_guard(tmp_path_factory.mktemp("tiny_hf") / "model")


@pytest.fixture(scope="session")
def tiny_torch_bundle(tiny_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny guard as a harmaug bundle served by the PyTorch backend (64-token windows)."""
    root = tmp_path_factory.mktemp("tiny_bundle") / "bundle"
    shutil.copytree(tiny_hf_dir, root)
    manifest = GuardManifest(
        version="tiny-torch-1",
        base_model="tiny-bert",
        max_length=64,
        window_stride=16,
        max_windows=8,
        backend="torch",
    )
    write_manifest(root, manifest)
    return root


@pytest.fixture(autouse=True)
def _log_level_stays_in_its_test():
    """A test that changes the structlog level (the CLI sets WARNING) restores it afterwards, so
    that a later test capturing INFO events (``structlog.testing.capture_logs``) sees them."""
    from guard_plugin import logs

    before = logs._configured_level
    yield
    if before is not None and logs._configured_level != before:
        logs.configure_logging(before)


@pytest.fixture()
def harmaug_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HARMAUG_HOME for one test."""
    home = tmp_path / "harmaug_home"
    home.mkdir()
    monkeypatch.setenv("HARMAUG_HOME", str(home))
    return home


# --- ONNX bundle of the tiny guard (owner: export, distill/export.py) -------------------------


def tiny_calibration_pairs() -> list[tuple[str, str | None]]:
    """In-distribution prompts and pairs of the tiny guard, short and long (with filler)."""
    from tests.tiny_guard import FILLER, SAFE, UNSAFE

    texts = SAFE + UNSAFE
    pairs: list[tuple[str, str | None]] = [(text, None) for text in texts]
    pairs += [(FILLER + " " + text, None) for text in texts[::3]]
    pairs += [(a, b) for a, b in zip(SAFE[::4], UNSAFE[::4], strict=False)]
    return pairs


def tiny_export(
    hf_dir: Path, root: Path, version: str, pairs: list[tuple[str, str | None]], **extra: Any
) -> Path:
    """A tiny model as a bundle written by distill.export under ``root``: ONNX fp32 + int8
    (served when parity passes), 64-token windows, stride 16, 8 windows max, threshold 0.5;
    half the pairs calibrate int8, the other half check its parity."""
    from distill.export import write_bundle

    result = write_bundle(
        hf_dir,
        root / "bundle",
        version=version,
        base_model="tiny-bert",
        max_length=64,
        window_stride=16,
        max_windows=8,
        threshold=0.5,
        calibration_pairs=pairs[1::2],
        validation_pairs=pairs[::2],
        training_data={"source": "tests.tiny_guard"},
        metrics={},
        **extra,
    )
    return result.path


@pytest.fixture(scope="session")
def tiny_onnx_bundle(tiny_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny guard as a bundle written by distill.export: model.onnx + model.int8.onnx (served
    when its parity check passes), backend onnx, 64-token windows, stride 16, 8 windows max."""
    return tiny_export(
        tiny_hf_dir, tmp_path_factory.mktemp("tiny_onnx"), "tiny-onnx-1", tiny_calibration_pairs()
    )


@pytest.fixture(scope="session")
def tiny_cascade_bundle(
    tiny_onnx_bundle: Path, tiny_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny ONNX guard as a cascade: a first stage distilled from the tiny guard and trained
    on its corpus (prompts and pairs), with its cuts chosen on the same corpus
    (``distill.cascade.build_first_stage``) for a 5% miss rate: a few dozen caught items cannot
    bound 0.5%."""
    from distill.cascade import build_first_stage
    from distill.records import Example
    from guard_plugin.bundle import GuardBundle
    from tests.tiny_guard import SAFE, UNSAFE

    root = tmp_path_factory.mktemp("tiny_cascade") / "bundle"
    shutil.copytree(tiny_onnx_bundle, root)
    records = [Example(prompt=t, label=0, source="toy-safe") for t in SAFE]
    records += [Example(prompt=t, label=1, source="toy-unsafe") for t in UNSAFE]
    records += [
        Example(prompt=a, response=b, label=1, source="toy-pair")
        for a, b in zip(SAFE[::3], UNSAFE[::3], strict=False)
    ]
    records += [
        Example(prompt=a, response=b, label=0, source="toy-pair")
        for a, b in zip(UNSAFE[1::3], SAFE[1::3], strict=False)
    ]
    manifest = GuardBundle.load(root).manifest
    first = build_first_stage(
        root,
        tiny_hf_dir,
        train=records,
        validation=records,
        threshold=0.5,
        progress=False,
        max_missed=0.05,
    )
    write_manifest(
        root, manifest.model_copy(update={"version": "tiny-cascade-1", "first_stage": first})
    )
    return root


# --- untrained student and toy training records (owner: trainer, distill/trainer.py) ----------


@pytest.fixture(scope="session")
def tiny_encoder_dir(tiny_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny BERT encoder (no classification head) with the tiny guard's tokenizer:
    the student a training test starts from (like all-MiniLM-L6-v2, minus the pre-training)."""
    import torch
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("tiny_encoder") / "encoder"
    shutil.copytree(tiny_hf_dir, root, ignore=shutil.ignore_patterns("model.safetensors"))
    config = BertConfig.from_pretrained(root)
    config.architectures = ["BertModel"]
    torch.manual_seed(0)
    BertModel(config).save_pretrained(root)
    return root


@pytest.fixture()
def one_torch_thread():
    """Tiny models train fastest on one thread, and the test machine's cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def toy_train_records() -> list:
    """Labelled records of the tiny guard's toy corpus (safe 0, unsafe 1), prompts only."""
    from distill.records import Example
    from tests.tiny_guard import SAFE, UNSAFE

    return [Example(prompt=t, label=0, source="toy-safe") for t in SAFE] + [
        Example(prompt=t, label=1, source="toy-unsafe") for t in UNSAFE
    ]


# --- tiny causal LMs for teacher / generator adapters (owner: adapters, tests/tiny_llm.py) ----


@pytest.fixture(scope="session")
def tiny_llama_guard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama with a tokenizer in which "safe" and "unsafe" are single tokens."""
    from tests.tiny_llm import build_tiny_llama_guard

    return build_tiny_llama_guard(tmp_path_factory.mktemp("tiny_llama_guard") / "model")


@pytest.fixture(scope="session")
def tiny_chat_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama chat model with a ChatML chat template (the SmolLM2 format)."""
    from tests.tiny_llm import build_tiny_chat_lm

    return build_tiny_chat_lm(tmp_path_factory.mktemp("tiny_chat_lm") / "model")


# --- the tiny category-aware guard (owner: runtime categories, guard_plugin) -------------------


def tiny_category_heads(threshold: float = 0.5) -> list:
    """The tiny category-aware guard's heads (S1, S11, S12), as guard.json lists them."""
    from guard_plugin.bundle import CategoryHead
    from tests.tiny_guard import TINY_CATEGORIES

    return [CategoryHead(code=c, name=n, threshold=threshold) for c, n in TINY_CATEGORIES]


def tiny_category_pairs() -> list[tuple[str, str | None]]:
    """Prompts and pairs of the tiny category-aware guard's corpus, safe and of each category."""
    from tests.tiny_guard import CATEGORY_TEXTS, FILLER, SAFE

    harmful = [text for texts in CATEGORY_TEXTS.values() for text in texts]
    pairs: list[tuple[str, str | None]] = [(text, None) for text in SAFE + harmful]
    pairs += [(FILLER + " " + text, None) for text in (SAFE + harmful)[::3]]
    pairs += [(a, b) for a, b in zip(SAFE[::2], harmful[::5], strict=False)]
    return pairs


@pytest.fixture(scope="session")
def tiny_category_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny category-aware guard as a Hugging Face directory (5 labels)."""
    from tests.tiny_guard import build_tiny_category_guard

    return build_tiny_category_guard(tmp_path_factory.mktemp("tiny_category_hf") / "model")


@pytest.fixture(scope="session")
def tiny_category_bundle(
    tiny_category_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny category-aware guard as a bundle written by distill.export: ``categories`` S1,
    S11, S12 (threshold 0.5) in guard.json, safetensors, model.onnx and model.int8.onnx (served
    when parity passes, categories included), 64-token windows."""
    return tiny_export(
        tiny_category_hf_dir,
        tmp_path_factory.mktemp("tiny_category"),
        "tiny-categories-1",
        tiny_category_pairs(),
        categories=tiny_category_heads(),
    )
