"""Small random-weight ONNX models built with onnx.helper, for format and graph-rewrite checks (not accuracy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def fixed_batch_embedder(path: Path, input_shape=(1, 3, 112, 112), dim: int = 64, seed: int = 0,
                         shape_as_constant_node: bool = False, transpose_input: bool = False) -> Path:
    """Conv(stride 4) -> PRelu -> Conv(stride 4) -> Reshape([batch, -1]) -> Gemm: a miniature FR network.

    transpose_input: the graph takes NHWC (`input_shape` given as (1, H, W, C)) and transposes it first."""
    rng = np.random.default_rng(seed)
    if transpose_input:
        b, h, w, c = input_shape
    else:
        b, c, h, w = input_shape
    w1 = rng.standard_normal((8, c, 3, 3)).astype(np.float32) * 0.2
    w2 = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2
    out = lambda n: ((n - 1) // 4 + 1 - 1) // 4 + 1  # noqa: E731  two convs: kernel 3, stride 4, pad 1
    flat = 8 * out(h) * out(w)
    fc = rng.standard_normal((flat, dim)).astype(np.float32) * 0.05
    slope = np.full((8, 1, 1), 0.25, np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(w1, "w1"), (w2, "w2"), (fc, "fc"), (slope, "slope")]]
    nodes = [helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2])] if transpose_input else []
    nodes += [
        helper.make_node("Conv", ["nchw" if transpose_input else "input", "w1"], ["c1"], strides=[4, 4],
                         pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["c1", "slope"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[4, 4], pads=[1, 1, 1, 1]),
    ]
    shape = numpy_helper.from_array(np.array([b, -1], np.int64), "shape")
    if shape_as_constant_node:
        nodes.append(helper.make_node("Constant", [], ["shape"], value=shape))
    else:
        inits.append(shape)
    nodes += [helper.make_node("Reshape", ["c2", "shape"], ["flat"]),
              helper.make_node("MatMul", ["flat", "fc"], ["output"])]
    graph = helper.make_graph(nodes, "random_embedder",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [b, dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def non_image_model(path: Path) -> Path:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "not_an_image",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _dynamic_conv_model(path: Path, tail: list, tail_output: str, output_shape: list, extra_inits=()) -> Path:
    """Conv(3->8, stride 4) on a dynamic-batch (N, 3, 112, 112) input, followed by the `tail` nodes."""
    rng = np.random.default_rng(3)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.2, "w1")
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], strides=[4, 4], pads=[1, 1, 1, 1]), *tail]
    graph = helper.make_graph(nodes, "odd_output",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 112, 112])],
                              [helper.make_tensor_value_info(tail_output, TensorProto.FLOAT, output_shape)],
                              [w1, *extra_inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def scalar_output_model(path: Path) -> Path:
    """One number per image, (N,): not an embedding (every cosine would be +-1, every quality 1.0)."""
    return _dynamic_conv_model(path, [helper.make_node("ReduceMean", ["c1"], ["output"], axes=[1, 2, 3], keepdims=0)],
                               "output", ["N"])


def batch_mixing_model(path: Path) -> Path:
    """(N, D) embeddings minus their mean over the batch: each image's embedding depends on its batch."""
    return _dynamic_conv_model(path, [
        helper.make_node("Flatten", ["c1"], ["flat"], axis=1),
        helper.make_node("ReduceMean", ["flat"], ["batch_mean"], axes=[0], keepdims=1),
        helper.make_node("Sub", ["flat", "batch_mean"], ["output"]),
    ], "output", ["N", 8 * 28 * 28])


def channel_mean_embedder(path: Path, size: int = 112, opset: int = 17) -> Path:
    """A model whose embedding is the mean of each channel of the normalised input it receives, (N, 3) from
    (N, 3, size, size), no metadata: what the runner fed it is read back from its output."""
    nodes = [helper.make_node("ReduceMean", ["input"], ["embedding"], axes=[2, 3], keepdims=0)]
    graph = helper.make_graph(
        nodes, "channel_means",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
