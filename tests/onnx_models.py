"""Small ONNX graphs written with onnx.helper (no training framework needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def conv_classifier(path: Path, batch: int | str = "N", seed: int = 0) -> Path:
    """image [batch, 3, 8, 8] float32 → conv 3x3 (4) → global pool → softmax → probs [batch, 4].

    ``batch`` is a symbolic name (any batch) or a fixed size; the weights depend on
    ``seed`` only, so two batch variants compute the same function.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    bias = rng.normal(0, 0.1, (4,)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "W", "B"], ["conv"]),
        helper.make_node("GlobalAveragePool", ["conv"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["logits"], axis=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 4])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")],
    )
    _save(graph, path)
    return path


def two_inputs(path: Path) -> Path:
    """a float32 [N, 3] + b int64 [N, 3] → total = a + float(b) [N, 3], norm float32 [N, 1]."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "b_float"], ["total"]),
        helper.make_node("ReduceSum", ["total", "axes"], ["norm"], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 3]),
        ],
        [
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("norm", TensorProto.FLOAT, ["N", 1]),
        ],
        initializer=[numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    _save(graph, path)
    return path


def _save(graph: Any, path: Path) -> None:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime this backend supports
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def lookup_table(path: Path, megabytes: int = 96) -> Path:
    """ids int64 [N, 4] → values float32 [N, 4], gathered from a table of ``megabytes``.

    A model whose weights are big and cannot be folded away (the lookup depends on the
    input), for measuring the memory a model holds while loaded. values[i] = ids[i] * 0.5
    for every id (the table is arange(K) / 2).
    """
    from onnx import TensorProto, helper, numpy_helper

    size = megabytes * 1024 * 1024 // 4
    table = (np.arange(size, dtype=np.float32) / 2).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["values"], axis=0)],
        "lookup_table",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 4])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["N", 4])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    _save(graph, path)
    return path


def times_scalar(path: Path) -> Path:
    """x float32 [N, 2] and k float32 [] (a scalar: no batch dimension) → y = k·x [N, 2]."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        "times_scalar",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("k", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
    )
    _save(graph, path)
    return path
