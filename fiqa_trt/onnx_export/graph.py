"""ONNX graph rewriting that is exact: make a fixed batch dimension dynamic; read and write fiqa-trt metadata.

A model exported with a fixed batch of 1 (common for ONNX files found in the wild) carries the batch in three
places: the graph inputs and outputs, the intermediate shape annotations, and constant shapes fed to `Reshape`
(for example `[1, -1]` before the final fully connected layer). `make_batch_dynamic` rewrites all three; the
caller checks the result numerically against the original (see `runners.onnxruntime`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

BATCH_DIM = "batch"
METADATA_KEY = "fiqa_trt.model_config"


def ort_session(model: "onnx.ModelProto | bytes", threads: int | None = None, spin: bool = True):
    """An ONNX Runtime CPU session for a graph (proto or serialised bytes): `threads` intra-op threads (default: all
    cores), one inter-op thread, warnings off; `spin=False`: the intra-op threads sleep between runs instead of
    spinning (for many short runs beside other work). The one place a session is set up (runners, checks, exports)."""
    import os

    from fiqa_trt.errors import require

    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def fixed_batch_size(model: onnx.ModelProto) -> int | None:
    """The fixed batch size of the first graph input, or None when it is already symbolic."""
    dim0 = _real_inputs(model)[0].type.tensor_type.shape.dim[0]
    return dim0.dim_value if dim0.HasField("dim_value") else None


def _real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {init.name for init in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _constant_tensors(graph: onnx.GraphProto) -> dict[str, tuple[str, object]]:
    """name -> ('init', TensorProto) or ('node', AttributeProto) for every constant the graph holds."""
    found: dict[str, tuple[str, object]] = {init.name: ("init", init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    found[node.output[0]] = ("node", attr)
    return found


def make_batch_dynamic(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Return a copy whose batch dimension is symbolic, and the number of Reshape shapes rewritten.

    A constant Reshape target whose first entry equals the old batch size gets 0 there ("copy this dimension
    from the input", valid because `allowzero` is 0 in every graph this touches), which keeps the batch.
    """
    fixed = fixed_batch_size(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if fixed is None:
        return out, 0
    graph = out.graph
    for value in list(_real_inputs(out)) + list(graph.output):
        dim0 = value.type.tensor_type.shape.dim[0]
        dim0.ClearField("dim_value")
        dim0.dim_param = BATCH_DIM
    del graph.value_info[:]  # inferred intermediate shapes carry the old batch; ONNX Runtime re-infers them
    constants = _constant_tensors(graph)
    rewritten = 0
    shared_uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            shared_uses[name] = shared_uses.get(name, 0) + 1
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        if any(a.name == "allowzero" and a.i == 1 for a in node.attribute):
            continue
        kind, holder = constants[node.input[1]]
        tensor = holder if kind == "init" else holder.t
        shape = numpy_helper.to_array(tensor).copy()
        if shape.ndim != 1 or shape.size == 0 or shape[0] != fixed:
            continue
        shape[0] = 0
        new_tensor = numpy_helper.from_array(shape.astype(np.int64), tensor.name)
        if shared_uses.get(node.input[1], 0) > 1:  # do not change a constant another node reads
            new_name = f"{node.input[1]}__dynamic_batch"
            new_tensor.name = new_name
            graph.initializer.append(new_tensor)
            node.input[1] = new_name
        elif kind == "init":
            tensor.CopyFrom(new_tensor)
        else:
            holder.t.CopyFrom(new_tensor)
        rewritten += 1
    return out, rewritten


def graph_normalises_input(model: onnx.ModelProto) -> bool:
    """insightface's rule for its model-zoo files: a Sub and a Mul among the first 8 nodes (by op type or
    MXNet-style name) mean the graph normalises raw 0-255 pixels itself (feed mean 0, std 1)."""
    first = model.graph.node[:8]
    sub = any(n.op_type == "Sub" or n.name.startswith(("Sub", "_minus")) for n in first)
    mul = any(n.op_type == "Mul" or n.name.startswith(("Mul", "_mul")) for n in first)
    return sub and mul


def read_metadata(model: onnx.ModelProto) -> dict | None:
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return None


def write_metadata(model: onnx.ModelProto, config: dict) -> None:
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(config, sort_keys=True)


IMAGE_INPUT = "fiqa_image_u8"


def add_preprocessing(model: onnx.ModelProto, input_size: tuple[int, int], mean, std, layout: str) -> onnx.ModelProto:
    """A copy that takes decoded images as they are, uint8 (N, H, W, 3) in the model's colour order, and applies
    the model's normalisation inside the graph: Cast -> (Transpose to NCHW) -> Sub(mean) -> Div(std).

    Runners then receive 1 byte per pixel instead of 4, and backends fuse the normalisation into the first layer.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    initializers = {init.name for init in graph.initializer}
    (old,) = [i for i in graph.input if i.name not in initializers]
    batch = old.type.tensor_type.shape.dim[0]
    h, w = input_size
    new_input = onnx.helper.make_tensor_value_info(IMAGE_INPUT, onnx.TensorProto.UINT8,
                                                   [batch.dim_param or batch.dim_value or BATCH_DIM, h, w, 3])
    shape = (1, 3, 1, 1) if layout == "NCHW" else (1, 1, 1, 3)
    graph.initializer.extend([
        numpy_helper.from_array(np.asarray(mean, np.float32).reshape(shape), f"{IMAGE_INPUT}_mean"),
        numpy_helper.from_array(np.asarray(std, np.float32).reshape(shape), f"{IMAGE_INPUT}_std"),
    ])
    nodes = [onnx.helper.make_node("Cast", [IMAGE_INPUT], [f"{IMAGE_INPUT}_f32"], to=onnx.TensorProto.FLOAT)]
    source = f"{IMAGE_INPUT}_f32"
    if layout == "NCHW":
        nodes.append(onnx.helper.make_node("Transpose", [source], [f"{IMAGE_INPUT}_nchw"], perm=[0, 3, 1, 2]))
        source = f"{IMAGE_INPUT}_nchw"
    nodes += [onnx.helper.make_node("Sub", [source, f"{IMAGE_INPUT}_mean"], [f"{IMAGE_INPUT}_centred"]),
              onnx.helper.make_node("Div", [f"{IMAGE_INPUT}_centred", f"{IMAGE_INPUT}_std"], [old.name])]
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
    graph.input.remove(old)
    graph.input.insert(0, new_input)
    return out


def dims(value: onnx.ValueInfoProto) -> list[int | str]:
    """The shape of a graph input/output: ints where fixed, the symbolic name (or "?") where not."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


@dataclass
class FrGraph:
    """An ONNX file checked to be usable as an FR model: one 3-channel image input."""

    model: onnx.ModelProto
    input_dims: list
    layout: str  # "NCHW" or "NHWC"
    hw: list  # [H, W], ints where fixed
    output_dims: list

    @property
    def fixed_size(self) -> bool:
        return all(isinstance(v, int) and v > 0 for v in self.hw)


def load_fr_graph(path) -> FrGraph:
    """Load `path` and check it is an FR model graph; FiqaError with what is wrong otherwise."""
    from pathlib import Path

    from fiqa_trt.errors import FiqaError

    path = Path(path)
    if not path.is_file():
        raise FiqaError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for non-ONNX files
        raise FiqaError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not model.graph.node:
        raise FiqaError(f"{path} is not a valid ONNX model (the graph is empty)")
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise FiqaError(f"{path}: an FR model needs exactly one input, this one has {len(inputs)}")
    shape = dims(inputs[0])
    if len(shape) != 4 or 3 not in (shape[1], shape[3]):
        raise FiqaError(f"{path}: input '{inputs[0].name}' has shape {shape}; fiqa-trt needs a 3-channel image input "
                        "(N, 3, H, W) or (N, H, W, 3)")
    layout = "NCHW" if shape[1] == 3 else "NHWC"
    hw = shape[2:4] if layout == "NCHW" else shape[1:3]
    return FrGraph(model, shape, layout, hw, dims(model.graph.output[0]))
