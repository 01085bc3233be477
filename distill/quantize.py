"""Static int8 quantization of an exported guard whose verdicts do not depend on the batch.

Why static: ONNX Runtime's dynamic int8 (``DynamicQuantizeLinear``) computes one activation scale
per tensor, i.e. over every item of the batch, so an item's p_unsafe changes with whatever else
happens to be batched with it. Here every activation scale is fixed at export time from
calibration data, so each token row is quantized on its own and an item's score is the same alone
or in any padded batch (measured: exactly 0.0 difference).

The scheme (:class:`Int8Scheme` defaults): every MatMul with a constant weight becomes
``QuantizeLinear(X, static uint8 scale) -> MatMulIntegerToFloat(Xq, W int8 per output channel,
+ bias)``: int8 GEMM, float output, the bias Add folded in. In a fused graph (see
``distill.export.fuse_transformer_ops``) each ``Attention`` op becomes ``QAttention``: its QKV
projection in int8 with the same static input scale, the attention itself in fp32. MinMax
activation ranges come from caller-supplied calibration pairs (serving windows, one at a time, no
padding rows). The attention score/context products, the pooler and the classifier (Gemm) stay
fp32.

Outlier channels: the input of each FFN down-projection (``layer.N/output/dense``, a GELU output)
has one or two channels reaching 10-25 where the median channel peaks near 2; with one uint8 scale
per tensor they alone set the step of all 1536 channels. Those channels (max |x| above 4x the
median channel's, at most 8) are taken out of the int8 product, their weight rows zeroed, and
added back in fp32 (``Gather -> MatMul -> Add``; LLM.int8()'s decomposition with the channels
fixed at calibration). This replaced keeping the first half of the FFN-outs in fp32.

Weights use 7 bits (-63..63, ``weight_bits``): x86 CPUs without VNNI (AVX2, e.g. AMD EPYC
Zen 3) multiply uint8 x int8 with ``vpmaddubsw``, which sums two products into int16 with
saturation, and 255 * 127 * 2 overflows it (measured here: 44% error on a saturating column with
8-bit weights, exact with 7 bits). ONNX Runtime's own ``reduce_range`` exists for the same reason.
The early-layer FFN-out sensitivity in the last table was measured with 8-bit weights; part of
it was this saturation (GELU outputs up to ~25 quantize near 255).

Default guard (mix-v4), batch 1, 128 tokens, 2 threads, no spinning, Xeon with AVX-512 VNNI.
|diff| of p_unsafe against ONNX fp32 on the bootstrap's 400 validation pairs ("val": max / mean /
flips at 0.5) and on all held-out sets + the test mix ("all": 2,582 items, flips at the served
threshold); AUPRC change on the test mix:

| scheme                                | ms  | val                | all                 | AUPRC   |
|---------------------------------------|-----|--------------------|---------------------|---------|
| FFN-out fp32, layers 0-2 (old default)| 8.9 | 0.079/0.0051/3     | 0.133/0.0088/27     | -0.0007 |
| all FFN-outs int8                     | 7.8 | 0.234/0.0087/8     | 0.214/0.0133/41     | -0.0011 |
| **+ outlier channels fp32 (default)** | 8.1 | 0.121/0.0055/1     | 0.156/0.0091/24     | -0.0025 |
| + the FFN-in inputs' outliers too     | 8.8 | 0.058/0.0038/2     |                     |         |

ONNX fp32 takes 13.0 ms, PyTorch fp32 25.7 ms (passive OpenMP threads; 16.9 ms spinning). Splitting
the FFN-in inputs too is more accurate still, but its 18 extra small ops cost more than the int8
FFN-outs save; ``outlier_nodes`` selects where the split applies.

Earlier measurements, on a 2-core AMD EPYC (AVX2, no VNNI), of all-MiniLM-L6-v2 fine-tuned as a
guard (AdvBench harmful vs s-labs benign prompts, pairs with compliant answers/refusals, long
items; 512 calibration windows from training data).
|diff| of p_unsafe against ONNX fp32, one window at a time: "held-out" = 500 in-distribution
windows; "OOD" = 600 windows unlike the training data (prompt injections, harmful answers to
benign prompts, shortened harmful prompts), where the errors show. Latency: batch 1, 128 tokens,
2 threads, min of 55 interleaved runs relative to ONNX fp32 in the same run (shared 2-core box).

| scheme                                        | held-out max  | OOD max / mean | flips | x fp32 |
|-----------------------------------------------|---------------|----------------|-------|--------|
| ORT dynamic, per-tensor (batch-dependent)     | 0.240         | 0.690 / 0.020  | 13    | 0.41   |
| ORT static QOperator (QLinearMatMul), MinMax  | 0.025         | 0.916 / 0.030  | 19    | 0.50   |
| ... Percentile 99.999 / Entropy calibration   | 0.428 / 0.022 | 0.867 / 0.811  | 20/15 | 0.59   |
| ... + SmoothQuant, alpha 0.5 / 0.75 (max)     |               | 0.972 / 0.780  | 26/17 |        |
| ... pooler, classifier and last layer fp32    | 0.024         | 0.917 / 0.030  | 20    |        |
| ... FFN-out fp32 in layers 0-2                | 0.009         | 0.347 / 0.008  | 5     | 0.59   |
| ORT MatMulNBits 8-bit, block 32, acc. level 4 | 0.004         | 0.061 / 0.001  | 2     | 1.41   |
| static MatMulIntegerToFloat, all dense layers | 0.019         | 0.569 / 0.009  | 9     | 0.36   |
| ... FFN-out fp32 in layer 0                   | 0.006         | 0.524 / 0.007  | 6     | ~0.38  |
| ... FFN-out fp32 in layers 0-1                | 0.007         | 0.498 / 0.006  | 5     | ~0.41  |
| ... FFN-out fp32 in layers 0-2 (old default)  | 0.008         | 0.420 / 0.004  | 3     | 0.45   |

QLinearMatMul re-quantizes every output to uint8 and then needs DequantizeLinear + Add; the
float-output kernel skips that rounding and those ops, so it is both closer and faster (faster
than ORT's own dynamic int8). Calibrating on the OOD windows themselves did not help QOperator
(0.961 max), so the error is resolution, not clipping: the worst items are short (6-12 tokens),
and a torch fake-quant study put the sensitivity in the FFN down-projections (GELU outputs reach
~25 against a bulk below 1) of the early layers. Per-token activation scales would fix it
(fake-quant: 0.11 max) but ONNX Runtime has no fast per-token int8 kernel on CPU (MatMulNBits is
slower than fp32); per-channel outliers turned out to be the cheaper fix (above). ``distill.export``
checks int8 against the PyTorch model on the caller's validation pairs and serves fp32 when it
fails.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Pair = tuple[str, str | None]

# The FFN down-projection of BERT / DeBERTa-v2 style encoders: ".../layer.3/output/dense/MatMul"
FFN_OUT = re.compile(r"layer\.(\d+)/output/dense/")
# Nodes with a constant weight that are quantized: op type -> domain.
WEIGHT_OPS = {"MatMul": "", "Attention": "com.microsoft"}


@dataclass(frozen=True)
class Int8Scheme:
    """Which MatMuls stay fp32, and how much calibration data to use.

    ``exclude``: regexes of MatMul node names kept fp32. ``fp32_ffn_out_fraction``: keep the FFN
    down-projection of this leading fraction of the encoder layers in fp32 (0 = none).
    ``outlier_factor`` / ``max_outlier_channels``: input channels of a MatMul whose calibrated
    max |x| exceeds ``outlier_factor`` x the median channel's are multiplied in fp32 (at most
    ``max_outlier_channels`` of them, the largest), so they no longer set the int8 scale of the
    rest (0 channels = off).
    """

    fp32_ffn_out_fraction: float = 0.0
    exclude: tuple[str, ...] = field(default_factory=tuple)
    max_calibration_windows: int = 512
    weight_bits: int = 7
    outlier_factor: float = 4.0
    max_outlier_channels: int = 8
    outlier_nodes: str = FFN_OUT.pattern

    def describe(self) -> dict[str, Any]:
        return {"kind": "static-minmax-matmul-integer-to-float", **asdict(self)}


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


def fp32_nodes(model: Any, scheme: Int8Scheme) -> set[str]:
    """Weight nodes the scheme keeps in fp32: ``exclude`` matches and the leading FFN-outs."""
    names = [node.name for node in model.graph.node if node.op_type in WEIGHT_OPS]
    kept = {name for name in names if any(re.search(p, name) for p in scheme.exclude)}
    ffn_out = [(int(m.group(1)), name) for name in names if (m := FFN_OUT.search(name))]
    if ffn_out:
        layers = max(layer for layer, _ in ffn_out) + 1
        first = math.ceil(scheme.fp32_ffn_out_fraction * layers)
        kept |= {name for layer, name in ffn_out if layer < first}
    return kept


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
    """Write a static int8 copy of ``fp32_path`` to ``out_path``; return a description of it.

    ``calibration_pairs`` should be varied training data: prompts and (prompt, response) pairs,
    short and long, both classes; they are cut into serving windows of ``max_length`` tokens.
    """
    import onnx

    model = onnx.load(str(fp32_path))
    input_names = [node.name for node in model.graph.input]
    feeds = calibration_feeds(
        tokenizer_dir,
        calibration_pairs,
        input_names=input_names,
        max_length=max_length,
        stride=stride,
        limit=scheme.max_calibration_windows,
    )
    kept = fp32_nodes(model, scheme)
    quantized = quantize_integer_to_float(model, feeds, kept, scheme)
    onnx.save(model, str(out_path))
    return {
        **scheme.describe(),
        "calibration_windows": len(feeds),
        "quantized_nodes": len(quantized),
        "fp32_nodes": sorted(kept),
        "fp32_outlier_channels": {
            name: channels for name, channels in sorted(quantized.items()) if channels
        },
    }


def activation_ranges(
    model: Any, names: Sequence[str], feeds: Sequence[dict[str, np.ndarray]]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel (last axis) min and max of the named float tensors over ``feeds`` (MinMax
    calibration)."""
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
    ranges: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(list(names), feed), strict=True):
            rows = value.reshape(-1, value.shape[-1])
            low, high = rows.min(axis=0), rows.max(axis=0)
            if name in ranges:
                low, high = np.minimum(low, ranges[name][0]), np.maximum(high, ranges[name][1])
            ranges[name] = (low, high)
    return ranges


def outlier_channels(
    value_range: tuple[np.ndarray, np.ndarray], factor: float, limit: int
) -> list[int]:
    """Input channels whose max |x| exceeds ``factor`` x the median channel's, largest first,
    at most ``limit``: BERT's GELU outputs have one or two channels reaching ~25 where the others
    stay under ~6, and those alone would set the int8 step of every channel."""
    if limit <= 0:
        return []
    magnitude = np.maximum(np.abs(value_range[0]), np.abs(value_range[1]))
    cutoff = factor * float(np.median(magnitude))
    order = np.argsort(-magnitude, kind="stable")[:limit]
    return sorted(int(c) for c in order if magnitude[c] > cutoff)


def quantize_integer_to_float(
    model: Any,
    feeds: Sequence[dict[str, np.ndarray]],
    keep_fp32: set[str],
    scheme: Int8Scheme = DEFAULT_SCHEME,
) -> dict[str, list[int]]:
    """Rewrite ``model`` in place: every MatMul with a constant 2-D weight (not in ``keep_fp32``)
    becomes ``QuantizeLinear(X) -> MatMulIntegerToFloat(Xq, Wq, ..., bias)``, the bias Add that
    follows folded in, and every fused ``Attention`` (com.microsoft) becomes ``QAttention`` with
    the same static activation quantization.

    Where the node's name matches ``scheme.outlier_nodes``, no ``Attention`` reads ``X`` and a few
    of its channels are outliers (:func:`outlier_channels`), those channels are taken out of the
    int8 product (their weight rows zeroed, their range out of the scale) and added back in fp32:
    ``Gather(X, channels) -> MatMul(W[channels])`` (LLM.int8()'s decomposition with channels
    fixed at calibration). Returns each quantized node's name with its fp32 channels."""
    from onnx import helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    targets = [
        node
        for node in graph.node
        if node.op_type in WEIGHT_OPS
        and node.domain == WEIGHT_OPS[node.op_type]
        and node.name not in keep_fp32
        and node.input[1] in weights
        and len(weights[node.input[1]].dims) == 2
    ]
    ranges = activation_ranges(model, sorted({node.input[0] for node in targets}), feeds)
    # Inputs of MatMuls that match ``outlier_nodes`` and that no Attention reads.
    eligible = {node.input[0] for node in targets if re.search(scheme.outlier_nodes, node.name)} - {
        node.input[0] for node in targets if node.op_type == "Attention"
    }
    splits = {
        x_name: outlier_channels(value_range, scheme.outlier_factor, scheme.max_outlier_channels)
        if x_name in eligible
        else []
        for x_name, value_range in ranges.items()
    }
    quantized_inputs: dict[str, list[str]] = {}
    gathered: dict[str, str] = {}  # X -> X[..., outlier channels]
    replacement: dict[int, list[Any]] = {}  # id(original node) -> the nodes emitted instead
    dropped: set[int] = set()
    for node in targets:
        emitted = []
        x_name = node.input[0]
        channels = splits[x_name]
        if x_name not in quantized_inputs:
            low, high = ranges[x_name]
            inliers = np.ones(len(low), dtype=bool)
            inliers[channels] = False
            scale_range = (float(low[inliers].min()), float(high[inliers].max()))
            quantized_inputs[x_name] = _add_activation_quantizer(graph, x_name, scale_range)
            x_q, x_scale, x_zero = quantized_inputs[x_name]
            emitted.append(helper.make_node("QuantizeLinear", [x_name, x_scale, x_zero], [x_q]))
            if channels:
                gather = _outlier_gather(graph, x_name, channels)
                gathered[x_name] = gather.output[0]
                emitted.append(gather)
        x_q, x_scale, x_zero = quantized_inputs[x_name]
        weight = weights[node.input[1]]
        w_q, w_scale, width = _add_weight_quantizer(
            graph, weight, scheme.weight_bits, zero_rows=channels
        )
        if node.op_type == "Attention":
            emitted.append(_quantized_attention(node, x_q, w_q, x_scale, w_scale, x_zero))
            replacement[id(node)] = emitted
            continue
        inputs = [x_q, w_q, x_scale, w_scale, x_zero, ""]
        output = node.output[0]
        bias_add = _bias_add(consumers.get(output, []), output, weights, width)
        if bias_add is not None:
            add, bias_name = bias_add
            inputs.append(bias_name)
            output = add.output[0]
            dropped.add(id(add))
        int8_output = f"{output}_int8_part" if channels else output
        emitted.append(
            helper.make_node(
                "MatMulIntegerToFloat",
                inputs,
                [int8_output],
                name=f"{node.name}_int8",
                domain="com.microsoft",
            )
        )
        if channels:
            emitted.extend(
                _outlier_product(
                    graph, node, weight, gathered[x_name], channels, int8_output, output
                )
            )
        replacement[id(node)] = emitted
    nodes = [
        new
        for node in graph.node
        if id(node) not in dropped
        for new in replacement.get(id(node), [node])
    ]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    initializers = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return {node.name: splits[node.input[0]] for node in targets}


def _outlier_gather(graph: Any, x_name: str, channels: list[int]) -> Any:
    """``X[..., channels]``, read by the fp32 products of every MatMul on ``X``."""
    from onnx import helper, numpy_helper

    index = f"{x_name}_outlier_channels"
    graph.initializer.append(numpy_helper.from_array(np.array(channels, dtype=np.int64), index))
    return helper.make_node("Gather", [x_name, index], [f"{x_name}_outliers"], axis=-1)


def _outlier_product(
    graph: Any, node: Any, weight: Any, outliers: str, channels: list[int], int8: str, output: str
) -> list[Any]:
    """``output = int8 + outliers @ W[channels]`` in fp32 (``outliers`` = ``X[..., channels]``)."""
    from onnx import helper, numpy_helper

    rows = f"{weight.name}_outlier_rows"
    matrix = numpy_helper.to_array(weight).astype(np.float32)[channels]
    graph.initializer.append(numpy_helper.from_array(matrix, rows))
    fp32 = f"{output}_fp32_part"
    return [
        helper.make_node("MatMul", [outliers, rows], [fp32], name=f"{node.name}_fp32"),
        helper.make_node("Add", [int8, fp32], [output], name=f"{node.name}_sum"),
    ]


def _quantized_attention(
    node: Any, x_q: str, w_q: str, x_scale: str, w_scale: str, x_zero: str
) -> Any:
    """``QAttention`` for a fused ``Attention``: the QKV projection in int8 (float output, bias
    added), the attention itself in fp32, exactly as the float op computes it."""
    from onnx import helper

    bias = node.input[2] if len(node.input) > 2 else ""
    mask = node.input[3] if len(node.input) > 3 else ""
    if len(node.input) > 4 and any(node.input[4:]):
        raise ValueError(f"{node.name}: Attention with past state or bias inputs is not supported")
    attributes = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
    return helper.make_node(
        "QAttention",
        [x_q, w_q, bias, x_scale, w_scale, mask, x_zero],
        list(node.output),
        name=f"{node.name}_int8",
        domain="com.microsoft",
        **attributes,
    )


def _add_activation_quantizer(
    graph: Any, x_name: str, value_range: tuple[float, float]
) -> list[str]:
    """Static asymmetric uint8 scale and zero point of ``x_name``; returns (xq, scale, zero)."""
    from onnx import numpy_helper

    low, high = min(value_range[0], 0.0), max(value_range[1], 0.0)
    scale = max(high - low, 1e-8) / 255.0
    zero = int(np.clip(round(-low / scale), 0, 255))
    names = [f"{x_name}_q8", f"{x_name}_q8_scale", f"{x_name}_q8_zero"]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(scale, dtype=np.float32), names[1]),
            numpy_helper.from_array(np.array(zero, dtype=np.uint8), names[2]),
        ]
    )
    return names


def _add_weight_quantizer(
    graph: Any, weight: Any, bits: int = 7, zero_rows: Sequence[int] = ()
) -> tuple[str, str, int]:
    """Symmetric per output channel (column) of a [K, N] weight in ``bits`` bits (stored as
    int8), ``zero_rows`` (input channels computed in fp32 instead) set to 0; returns
    (wq, scale, N)."""
    from onnx import numpy_helper

    if not 2 <= bits <= 8:
        raise ValueError(f"weight bits must be 2..8, not {bits}")
    limit = 2 ** (bits - 1) - 1
    matrix = numpy_helper.to_array(weight).astype(np.float32)
    matrix[list(zero_rows)] = 0.0
    scale = np.maximum(np.abs(matrix).max(axis=0), 1e-8) / limit
    quantized = np.clip(np.round(matrix / scale), -limit, limit).astype(np.int8)
    names = (f"{weight.name}_q8", f"{weight.name}_q8_scale")
    graph.initializer.extend(
        [
            numpy_helper.from_array(quantized, names[0]),
            numpy_helper.from_array(scale.astype(np.float32), names[1]),
        ]
    )
    return names[0], names[1], matrix.shape[1]


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
