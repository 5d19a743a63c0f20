"""FP32 -> FP16 conversion of an ONNX graph, for strongly typed engines (TensorRT 11 builds what the types say).

Every float32 tensor becomes float16: initializers, Constant nodes, Cast targets, graph inputs and outputs, so the
weights are stored and every operator computes in half precision. With `keep_io_types` (the default) the graph keeps
float32 inputs and outputs and converts at its edges with explicit Cast nodes; otherwise the inputs and outputs are
float16 too. The result is checked with onnx's strict shape and type inference. Pure onnx + numpy (no torch).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger("fiqa_trt")
FP16_MAX = float(np.finfo(np.float16).max)


def _half_tensor(tensor: TensorProto) -> TensorProto:
    values = numpy_helper.to_array(tensor)
    big = np.abs(values[np.isfinite(values)]) > FP16_MAX if values.size else np.zeros(0, bool)
    if big.any():
        log.warning("%s: %d value(s) beyond the float16 range, clipped to +-%g", tensor.name, int(big.sum()), FP16_MAX)
    halved = np.clip(values, -FP16_MAX, FP16_MAX).astype(np.float16)
    out = numpy_helper.from_array(halved, tensor.name)
    return out


def _retype(values) -> None:
    for value in values:
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type == TensorProto.FLOAT:
            tensor_type.elem_type = TensorProto.FLOAT16


def convert_to_fp16(model: onnx.ModelProto, keep_io_types: bool = True) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    if any(node.op_type in ("Loop", "If", "Scan") for node in graph.node):
        raise ValueError("graphs with subgraphs are not supported by the fp16 conversion")
    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            graph.initializer[i].CopyFrom(_half_tensor(init))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(_half_tensor(attr.t))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    del graph.value_info[:]  # re-inferred below
    float_inputs = [i for i in graph.input if i.type.tensor_type.elem_type == TensorProto.FLOAT]
    float_outputs = [o for o in graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT]
    if keep_io_types:
        head, tail = [], []
        for value in float_inputs:
            inner = f"{value.name}__fp16"
            for node in graph.node:
                node.input[:] = [inner if n == value.name else n for n in node.input]
            head.append(helper.make_node("Cast", [value.name], [inner], to=TensorProto.FLOAT16,
                                         name=f"{value.name}__to_fp16"))
        for value in float_outputs:
            inner = f"{value.name}__fp16"
            for node in graph.node:
                node.output[:] = [inner if n == value.name else n for n in node.output]
                node.input[:] = [inner if n == value.name else n for n in node.input]
            tail.append(helper.make_node("Cast", [inner], [value.name], to=TensorProto.FLOAT,
                                         name=f"{value.name}__to_fp32"))
        nodes = head + list(graph.node) + tail
        del graph.node[:]
        graph.node.extend(nodes)
    else:
        _retype(graph.input)
        _retype(graph.output)
    inferred = onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=True)
    onnx.checker.check_model(inferred)
    return inferred
