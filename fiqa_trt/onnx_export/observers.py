"""Observer outputs: a model's intermediate activations, each reduced inside the graph to a few floats per image, as
one extra graph output.

A *layer* is an intermediate tensor of the FR graph with the batch on its first axis (a node's output: a
convolution, an activation, a residual sum, the embedding itself); `layers(model)` lists them in graph order, each
with its index and the name the tensor has in the graph. A layer is named by that tensor name, which is stable for
a given model file: `catalogue` records the list with the file's sha256 (in the user cache), so an index or a name
in a recipe refers to one tensor of one model.

`add_observers(model, Observers(layers, reductions))` returns a copy of the graph with one more output,
`fiqa_observers`, float32 (N, len(layers) * len(reductions)): per layer (in the order given) and per reduction, one
value per image computed over every axis but the batch, in float32 whatever the layer's type (a float16 graph is
reduced after a Cast, so a sum of squares cannot overflow):
- `l2`: the L2 norm of the flattened activation (FROQ's aggregation);
- `mean`: its mean; `std`: its standard deviation (population).
Only those few floats per image leave the device; the backends (ONNX Runtime, OpenVINO, TensorRT) run the rewritten
graph as any other. `observed_graph` caches the rewrite in the user cache, keyed by the model file's sha256, the
layers and the reductions.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUTPUT = "fiqa_observers"
REDUCTIONS = ("l2", "mean", "std")
FORMAT = 1  # bump when the rewritten graph changes for the same inputs (cache key)
_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)


@dataclass(frozen=True)
class Layer:
    index: int  # position among the model's layers, in graph order
    name: str  # the tensor's name in the graph
    op: str  # the op type of the node that computes it
    shape: tuple  # per-image shape (ints where known, else the symbolic name or "?")

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "op": self.op, "shape": list(self.shape)}


@dataclass(frozen=True)
class Observers:
    """Which layers a runner observes and how each is reduced: the columns of the `fiqa_observers` output."""

    layers: tuple[str, ...]
    reductions: tuple[str, ...] = ("l2",)

    def __post_init__(self) -> None:
        from fiqa_trt.errors import FiqaError

        object.__setattr__(self, "layers", tuple(dict.fromkeys(str(x) for x in self.layers)))
        object.__setattr__(self, "reductions", tuple(dict.fromkeys(self.reductions)))
        if not self.layers:
            raise FiqaError("observers: name at least one layer")
        unknown = [r for r in self.reductions if r not in REDUCTIONS]
        if unknown or not self.reductions:
            raise FiqaError(f"observers: unknown reduction(s) {', '.join(unknown) or '(none)'}; use "
                            f"{', '.join(REDUCTIONS)}")

    @property
    def columns(self) -> list[tuple[str, str]]:
        """(layer, reduction) of each output column, in order."""
        return [(layer, r) for layer in self.layers for r in self.reductions]

    def column(self, layer: str, reduction: str = "l2") -> int:
        return self.columns.index((layer, reduction))

    def key(self) -> dict:
        return {"layers": list(self.layers), "reductions": list(self.reductions)}

    def merged(self, other: "Observers | None") -> "Observers":
        """The union (this one's columns first), for one pass serving several readers."""
        if other is None:
            return self
        return Observers(self.layers + other.layers, self.reductions + other.reductions)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _batch_dim(model: onnx.ModelProto):
    initializers = {i.name for i in model.graph.initializer}
    image = [i for i in model.graph.input if i.name not in initializers][0]
    return image.type.tensor_type.shape.dim[0]


def layers(model: onnx.ModelProto) -> list[Layer]:
    """The observable layers of a graph with a symbolic batch (`graph.make_batch_dynamic` gives one), in graph
    order: every node output that shape inference gives as a float tensor of rank >= 2 whose first axis is the
    batch of the image input."""
    batch = _batch_dim(model)
    if not batch.dim_param:
        raise ValueError("layers() needs a graph with a symbolic batch (graph.make_batch_dynamic)")
    inferred = onnx.shape_inference.infer_shapes(model)
    typed = {v.name: v.type.tensor_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    found: list[Layer] = []
    for node in inferred.graph.node:
        for name in node.output:
            t = typed.get(name)
            if t is None or t.elem_type not in _FLOATS or len(t.shape.dim) < 2:
                continue
            dim0 = t.shape.dim[0]
            if dim0.dim_param != batch.dim_param:
                continue
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim[1:])
            found.append(Layer(len(found), name, node.op_type, shape))
    return found


def _reduce(op: str, source: str, out: str, axes_name: str, opset: int) -> onnx.NodeProto:
    """A ReduceL2 / ReduceMean over axis 1 of a (N, F) tensor, keeping it: (N, 1). Axes are an input from opset 18."""
    if opset >= 18:
        return helper.make_node(op, [source, axes_name], [out], keepdims=1)
    return helper.make_node(op, [source], [out], axes=[1], keepdims=1)


def add_observers(model: onnx.ModelProto, observers: Observers) -> onnx.ModelProto:
    """A copy of `model` with the output `OUTPUT`: float32 (N, columns), the reductions of `observers.layers`."""
    from fiqa_trt.errors import FiqaError

    produced = {name for node in model.graph.node for name in node.output}
    missing = [name for name in observers.layers if name not in produced]
    if missing:
        raise FiqaError(f"the model has no layer named {missing[0]!r} (`fiqa-trt weights layers MODEL` lists them)")
    if any(o.name == OUTPUT for o in model.graph.output):
        raise FiqaError(f"the graph already has an output {OUTPUT!r}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph, opset = out.graph, _opset(out)
    axes = f"{OUTPUT}/axes"
    if opset >= 18:
        graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), axes))
    nodes, pieces = [], []
    for i, layer in enumerate(observers.layers):
        p = f"{OUTPUT}/{i}"
        nodes += [helper.make_node("Cast", [layer], [f"{p}/f32"], to=TensorProto.FLOAT),
                  helper.make_node("Flatten", [f"{p}/f32"], [f"{p}/flat"], axis=1)]
        flat = f"{p}/flat"
        for r in observers.reductions:
            if r == "l2":
                nodes.append(_reduce("ReduceL2", flat, f"{p}/l2", axes, opset))
            elif r == "mean":
                nodes.append(_reduce("ReduceMean", flat, f"{p}/mean", axes, opset))
            else:  # std: sqrt(mean((x - mean)^2)), over the same flattened values
                nodes += [_reduce("ReduceMean", flat, f"{p}/m", axes, opset),
                          helper.make_node("Sub", [flat, f"{p}/m"], [f"{p}/c"]),
                          helper.make_node("Mul", [f"{p}/c", f"{p}/c"], [f"{p}/c2"]),
                          _reduce("ReduceMean", f"{p}/c2", f"{p}/var", axes, opset),
                          helper.make_node("Sqrt", [f"{p}/var"], [f"{p}/std"])]
            pieces.append(f"{p}/{r}")
    nodes.append(helper.make_node("Concat", pieces, [OUTPUT], axis=1) if len(pieces) > 1
                 else helper.make_node("Identity", pieces, [OUTPUT]))
    graph.node.extend(nodes)
    batch = _batch_dim(out)
    graph.output.append(helper.make_tensor_value_info(
        OUTPUT, TensorProto.FLOAT, [batch.dim_param or batch.dim_value or "batch", len(pieces)]))
    return out


def observer_key(sha256: str, observers: Observers, variant: dict | None = None) -> str:
    """The cache name of a rewrite: the model file's sha256, the observers, and what else shaped the graph
    (`variant`, e.g. whether its batch was made dynamic)."""
    fields = {"format": FORMAT, "sha256": sha256, **observers.key(), "variant": variant or {}}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def observed_graph(model: onnx.ModelProto, sha256: str, observers: Observers, variant: dict | None = None,
                   folder: str | os.PathLike | None = None) -> onnx.ModelProto:
    """`add_observers(model, observers)`, read from the user cache (`folder`, default <cache>/observers) when this
    rewrite of this model file was made before, else made and stored there (written atomically)."""
    from fiqa_trt.files import cache_dir

    folder = Path(folder) if folder is not None else cache_dir() / "observers"
    path = folder / f"{observer_key(sha256, observers, variant)}.onnx"
    if path.is_file():
        try:
            return onnx.load(str(path))
        except Exception:  # a damaged cache file: made again below
            pass
    rewritten = add_observers(model, observers)
    try:
        _write_atomic(path, rewritten.SerializeToString())
    except OSError:  # a read-only cache: the rewrite is cheap, run without storing it
        pass
    return rewritten


def catalogue(model: onnx.ModelProto, sha256: str, folder: str | os.PathLike | None = None) -> list[Layer]:
    """`layers(model)`, recorded once per model file in the user cache (<cache>/observers/<sha256>.layers.json), so
    that a layer's index and name are those of this file."""
    from fiqa_trt.files import cache_dir

    folder = Path(folder) if folder is not None else cache_dir() / "observers"
    path = folder / f"{sha256}.layers.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if data.get("format") == FORMAT and data.get("sha256") == sha256:
                return [Layer(d["index"], d["name"], d["op"], tuple(d["shape"])) for d in data["layers"]]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    found = layers(model)
    document = {"format": FORMAT, "sha256": sha256, "layers": [x.to_dict() for x in found]}
    try:
        _write_atomic(path, (json.dumps(document, indent=1) + "\n").encode())
    except OSError:
        pass
    return found


def resolve_layer(found: list[Layer], ref: str) -> str:
    """A layer's tensor name from a reference: its name, or `#<index>` into `found`."""
    from fiqa_trt.errors import FiqaError

    if ref.startswith("#") and ref[1:].isdigit():
        index = int(ref[1:])
        if index >= len(found):
            raise FiqaError(f"layer {ref}: the model has {len(found)} observable layers (#0-#{len(found) - 1})")
        return found[index].name
    if not any(x.name == ref for x in found):
        raise FiqaError(f"the model has no observable layer named {ref!r}")
    return ref
