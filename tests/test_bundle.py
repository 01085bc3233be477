"""Guard bundles: hashes verified on load, refusals name the file, plain HF directories load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from guard_plugin.bundle import MANIFEST_NAME, BundleError, GuardBundle
from guard_plugin.model import GuardModel


@pytest.fixture()
def bundle_copy(tiny_torch_bundle: Path, tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    shutil.copytree(tiny_torch_bundle, root)
    return root


def test_bundle_loads_and_verifies(tiny_torch_bundle: Path) -> None:
    bundle = GuardBundle.load(tiny_torch_bundle)
    assert bundle.version == "tiny-torch-1"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(bundle.manifest.files)
    assert not bundle.is_plain_hf


def test_tampered_file_is_refused_by_name(bundle_copy: Path) -> None:
    with (bundle_copy / "model.safetensors").open("r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(BundleError, match=r"model\.safetensors: sha256 mismatch"):
        GuardBundle.load(bundle_copy)


def test_missing_file_is_refused_by_name(bundle_copy: Path) -> None:
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(
        BundleError, match=r"tokenizer\.json: file listed in guard\.json is missing"
    ):
        GuardBundle.load(bundle_copy)


def test_unknown_format_version_is_refused(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / MANIFEST_NAME).read_text())
    manifest["format_version"] = 99
    (bundle_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"guard\.json: unsupported format_version 99"):
        GuardBundle.load(bundle_copy)


def test_unreadable_manifest_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match=r"guard\.json: unreadable manifest"):
        GuardBundle.load(bundle_copy)


def test_pickle_weights_are_never_loaded(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / MANIFEST_NAME).read_text())
    (bundle_copy / "pytorch_model.bin").write_bytes(b"pickle")
    manifest["files"]["pytorch_model.bin"] = "0" * 64
    (bundle_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"pytorch_model\.bin: pickle-based weights"):
        GuardBundle.load(bundle_copy)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a directory"):
        GuardBundle.load(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="neither a guard bundle"):
        GuardBundle.load(tmp_path)


def test_plain_hf_dir_loads_and_scores(tiny_hf_dir: Path) -> None:
    bundle = GuardBundle.load(tiny_hf_dir)
    assert bundle.is_plain_hf
    assert bundle.manifest.unsafe_label_index == 1  # from id2label
    assert bundle.manifest.backend == "torch"
    model = GuardModel(bundle, threads=1)
    from tests.tiny_guard import SAFE, UNSAFE

    safe, unsafe = model.score([(SAFE[0], None), (UNSAFE[0], None)])
    assert safe.p_unsafe < 0.1 < 0.9 < unsafe.p_unsafe


def test_plain_hf_dir_with_only_pickle_weights_is_refused(
    tiny_hf_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "hf"
    shutil.copytree(tiny_hf_dir, root)
    (root / "model.safetensors").rename(root / "pytorch_model.bin")
    with pytest.raises(BundleError, match=r"no model\.safetensors"):
        GuardBundle.load(root)


def test_backend_without_weights_names_the_missing_file(tiny_torch_bundle: Path) -> None:
    bundle = GuardBundle.load(tiny_torch_bundle)
    with pytest.raises(BundleError, match=r"model\.onnx: missing"):
        GuardModel(bundle, backend="onnx")
    with pytest.raises(BundleError, match=r"model\.int8\.onnx: missing"):
        GuardModel(bundle, backend="onnx", onnx_variant="int8")
