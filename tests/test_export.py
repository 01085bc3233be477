"""distill.export / distill.quantize on the tiny guard: ONNX parity, int8, atomic bundles."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distill.export import ExportError, export_onnx, max_logit_diff, write_bundle
from distill.quantize import CalibrationError
from guard_plugin.bundle import ONNX_FILES, BundleError, GuardBundle
from guard_plugin.cli import main
from guard_plugin.model import Backend, GuardModel, OnnxBackend, collate
from tests.conftest import tiny_calibration_pairs
from tests.tiny_guard import FILLER, SAFE, UNSAFE

LONG_UNSAFE = " ".join([FILLER] * 8) + " " + UNSAFE[3]
PAIRS: list[tuple[str, str | None]] = [
    *[(text, None) for text in SAFE[:10] + UNSAFE[:10]],
    (LONG_UNSAFE, None),
    (SAFE[2], UNSAFE[5]),
    (UNSAFE[1], SAFE[6]),
]


def p_unsafe(model: GuardModel, pairs: list[tuple[str, str | None]]) -> list[float]:
    return [score.p_unsafe for score in model.score(pairs)]


def bundle_kwargs(**overrides: object) -> dict:
    pairs = tiny_calibration_pairs()
    kwargs: dict = {
        "version": "t1",
        "base_model": "tiny-bert",
        "max_length": 64,
        "window_stride": 16,
        "max_windows": 8,
        "threshold": 0.5,
        "calibration_pairs": pairs[1::2],
        "validation_pairs": pairs[::2],
        "training_data": {"source": "tests.tiny_guard"},
        "metrics": {"auprc": 1.0},
    }
    kwargs.update(overrides)
    return kwargs


def test_onnx_export_matches_torch(tiny_hf_dir: Path, tmp_path: Path) -> None:
    onnx_path = export_onnx(tiny_hf_dir, tmp_path / "model.onnx")
    assert max_logit_diff(onnx_path, tiny_hf_dir, PAIRS) < 1e-4


def test_deberta_v2_exports_without_token_type_ids(tiny_hf_dir: Path, tmp_path: Path) -> None:
    """DeBERTa-v3 students (type_vocab_size 0, relative attention) export too."""
    import onnx
    import torch
    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2ForSequenceClassification

    config = DebertaV2Config(
        vocab_size=400,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        type_vocab_size=0,
        relative_attention=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        initializer_range=1.0,  # logits of order 1, so the tolerance means something
        num_labels=2,
    )
    hf_dir = tmp_path / "deberta"
    torch.manual_seed(0)  # a fixed model: with init range 1.0 a random one can sit at the bound
    DebertaV2ForSequenceClassification(config).save_pretrained(hf_dir)
    AutoTokenizer.from_pretrained(tiny_hf_dir).save_pretrained(hf_dir)
    onnx_path = export_onnx(hf_dir, tmp_path / "model.onnx")
    inputs = [node.name for node in onnx.load(str(onnx_path)).graph.input]
    assert inputs == ["input_ids", "attention_mask"]
    assert max_logit_diff(onnx_path, hf_dir, PAIRS) < 1e-3


def test_onnx_fp32_bundle_scores_like_torch(tiny_onnx_bundle: Path) -> None:
    bundle = GuardBundle.load(tiny_onnx_bundle)
    torch_p = p_unsafe(GuardModel(bundle, backend="torch"), PAIRS)
    onnx_p = p_unsafe(GuardModel(bundle, backend="onnx", onnx_variant="fp32"), PAIRS)
    assert max(abs(a - b) for a, b in zip(torch_p, onnx_p, strict=True)) < 1e-4
    # the tiny guard really separates the classes through the exported graph
    assert all(p < 0.5 for p in onnx_p[:10]) and all(p > 0.5 for p in onnx_p[10:21])


def test_int8_is_served_close_to_fp32(tiny_onnx_bundle: Path) -> None:
    bundle = GuardBundle.load(tiny_onnx_bundle)
    export = bundle.manifest.metrics["export"]
    assert bundle.manifest.onnx_variant == "int8" and export["served"] == "int8"
    assert (tiny_onnx_bundle / ONNX_FILES["int8"]).is_file()
    assert export["int8_max_abs_diff"] <= export["parity_tolerance"]
    fp32_model = GuardModel(bundle, onnx_variant="fp32")
    int8_model = GuardModel(bundle, onnx_variant="int8")
    fp32, int8 = p_unsafe(fp32_model, PAIRS), p_unsafe(int8_model, PAIRS)
    assert max(abs(a - b) for a, b in zip(fp32, int8, strict=True)) < 0.05
    assert [p > 0.5 for p in fp32] == [p > 0.5 for p in int8]
    # logits too: the toy model's probabilities saturate
    windows = [w for item in fp32_model.windows.build(PAIRS) for w in item.windows]
    batch = collate(windows, pad_id=fp32_model.pad_id, token_types=True)
    assert np.abs(fp32_model.backend.run(batch) - int8_model.backend.run(batch)).max() < 0.1


def max_batch_shift(model: GuardModel, backend: Backend) -> float:
    """Largest logit change of a window between running alone and inside one padded batch
    (logits, because the toy model's probabilities saturate)."""
    windows = [w for item in model.windows.build(PAIRS) for w in item.windows]
    padded = backend.run(collate(windows, pad_id=model.pad_id, token_types=True))
    return max(
        float(
            np.abs(backend.run(collate([w], pad_id=model.pad_id, token_types=True))[0] - row).max()
        )
        for w, row in zip(windows, padded, strict=True)
    )


def test_int8_verdict_does_not_depend_on_the_batch(tiny_onnx_bundle: Path) -> None:
    model = GuardModel(GuardBundle.load(tiny_onnx_bundle), onnx_variant="int8")
    assert max_batch_shift(model, model.backend) < 1e-3
    alone = [model.score([pair])[0].p_unsafe for pair in PAIRS]
    rng = random.Random(0)
    for _ in range(5):
        order = list(range(len(PAIRS)))
        rng.shuffle(order)
        mixed = p_unsafe(model, [PAIRS[i] for i in order])
        for position, index in enumerate(order):
            assert abs(mixed[position] - alone[index]) < 1e-3


def test_dynamic_int8_would_fail_the_batch_check(tiny_onnx_bundle: Path, tmp_path: Path) -> None:
    """Why the export quantizes statically: per-batch activation scales move the logits."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dynamic = tmp_path / "dynamic.onnx"
    quantize_dynamic(
        tiny_onnx_bundle / ONNX_FILES["fp32"],
        dynamic,
        weight_type=QuantType.QInt8,
        # the fused graph's com.microsoft ops have no ONNX shape inference
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )
    model = GuardModel(GuardBundle.load(tiny_onnx_bundle), onnx_variant="fp32")
    assert max_batch_shift(model, OnnxBackend(dynamic, threads=2, variant="int8")) > 1e-3


def test_int8_parity_failure_serves_fp32_and_says_so(tiny_hf_dir: Path, tmp_path: Path) -> None:
    result = write_bundle(tiny_hf_dir, tmp_path / "b", **bundle_kwargs(parity_tolerance=0.0))
    assert result.served == "fp32"
    bundle = GuardBundle.load(result.path)
    export = bundle.manifest.metrics["export"]
    assert export["served"] == "fp32" and export["int8_max_abs_diff"] > 0.0
    assert bundle.manifest.onnx_variant == "fp32"
    assert bundle.manifest.metrics["auprc"] == 1.0
    assert not (result.path / ONNX_FILES["int8"]).exists()
    assert "model.int8.onnx" not in bundle.manifest.files


def test_bundle_hashes_verify_and_tampering_is_refused(tiny_onnx_bundle: Path) -> None:
    manifest = GuardBundle.load(tiny_onnx_bundle).manifest
    assert {"model.onnx", "model.safetensors", "config.json", "tokenizer.json"} <= set(
        manifest.files
    )
    assert manifest.training_data == {"source": "tests.tiny_guard"}
    copy = tiny_onnx_bundle.parent / "tampered"
    shutil.copytree(tiny_onnx_bundle, copy)
    with (copy / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match=r"model\.onnx: sha256 mismatch"):
        GuardBundle.load(copy)


def test_crash_mid_export_leaves_no_bundle(tiny_hf_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "registry" / "v1"
    # no calibration data: quantization fails after the ONNX graph was already written
    with pytest.raises(CalibrationError):
        write_bundle(tiny_hf_dir, out, **bundle_kwargs(calibration_pairs=[]))
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


def test_existing_bundle_is_never_overwritten(tiny_hf_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    with pytest.raises(ExportError, match="already exists"):
        write_bundle(tiny_hf_dir, tmp_path / "b", **bundle_kwargs(int8=False))


def test_export_command_writes_a_loadable_bundle(
    tiny_hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calibration = tmp_path / "calibration.jsonl"
    lines = [json.dumps({"prompt": p, "response": r}) for p, r in tiny_calibration_pairs()]
    calibration.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "bundle"
    code = main(
        [
            "distill",
            "export",
            "--model",
            str(tiny_hf_dir),
            "--out",
            str(out),
            "--version",
            "cli-1",
            "--calibration",
            str(calibration),
            "--max-length",
            "64",
            "--window-stride",
            "16",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    bundle = GuardBundle.load(out)
    assert printed["served"] == bundle.manifest.onnx_variant
    assert bundle.manifest.version == "cli-1" and bundle.manifest.max_length == 64
    scores = GuardModel(bundle).score([(SAFE[0], None), (UNSAFE[0], None)])
    assert scores[0].p_unsafe < 0.5 < scores[1].p_unsafe


def test_bert_graph_is_fused_and_int8_covers_attention(tiny_onnx_bundle: Path) -> None:
    """The served graphs: fused attention / LayerNorm / GELU kernels; int8 quantizes the QKV
    projection inside attention too, with 7-bit weights (no int16 saturation in AVX2 kernels)."""
    import onnx
    from onnx import numpy_helper

    fp32 = onnx.load(str(tiny_onnx_bundle / ONNX_FILES["fp32"]))
    ops = [node.op_type for node in fp32.graph.node]
    layers = json.loads((tiny_onnx_bundle / "config.json").read_text())["num_hidden_layers"]
    assert ops.count("Attention") == layers and "Softmax" not in ops
    assert ops.count("LayerNormalization") == 2 * layers and "BiasGelu" in ops
    assert "SkipLayerNormalization" not in ops  # its CPU kernel is 7x slower than Add + LayerNorm
    int8 = onnx.load(str(tiny_onnx_bundle / ONNX_FILES["int8"]))
    ops = [node.op_type for node in int8.graph.node]
    assert ops.count("QAttention") == layers and "MatMulIntegerToFloat" in ops
    quantized = [
        numpy_helper.to_array(init) for init in int8.graph.initializer if init.data_type == 3
    ]  # INT8: the weights
    assert quantized and max(int(np.abs(w).max()) for w in quantized) <= 63
    scheme = GuardBundle.load(tiny_onnx_bundle).manifest.metrics["export"]["scheme"]
    assert scheme["weight_bits"] == 7 and scheme["quantized_nodes"] > layers


def test_unfused_export_matches_torch_too(tiny_hf_dir: Path, tmp_path: Path) -> None:
    import onnx

    onnx_path = export_onnx(tiny_hf_dir, tmp_path / "model.onnx", fuse=False)
    assert "Attention" not in {node.op_type for node in onnx.load(str(onnx_path)).graph.node}
    assert max_logit_diff(onnx_path, tiny_hf_dir, PAIRS) < 1e-4


def test_weight_quantizer_bits() -> None:
    from onnx import helper, numpy_helper

    from distill.quantize import _add_weight_quantizer

    matrix = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    for bits, limit in ((7, 63), (8, 127)):
        graph = helper.make_graph([], "g", [], [])
        name, scale_name, width = _add_weight_quantizer(
            graph, numpy_helper.from_array(matrix, "w"), bits
        )
        found = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        quantized, scale = found[name], found[scale_name]
        assert width == 4 and int(np.abs(quantized).max()) == limit
        assert np.abs(quantized * scale - matrix).max() <= scale.max() / 2 + 1e-6
    with pytest.raises(ValueError, match="bits"):
        _add_weight_quantizer(
            helper.make_graph([], "g", [], []), numpy_helper.from_array(matrix, "w"), 9
        )


def _one_matmul_model(weight: np.ndarray) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="layer.0/output/dense/MatMul")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None, weight.shape[1]])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_outlier_channels_are_multiplied_in_fp32() -> None:
    """One input channel ~50x larger than the rest (BERT's GELU outputs): taken out of the int8
    product and added back in fp32, it no longer coarsens every other channel's int8 step."""
    import onnxruntime as ort

    from distill.quantize import Int8Scheme, quantize_integer_to_float

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(32, 8)).astype(np.float32)

    def activations(rows: int) -> np.ndarray:
        x = rng.uniform(-0.2, 1.0, size=(1, rows, 32)).astype(np.float32)
        x[..., 5] *= 50.0
        return x

    calibration = [{"x": activations(16)} for _ in range(8)]
    probe = activations(64)
    errors = {}
    for limit in (0, 4):
        model = _one_matmul_model(weight)
        scheme = Int8Scheme(max_outlier_channels=limit, outlier_nodes="output/dense")
        channels = quantize_integer_to_float(model, calibration, set(), scheme)
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        errors[limit] = float(np.abs(session.run(None, {"x": probe})[0] - probe @ weight).max())
        assert channels == {"layer.0/output/dense/MatMul": [5] if limit else []}
    assert errors[4] * 10 < errors[0]  # measured: 0.08 vs 2.04
