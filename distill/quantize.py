"""Static int8 quantization of an exported guard whose verdicts do not depend on the batch.

Why static: ONNX Runtime's dynamic int8 (``DynamicQuantizeLinear``) computes one activation scale
per tensor, i.e. over every item of the batch, so an item's p_unsafe changes with whatever else
happens to be batched with it. Static int8 fixes every activation scale at export time from
calibration data; each token row is then quantized on its own, and an item's score is the same
alone or in any padded batch (measured: exactly 0.0 difference).

The scheme (``Int8Scheme`` defaults): QOperator, int8 weights per output channel, uint8
activations with MinMax ranges from caller-supplied calibration pairs (serving windows, one at a
time); only MatMul/Gemm with constant weights (attention score/context products stay fp32); the
FFN down-projection (``layer.N/output/dense``) of the first half of the layers stays fp32.

Measured on all-MiniLM-L6-v2 fine-tuned as a guard (AdvBench harmful vs s-labs benign prompts,
pairs with compliant answers/refusals, long items; 512 calibration windows from training data).
|diff| of p_unsafe against ONNX fp32, one window at a time: "held-out" = 500 in-distribution
windows; "OOD" = 600 windows the model never saw the like of (prompt injections, harmful
answers to benign prompts, shortened harmful prompts), where the errors show. Latency: batch 1,
128 tokens, 2 threads, min of 55 interleaved runs on a shared (loaded) 2-core machine.

| scheme                                   | held-out max | OOD max / mean  | OOD flips | ms (fp32 26.2) |
|------------------------------------------|--------------|-----------------|-----------|----------------|
| dynamic per-tensor (batch-dependent)     | 0.240        | 0.690 / 0.020   | 13        | 10.9 (of 22.2) |
| static MinMax, all dense layers          | 0.025        | 0.916 / 0.030   | 19        | 13.4           |
| static Percentile 99.999                 | 0.428        | 0.867 / 0.030   | 20        |                |
| static Entropy                           | 0.022        | 0.811 / 0.024   | 15        |                |
| MinMax + SmoothQuant, alpha 0.5 or 0.75  |              | 0.972 or 0.780  | 26 or 17  |                |
| MinMax, pooler/classifier/last layer fp32| 0.024        | 0.917 / 0.030   | 20        |                |
| MinMax, FFN-out fp32 in all 6 layers     | 0.010        | 0.347 / 0.007   | 6         | 18.2           |
| MinMax, FFN-out fp32 in layers 0-1       | 0.011        | 0.544 / 0.012   | 9         | 13.3           |
| **MinMax, FFN-out fp32 in layers 0-2**   | 0.009        | 0.347 / 0.008   | 5         | 15.7           |
| Entropy, FFN-out fp32 in layers 0-2      | 0.006        | 0.300 / 0.007   | 4         | 15.5           |
| MatMulNBits 8-bit, block 32, acc. lvl 4  | 0.004        | 0.061 / 0.001   | 2         | 32.2 (of 22.9) |

Calibrating on the OOD windows themselves did not help (0.961 max), so the error is resolution,
not clipping: the worst items are short (6-12 tokens) and a torch fake-quant study put the
sensitivity in the FFN down-projections (GELU outputs reach ~25 against a bulk below 1) of the
early layers; per-token activation scales would fix it (fake-quant: 0.11 max) but ONNX Runtime
has no fast per-token int8 kernel on CPU (MatMulNBits above is slower than fp32). Entropy buys a
little accuracy for twice the export time. ``distill.export`` therefore still checks int8
against the PyTorch model on the caller's validation pairs and serves fp32 when it fails.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Pair = tuple[str, str | None]

# Matches the FFN down-projection of BERT / DeBERTa-v2 style encoders: ".../layer.3/output/dense/..."
FFN_OUT = re.compile(r"layer\.(\d+)/output/dense/")


@dataclass(frozen=True)
class Int8Scheme:
    """How to quantize: calibration method, format, and which MatMuls stay fp32.

    ``exclude``: regexes of MatMul/Gemm node names kept fp32. ``fp32_ffn_out_fraction``: keep the
    FFN down-projection of this leading fraction of the encoder layers in fp32 (0 = none).
    """

    method: Literal["minmax", "percentile", "entropy"] = "minmax"
    quant_format: Literal["qoperator", "qdq"] = "qoperator"
    per_channel: bool = True
    const_weights_only: bool = True
    percentile: float = 99.999
    exclude: tuple[str, ...] = field(default_factory=tuple)
    fp32_ffn_out_fraction: float = 0.5
    max_calibration_windows: int = 512

    def describe(self) -> dict[str, Any]:
        return {"kind": "static", **asdict(self)}


DEFAULT_SCHEME = Int8Scheme()


class CalibrationError(ValueError):
    """Calibration data that cannot calibrate anything."""


def calibration_feeds(
    tokenizer_dir: Path,
    pairs: Sequence[Pair],
    *,
    input_names: Sequence[str],
    max_length: int,
    stride: int,
    limit: int,
) -> list[dict[str, np.ndarray]]:
    """One feed per serving window of ``pairs`` (batch 1, no padding), at most ``limit``, evenly
    spread over the pairs."""
    from guard_plugin.model import load_tokenizer
    from guard_plugin.windows import WindowBuilder

    tokenizer = load_tokenizer(Path(tokenizer_dir))
    builder = WindowBuilder(tokenizer, max_length=max_length, stride=stride, max_windows=4)
    windows = [window for item in builder.build(pairs) for window in item.windows]
    if not windows:
        raise CalibrationError("no calibration data: pass prompts/pairs from the training data")
    picked = np.linspace(0, len(windows) - 1, num=min(limit, len(windows))).round().astype(int)
    feeds = []
    for index in sorted(set(picked.tolist())):
        window = windows[index]
        tensors = {
            "input_ids": np.array([window.input_ids], dtype=np.int64),
            "attention_mask": np.ones((1, len(window.input_ids)), dtype=np.int64),
            "token_type_ids": np.array([window.token_type_ids], dtype=np.int64),
        }
        feeds.append({name: tensors[name] for name in input_names})
    return feeds


class _FeedReader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feeds, with the ``set_range``
    that its strided calibration uses: one window per collection step, so windows of different
    lengths never have to be stacked (the histogram calibrators cannot stack them)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = feeds
        self._pending: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self._feeds[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._pending, None)


def matmul_nodes(onnx_path: Path, patterns: Sequence[str]) -> list[str]:
    """Names of MatMul/Gemm nodes whose name matches any of the regex ``patterns``."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [
        node.name
        for node in graph.node
        if node.op_type in {"MatMul", "Gemm"} and any(re.search(p, node.name) for p in patterns)
    ]


def ffn_out_nodes(onnx_path: Path, fraction: float) -> list[str]:
    """The FFN down-projection MatMuls of the first ``fraction`` of the encoder layers."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    found = [
        (int(match.group(1)), node.name)
        for node in graph.node
        if node.op_type == "MatMul" and (match := FFN_OUT.search(node.name))
    ]
    if not found:
        return []
    layers = max(layer for layer, _ in found) + 1
    keep = math.ceil(fraction * layers)
    return [name for layer, name in found if layer < keep]


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    *,
    tokenizer_dir: Path,
    calibration_pairs: Sequence[Pair],
    max_length: int,
    stride: int = 64,
    scheme: Int8Scheme = DEFAULT_SCHEME,
) -> dict[str, Any]:
    """Write a static int8 copy of ``fp32_path`` to ``out_path``; return a description of the scheme.

    ``calibration_pairs`` should be varied training data: prompts and (prompt, response) pairs,
    short and long, both classes.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    session = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    input_names = [node.name for node in session.get_inputs()]
    del session
    feeds = calibration_feeds(
        tokenizer_dir,
        calibration_pairs,
        input_names=input_names,
        max_length=max_length,
        stride=stride,
        limit=scheme.max_calibration_windows,
    )
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    excluded = matmul_nodes(fp32_path, scheme.exclude) if scheme.exclude else []
    excluded = sorted({*excluded, *ffn_out_nodes(fp32_path, scheme.fp32_ffn_out_fraction)})
    with tempfile.TemporaryDirectory(prefix="harmaug-quant-") as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            _FeedReader(feeds),
            quant_format=QuantFormat.QOperator
            if scheme.quant_format == "qoperator"
            else QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=scheme.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=methods[scheme.method],
            calibration_providers=["CPUExecutionProvider"],
            extra_options={
                "MatMulConstBOnly": scheme.const_weights_only,
                "CalibStridedMinMax": 1,
                "CalibPercentile": scheme.percentile,
                "CalibTensorRangeSymmetric": False,
            },
        )
    return {
        **scheme.describe(),
        "calibration_windows": len(feeds),
        "excluded_nodes": excluded,
    }


def activation_ranges(
    model: Any, names: Sequence[str], feeds: Sequence[dict[str, np.ndarray]]
) -> dict[str, tuple[float, float]]:
    """(min, max) of the named float tensors over ``feeds`` (MinMax calibration)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    known = {output.name for output in augmented.graph.output}
    for name in names:
        if name not in known:
            augmented.graph.output.append(
                helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    session = ort.InferenceSession(
        augmented.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    ranges: dict[str, tuple[float, float]] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(list(names), feed), strict=True):
            low, high = float(value.min()), float(value.max())
            if name in ranges:
                low, high = min(low, ranges[name][0]), max(high, ranges[name][1])
            ranges[name] = (low, high)
    return ranges


def quantize_integer_to_float(
    fp32_path: Path, out_path: Path, feeds: Sequence[dict[str, np.ndarray]], exclude: set[str]
) -> list[str]:
    """Static int8 with float outputs: every MatMul with a constant 2-D weight (not in
    ``exclude``) becomes QuantizeLinear(X, static scale) -> MatMulIntegerToFloat(Xq, Wq, ...,
    bias), the bias Add that follows folded in. Weights int8 symmetric per output channel.
    Returns the names of the quantized MatMuls."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32_path))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    targets = [
        node
        for node in graph.node
        if node.op_type == "MatMul"
        and node.name not in exclude
        and node.input[1] in weights
        and len(weights[node.input[1]].dims) == 2
    ]
    ranges = activation_ranges(model, sorted({node.input[0] for node in targets}), feeds)
    replaced: dict[int, list[Any]] = {}  # id(original node) -> nodes to emit instead
    dropped: set[int] = set()
    quantized_inputs: dict[str, tuple[str, str, str]] = {}
    for node in targets:
        x_name, w_name = node.input[0], node.input[1]
        emitted = []
        if x_name not in quantized_inputs:
            low, high = min(ranges[x_name][0], 0.0), max(ranges[x_name][1], 0.0)
            scale = max(high - low, 1e-8) / 255.0
            zero = int(np.clip(round(-low / scale), 0, 255))
            names = (f"{x_name}_q8", f"{x_name}_q8_scale", f"{x_name}_q8_zero")
            graph.initializer.extend(
                [
                    numpy_helper.from_array(np.array(scale, dtype=np.float32), names[1]),
                    numpy_helper.from_array(np.array(zero, dtype=np.uint8), names[2]),
                ]
            )
            emitted.append(
                helper.make_node("QuantizeLinear", [x_name, names[1], names[2]], [names[0]])
            )
            quantized_inputs[x_name] = names
        x_q, x_scale, x_zero = quantized_inputs[x_name]
        matrix = numpy_helper.to_array(weights[w_name]).astype(np.float32)
        w_scale = np.maximum(np.abs(matrix).max(axis=0), 1e-8) / 127.0
        w_q = np.clip(np.round(matrix / w_scale), -127, 127).astype(np.int8)
        graph.initializer.extend(
            [
                numpy_helper.from_array(w_q, f"{w_name}_q8"),
                numpy_helper.from_array(w_scale.astype(np.float32), f"{w_name}_q8_scale"),
            ]
        )
        inputs = [x_q, f"{w_name}_q8", x_scale, f"{w_name}_q8_scale", x_zero, ""]
        output = node.output[0]
        bias_add = _bias_add(consumers.get(output, []), output, weights, matrix.shape[1])
        if bias_add is not None:
            add, bias_name = bias_add
            inputs.append(bias_name)
            output = add.output[0]
            dropped.add(id(add))
        emitted.append(
            helper.make_node(
                "MatMulIntegerToFloat",
                inputs,
                [output],
                name=f"{node.name}_int8",
                domain="com.microsoft",
            )
        )
        replaced[id(node)] = emitted
    new_nodes = []
    for node in graph.node:
        if id(node) in dropped:
            continue
        new_nodes.extend(replaced.get(id(node), [node]))
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(out_path))
    return [node.name for node in targets]


def _bias_add(
    consumers: list[Any], output: str, weights: dict[str, Any], width: int
) -> tuple[Any, str] | None:
    """The Add of a constant 1-D bias of ``width`` that is the only consumer of ``output``."""
    if len(consumers) != 1 or consumers[0].op_type != "Add":
        return None
    add = consumers[0]
    other = add.input[1] if add.input[0] == output else add.input[0]
    bias = weights.get(other)
    if bias is None or list(bias.dims) != [width]:
        return None
    return add, other
