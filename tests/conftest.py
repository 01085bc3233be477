"""Shared fixtures: a tiny trained guard (built once per session) and an isolated HARMAUG_HOME."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from guard_plugin.bundle import GuardManifest, write_manifest  # noqa: E402
from tests.tiny_guard import build_tiny_guard  # noqa: E402


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


@pytest.fixture()
def harmaug_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HARMAUG_HOME for one test."""
    home = tmp_path / "harmaug_home"
    home.mkdir()
    monkeypatch.setenv("HARMAUG_HOME", str(home))
    return home
