"""A small ONNX -> PyTorch importer for plain convolutional FR models (the shared MobileFaceNet and its kind), so
that the PyTorch CUDA runner (fp16/bf16 autocast, channels-last, CUDA graphs) can run an ONNX file where TensorRT
is not installed.

The graph is interpreted node by node in topological order; initialisers become parameters (frozen). Supported:
Conv, PRelu, Relu, Add, Mul, Sub, BatchNormalization, Flatten, Reshape, Gemm, MatMul, Identity. A Reshape to a
constant shape whose first entry is 1 (a fixed-batch export) keeps the batch dynamic, as `graph.make_dynamic_batch`
does for the ONNX runners. Anything else raises a FiqaError naming the operator.
"""

from __future__ import annotations

from fiqa_trt.errors import FiqaError

SUPPORTED = ("Conv", "PRelu", "Relu", "Add", "Mul", "Sub", "BatchNormalization", "Flatten", "Reshape", "Gemm",
             "MatMul", "Identity")


def load(path):
    """torch.nn.Module: float32 NCHW (the ONNX input, normalised as the model expects) -> the model's output."""
    import onnx
    import torch
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    unsupported = sorted({n.op_type for n in graph.node} - set(SUPPORTED))
    if unsupported:
        raise FiqaError(f"{path}: the ONNX-to-PyTorch importer does not support {', '.join(unsupported)}")
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in inits]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise FiqaError(f"{path}: expected one image input and one output")

    class Imported(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = torch.nn.ParameterList()
            self._index: dict[str, int] = {}
            for name, array in inits.items():
                if array.dtype.kind == "f":
                    self._index[name] = len(self.weights)
                    self.weights.append(torch.nn.Parameter(torch.from_numpy(array.copy()), requires_grad=False))
            self.constants = {k: v for k, v in inits.items() if v.dtype.kind != "f"}
            self.nodes = [(n.op_type, list(n.input), list(n.output),
                           {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}) for n in graph.node]
            self.input_name, self.output_name = inputs[0], graph.output[0].name

        def forward(self, x):
            env = {self.input_name: x}

            def get(name):
                if name in env:
                    return env[name]
                if name in self._index:
                    return self.weights[self._index[name]]
                return self.constants[name]

            for op, ins, outs, att in self.nodes:
                env[outs[0]] = _apply(torch, op, [get(i) if i else None for i in ins], att)
            return env[self.output_name]

    return Imported().eval()


def _apply(torch, op, args, att):
    F = torch.nn.functional
    if op == "Conv":
        x, w, b = (args + [None])[:3]
        pads = att.get("pads", [0, 0, 0, 0])
        if pads[:2] != pads[2:]:
            raise FiqaError("Conv with asymmetric padding is not supported by the importer")
        return F.conv2d(x, w, b, stride=tuple(att.get("strides", [1, 1])), padding=tuple(pads[:2]),
                        dilation=tuple(att.get("dilations", [1, 1])), groups=att.get("group", 1))
    if op == "PRelu":
        x, slope = args
        slope = slope.to(x.dtype)
        return torch.where(x >= 0, x, x * (slope.reshape(1, -1, 1, 1) if slope.dim() == 1 else slope))
    if op == "Relu":
        return torch.relu(args[0])
    if op in ("Add", "Mul", "Sub"):
        a, b = (torch.as_tensor(v, device=args[0].device) if not torch.is_tensor(v) else v for v in args)
        return {"Add": torch.add, "Mul": torch.mul, "Sub": torch.sub}[op](a, b)
    if op == "BatchNormalization":
        x, scale, bias, mean, var = args
        return F.batch_norm(x, mean, var, scale, bias, training=False, eps=att.get("epsilon", 1e-5))
    if op == "Flatten":
        return torch.flatten(args[0], att.get("axis", 1))
    if op == "Reshape":
        x, shape = args
        shape = [int(s) for s in (shape.tolist() if hasattr(shape, "tolist") else shape)]
        if shape and shape[0] == 1:  # a fixed-batch export: keep the batch
            shape[0] = x.shape[0]
        return x.reshape([x.shape[i] if s == 0 else s for i, s in enumerate(shape)])
    if op == "Gemm":
        a, b, c = (args + [None])[:3]
        a = a.transpose(0, 1) if att.get("transA", 0) else a
        b = b.transpose(0, 1) if att.get("transB", 0) else b
        out = att.get("alpha", 1.0) * (a @ b)
        return out + att.get("beta", 1.0) * c if c is not None else out
    if op == "MatMul":
        return args[0] @ args[1]
    if op == "Identity":
        return args[0]
    raise FiqaError(f"the ONNX-to-PyTorch importer does not support {op}")
