"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) as ONNX, and its chip geometry.

Owns: a reader of dlib's `serialize()` format for that network (written from the format, dlib is never imported;
see the notes above `_Reader`), its exact ONNX equivalent (opset 17, dynamic batch; notes above `_network_nodes`),
and the fixed warp from fiqa-trt's ArcFace 112x112 crops to dlib's 150x150 face chips, as an OpenCV function and
baked into a 112-input variant of the model (the fiqa-trt default model, `engine.models`).

dlib's input layer computes (pixel - avg_channel) / 256; the graphs take that normalised NCHW RGB tensor and the
fiqa-trt metadata carries mean = the avg_red/green/blue stored in the file (122.782, 117.001, 104.298), std = 256,
so runners prepend the same Sub/Div (`graph.add_preprocessing`).

Geometry. dlib's chip is `get_face_chip_details(shape, 150, 0.25)` of its 5-point landmarks (eye corners and the
base of the nose), ArcFace's template uses eye centres, nose tip and mouth corners, so no analytic mapping exists;
`ARCFACE112_TO_DLIB150` (crop pixel -> chip pixel, pixel centres at integer coordinates) was measured by
`benchmarks/dlib_geometry.py` on 994 shared LFW crops (results in benchmarks/results/dlib_geometry.json): dlib's HOG
detector + 5-point predictor on each crop (border-padded), dlib's own image -> chip mapping rebuilt from
`get_face_chip_details` + `get_mapping_to_chip` (checked against `dlib.get_face_chip`: mean |diff| 0.49 grey
levels), the crops' alignment template mapped through each face's mapping, and one least-squares similarity
fitted to all of them. The shared crops are not on ArcFace's 112x112 template: dlib's 68-point predictor puts their
eye centres, nose tip and mouth corners (-8.64, -0.36) px off it on average, i.e. they follow the 96x112
MTCNN/SphereFace template in a 112-wide frame (ArcFace's minus 8 px in x). So the
fit uses that template, and the matrix is the fit composed with the 8 px shift: it is for true ArcFace crops.
Cross-check without that assumption: fitting ArcFace's template directly to the 68-point estimates of its five
points mapped into the chip gives a similarity within 2.3 px (in the chip) of this one over the face.
Resampling is bilinear with the border replicated (`arcface112_to_dlib150`: cv2.warpAffine; the 112-input model:
GridSample, padding "border", align_corners=1, constant grid): the chip reaches below the crop (chin, neck), and
replication commutes with the per-channel normalisation runners apply before the graph, so both warps agree.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fiqa_trt.errors import FiqaError

# Bump when the exported graph changes in any way: cached conversions are keyed by it (engine.models).
IMPORTER_VERSION = 1
OPSET = 17
CHIP_SIZE = 150
CROP_SIZE = 112
MODEL_NAME = "dlib-resnet-v1"

# ArcFace 112x112 crop pixel (x, y, 1) -> dlib 150x150 chip pixel (x, y): a similarity, scale 1.5200, rotation
# +0.45 deg (ArcFace's template eye line is tilted by -0.32 deg, dlib's is level), measured on 994 shared LFW faces
# by benchmarks/dlib_geometry.py ("B_..." in benchmarks/results/dlib_geometry.json; see the module docstring).
ARCFACE112_TO_DLIB150 = np.array([
    [1.5199757, -0.0119714, -9.7616633],
    [0.0119714, 1.5199757, -34.0690550],
], dtype=np.float64)


class DlibFormatError(FiqaError):
    """The file is not dlib's serialized face-recognition ResNet (or is truncated)."""


# --------------------------------------------------------------------------------------------------------------
# The byte format, as dlib's public sources define it (dlib/serialize.h, float_details.h, cuda/tensor.h,
# dnn/{core,input,layers,loss}.h):
# - an integer: one control byte (bit 7: negative; bits 0-3: n) and n little-endian magnitude bytes;
# - a float/double: two integers, mantissa then exponent (value = mantissa * 2**exponent; exponents 32000, 32001,
#   32002 mean +inf, -inf, NaN); a bool: the ASCII byte '1' or '0'; a string: its length (integer), its bytes;
# - a tensor: the integer 2 (version), num_samples, k, nr, nc, then that many little-endian IEEE float32; an alias
#   tensor (a shape only): the integer 1 and four integers;
# - the network, outermost first: the loss layer (version 1, its details, then the rest); each `add_layer`
#   (version 1/2, the whole subnetwork, then its own details and training state); `tag`/`skip` (version 1, the
#   subnetwork); innermost the layer on the input (version 2/3: the input layer's details, then its own). A tag or
#   skip cannot be told from a layer by its version, so the reader walks the known architecture (`_architecture`,
#   dlib's anet_type) and checks every layer's name string and shape against it.


class _Reader:
    def __init__(self, data: bytes, name: str):
        self.data, self.pos, self.name = data, 0, name

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(
            f"{self.name} is not a dlib face-recognition network (dlib_face_recognition_resnet_model_v1.dat, as "
            f"shipped by the PyPI package face_recognition_models): {what} at byte {self.pos}")

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail("unexpected end of file")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if control & 0x70 or size == 0 or size > 8:
            raise self.fail(f"invalid integer control byte 0x{control:02x}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        special = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
        if exponent in special:
            return special[exponent]
        if not -(1 << 15) <= exponent < (1 << 15):  # an int16 in dlib
            raise self.fail(f"invalid float exponent {exponent}")
        try:
            return math.ldexp(float(mantissa), exponent)
        except OverflowError:
            return math.copysign(math.inf, mantissa)

    def bool(self) -> bool:
        byte = self._take(1)
        if byte not in (b"0", b"1"):
            raise self.fail(f"invalid bool byte {byte!r}")
        return byte == b"1"

    def string(self, max_len: int = 64) -> str:
        n = self.int()
        if not 0 <= n <= max_len:
            raise self.fail(f"implausible string length {n}")
        raw = self._take(n)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"non-text string {raw[:16]!r}") from None

    def expect_version(self, allowed: tuple[int, ...], what: str) -> int:
        version = self.int()
        if version not in allowed:
            raise self.fail(f"{what} version {version} (expected {' or '.join(map(str, allowed))})")
        return version

    def tensor(self) -> np.ndarray:
        self.expect_version((2,), "tensor")
        shape = tuple(self.int() for _ in range(4))
        if any(not 0 <= d < (1 << 31) for d in shape):
            raise self.fail(f"invalid tensor shape {shape}")
        count = math.prod(shape)
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        self.expect_version((1,), "alias tensor")
        shape = tuple(self.int() for _ in range(4))
        if any(not 0 <= d < (1 << 31) for d in shape):
            raise self.fail(f"invalid tensor shape {shape}")
        return shape


# --------------------------------------------------------------------------------------------------------------
# the architecture (dlib's anet_type) and the layers read from the file


@dataclass
class Layer:
    kind: str  # input, con, affine, relu, max_pool, avg_pool, add_prev, fc, tag, skip
    arg: int = 0  # filters for con, outputs for fc, the tag id for tag/skip/add_prev
    window: tuple[int, int] = (0, 0)  # con/pool: (nr, nc) as the template declares; 0 = the whole input
    stride: tuple[int, int] = (1, 1)
    data: dict = field(default_factory=dict)  # what the file holds: weights, padding, ...


def _architecture() -> list[Layer]:
    """dlib's anet_type, innermost (input) first: the order the network computes in."""
    layers: list[Layer] = [Layer("input"), Layer("con", 32, (7, 7), (2, 2)), Layer("affine"), Layer("relu"),
                           Layer("max_pool", 0, (3, 3), (2, 2))]

    def block(n: int, stride: int) -> list[Layer]:  # BN<con<N,3,3,1,1,relu<BN<con<N,3,3,s,s,...>>>>>
        return [Layer("con", n, (3, 3), (stride, stride)), Layer("affine"), Layer("relu"),
                Layer("con", n, (3, 3), (1, 1)), Layer("affine")]

    def ares(n: int) -> list[Layer]:  # relu<add_prev1<block<N,affine,1,tag1<...>>>>
        return [Layer("tag", 1), *block(n, 1), Layer("add_prev", 1), Layer("relu")]

    def ares_down(n: int) -> list[Layer]:  # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<...>>>>>>>
        return [Layer("tag", 1), *block(n, 2), Layer("tag", 2), Layer("skip", 1),
                Layer("avg_pool", 0, (2, 2), (2, 2)), Layer("add_prev", 2), Layer("relu")]

    for level in ([ares(32)] * 3,                                      # alevel4
                  [ares_down(64)] + [ares(64)] * 3,                    # alevel3
                  [ares_down(128)] + [ares(128)] * 2,                  # alevel2
                  [ares_down(256)] + [ares(256)] * 2,                  # alevel1
                  [ares_down(256)]):                                   # alevel0
        for unit in level:
            layers += [Layer(x.kind, x.arg, x.window, x.stride) for x in unit]
    layers += [Layer("avg_pool", 0, (0, 0), (1, 1)), Layer("fc", 128)]  # avg_pool_everything, fc_no_bias<128>
    return layers


@dataclass
class DlibNetwork:
    layers: list[Layer]  # input first
    avg_rgb: tuple[float, float, float]
    input_size: int
    embedding_size: int


def read_dlib_network(path: str | Path) -> DlibNetwork:
    """Parse `dlib_face_recognition_resnet_model_v1.dat`. DlibFormatError (a FiqaError) for anything else."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FiqaError(f"cannot read the dlib model {path}: {exc.strerror or exc}") from None
    reader = _Reader(data, path.name)
    layers = _architecture()
    reader.expect_version((1,), "loss layer")
    loss = reader.string()
    if loss == "loss_metric_2":
        reader.float(), reader.float()  # margin, distance threshold: training only
    elif loss != "loss_metric_":
        raise reader.fail(f"loss layer {loss!r} (expected loss_metric_)")
    try:
        _read_subnet(reader, layers, len(layers) - 1)
    except (ValueError, IndexError, OverflowError) as exc:  # inconsistent sizes that the checks did not name
        raise reader.fail(f"inconsistent layer data ({exc})") from None
    if reader.pos != len(data):
        raise reader.fail(f"{len(data) - reader.pos} bytes left after the network")
    first = layers[0].data
    return DlibNetwork(layers, first["avg_rgb"], first["size"], layers[-1].arg)


def _read_subnet(reader: _Reader, layers: list[Layer], i: int) -> None:
    """Read layer i and everything below it, in dlib's nesting order (recursion depth ~ 150)."""
    layer = layers[i]
    if layer.kind in ("tag", "skip"):
        if i == 1:
            raise reader.fail("a tag on the input layer")  # never in this architecture
        reader.expect_version((1,), f"{layer.kind} layer")
        _read_subnet(reader, layers, i - 1)
        return
    if i == 1:  # add_layer on the input layer
        version = reader.expect_version((2, 3), "input add_layer")
        _read_input(reader, layers[0])
        _read_details(reader, layer)
        _read_training_state(reader)
        reader.tensor()  # grad_final
        if version >= 3:
            reader.int()  # sample expansion factor
        return
    version = reader.expect_version((1, 2), "add_layer")
    _read_subnet(reader, layers, i - 1)
    _read_details(reader, layer)
    _read_training_state(reader)
    if version == 2:
        reader.tensor()  # params_grad


def _read_training_state(reader: _Reader) -> None:
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, get_output_and_gradient_input_disabled
        reader.bool()
    reader.tensor()  # x_grad
    reader.tensor()  # cached_output


def _read_input(reader: _Reader, layer: Layer) -> None:
    name = reader.string()
    if name != "input_rgb_image_sized":
        raise reader.fail(f"input layer {name!r} (expected input_rgb_image_sized)")
    avg = tuple(reader.float() for _ in range(3))
    nr, nc = reader.int(), reader.int()
    if nr != nc or nr <= 0:
        raise reader.fail(f"input size {nr}x{nc}")
    layer.data.update(avg_rgb=avg, size=nr)


def _read_details(reader: _Reader, layer: Layer) -> None:
    name = reader.string()
    kind = layer.kind
    if kind == "con":
        if name not in ("con_4", "con_5", "con_6"):
            raise reader.fail(f"layer {name!r} where a convolution (con_) belongs")
        params = reader.tensor()
        filters = reader.int()
        nr, nc, sy, sx, py, px = (reader.int() for _ in range(6))
        filt_shape = reader.alias_tensor()
        bias_shape = reader.alias_tensor()
        for _ in range(4):
            reader.float()  # learning-rate and weight-decay multipliers
        use_bias = reader.bool() if name in ("con_5", "con_6") else True
        use_relu = reader.bool() if name == "con_6" else False
        if (filters, (nr, nc), (sy, sx)) != (layer.arg, layer.window, layer.stride):
            raise reader.fail(f"convolution {filters} filters {nr}x{nc} stride {sy}x{sx} (expected {layer.arg} "
                              f"{layer.window} stride {layer.stride})")
        n_weights = math.prod(filt_shape)
        if filt_shape[0] != filters or filt_shape[2:] != (nr, nc) or params.size != n_weights + use_bias * filters:
            raise reader.fail(f"convolution parameters of size {params.size} for filters {filt_shape}")
        if use_bias and bias_shape[1] != filters:
            raise reader.fail(f"convolution bias shape {bias_shape} for {filters} filters")
        flat = params.reshape(-1)
        layer.data.update(weight=flat[:n_weights].reshape(filt_shape).copy(),
                          bias=flat[n_weights:].copy() if use_bias else None, pads=(py, px), relu=use_relu)
    elif kind == "affine":
        if name in ("bn_con2", "bn_fc2"):
            _read_bn(reader, layer, name)
            return
        if name not in ("affine_", "affine_2"):
            raise reader.fail(f"layer {name!r} where an affine (batch-norm) layer belongs")
        params = reader.tensor()
        gamma_shape, _beta_shape = reader.alias_tensor(), reader.alias_tensor()
        mode = reader.int()
        disabled = reader.bool() if name == "affine_2" else False
        if disabled:
            layer.data.update(disabled=True)
            return
        if mode != 0:
            raise reader.fail(f"affine layer in mode {mode} (expected per-channel mode 0)")
        n = math.prod(gamma_shape)
        flat = params.reshape(-1)
        if flat.size != 2 * n:
            raise reader.fail(f"affine parameters of size {flat.size} for {n} channels")
        layer.data.update(gamma=flat[:n].copy(), beta=flat[n:].copy())
    elif kind == "relu":
        if name == "relu_2":
            layer.data.update(disabled=reader.bool())
        elif name != "relu_":
            raise reader.fail(f"layer {name!r} where a relu belongs")
    elif kind in ("max_pool", "avg_pool"):
        if name != f"{kind}_2":
            raise reader.fail(f"layer {name!r} where {kind}_2 belongs")
        nr, nc, sy, sx, py, px = (reader.int() for _ in range(6))
        if ((nr, nc), (sy, sx)) != (layer.window, layer.stride):
            raise reader.fail(f"{kind} {nr}x{nc} stride {sy}x{sx} (expected {layer.window} stride {layer.stride})")
        layer.data.update(pads=(py, px))
    elif kind == "add_prev":
        if name != "add_prev_":
            raise reader.fail(f"layer {name!r} where add_prev_ belongs")
    elif kind == "fc":
        if name not in ("fc_2", "fc_3"):
            raise reader.fail(f"layer {name!r} where a fully connected layer (fc_) belongs")
        outputs, inputs = reader.int(), reader.int()
        params = reader.tensor()
        weight_shape, _bias_shape = reader.alias_tensor(), reader.alias_tensor()
        bias_mode = reader.int()
        for _ in range(4):
            reader.float()
        use_bias = reader.bool() if name == "fc_3" else True
        if outputs != layer.arg or bias_mode != 1:
            raise reader.fail(f"fc layer with {outputs} outputs and bias mode {bias_mode} (expected "
                              f"fc_no_bias<{layer.arg}>)")
        del use_bias  # fc_no_bias: no bias whatever the flag says
        if params.size != inputs * outputs or weight_shape[:2] != (inputs, outputs):
            raise reader.fail(f"fc parameters of size {params.size} for {inputs}x{outputs}")
        layer.data.update(weight=params.reshape(inputs, outputs).copy())
    else:  # pragma: no cover - the architecture has no other kinds
        raise AssertionError(kind)


def _read_bn(reader: _Reader, layer: Layer, name: str) -> None:
    """A batch-norm layer saved where `affine` is declared: dlib converts it on load, so do we."""
    if name != "bn_con2":
        raise reader.fail(f"{name} (per-element batch norm) where a per-channel one belongs")
    params = reader.tensor()
    reader.alias_tensor(), reader.alias_tensor()  # gamma, beta shapes
    reader.tensor(), reader.tensor()  # batch means, inverse stds (training)
    running_means, running_vars = reader.tensor().reshape(-1), reader.tensor().reshape(-1)
    reader.int(), reader.int()  # num_updates, running_stats_window_size
    for _ in range(4):
        reader.float()
    eps = reader.float()
    n = running_means.size
    flat = params.reshape(-1)
    if flat.size != 2 * n:
        raise reader.fail(f"batch-norm parameters of size {flat.size} for {n} channels")
    gamma = (flat[:n] / np.sqrt(running_vars + np.float32(eps))).astype(np.float32)
    layer.data.update(gamma=gamma, beta=(flat[n:] - gamma * running_means).astype(np.float32))


# --------------------------------------------------------------------------------------------------------------
# ONNX


class _Graph:
    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, array: np.ndarray, hint: str) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        import onnx

        out = self.name(hint or op.lower())
        self.nodes.append(onnx.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _pooled(n: int, window: int, stride: int, pad: int) -> int:
    return 1 + (n + 2 * pad - window) // stride


# dlib layer -> ONNX: con -> Conv (cross-correlation, stride and padding as read); affine (batch norm frozen; a
# bn_con2 in its place is converted as dlib converts it, see _read_bn) -> Mul + Add per channel; relu -> Relu;
# max_pool/avg_pool -> MaxPool/AveragePool (dlib's size 1 + (n + 2p - w) // s; averages over the in-image part of a
# window); avg_pool_everything -> GlobalAveragePool; fc_no_bias -> Flatten + MatMul (weights stored (in, out));
# add_prev -> Pad + Add: dlib adds differently shaped tensors by zero-extending both at the end of channels, rows
# and columns. That matters here: in the strided residual blocks (avg_pool<2,2,2,2> of the block input plus the
# stride-2 conv branch) the branches differ in channels (32 -> 64, ...) and, at 8x8 -> 3x3 vs 4x4 and 4x4 -> 1x1 vs
# 2x2, in size; the smaller one lands in the top-left corner.
def _network_nodes(g: _Graph, net: DlibNetwork, x: str) -> str:
    """Append the network's nodes reading the normalised (N, 3, S, S) tensor `x`; returns the embedding's name."""
    shape = (3, net.input_size, net.input_size)  # (C, H, W) of the current value
    tags: dict[int, tuple[str, tuple[int, int, int]]] = {}
    for layer in net.layers[1:]:
        d = layer.data
        if layer.kind == "con":
            (kh, kw), (sy, sx), (py, px) = layer.window, layer.stride, d["pads"]
            inputs = [x, g.const(d["weight"], "con_w")]
            if d["bias"] is not None:
                inputs.append(g.const(d["bias"], "con_b"))
            x = g.node("Conv", inputs, "con", kernel_shape=[kh, kw], strides=[sy, sx], pads=[py, px, py, px])
            if d["relu"]:
                x = g.node("Relu", [x])
            shape = (layer.arg, _pooled(shape[1], kh, sy, py), _pooled(shape[2], kw, sx, px))
        elif layer.kind == "affine":
            if not d.get("disabled"):
                c = shape[0]
                x = g.node("Mul", [x, g.const(d["gamma"].reshape(1, c, 1, 1), "affine_g")], "affine_mul")
                x = g.node("Add", [x, g.const(d["beta"].reshape(1, c, 1, 1), "affine_b")], "affine")
        elif layer.kind == "relu":
            if not d.get("disabled"):
                x = g.node("Relu", [x], "relu")
        elif layer.kind in ("max_pool", "avg_pool"):
            (wh, ww), (sy, sx), (py, px) = layer.window, layer.stride, d["pads"]
            if wh == 0 and ww == 0 and layer.kind == "avg_pool":
                x = g.node("GlobalAveragePool", [x], "avg_pool_everything")
                shape = (shape[0], 1, 1)
                continue
            wh, ww = wh or shape[1], ww or shape[2]
            attrs = dict(kernel_shape=[wh, ww], strides=[sy, sx], pads=[py, px, py, px])
            if layer.kind == "avg_pool":
                attrs["count_include_pad"] = 0  # dlib averages over the in-image part of a window
            x = g.node("MaxPool" if layer.kind == "max_pool" else "AveragePool", [x], layer.kind, **attrs)
            shape = (shape[0], _pooled(shape[1], wh, sy, py), _pooled(shape[2], ww, sx, px))
        elif layer.kind == "tag":
            tags[layer.arg] = (x, shape)
        elif layer.kind == "skip":
            x, shape = tags[layer.arg]
        elif layer.kind == "add_prev":
            other, other_shape = tags[layer.arg]
            out_shape = tuple(max(a, b) for a, b in zip(shape, other_shape))
            x = g.node("Add", [_zero_extend(g, x, shape, out_shape), _zero_extend(g, other, other_shape, out_shape)],
                       f"add_prev{layer.arg}")
            shape = out_shape
        elif layer.kind == "fc":
            x = g.node("Flatten", [x], "flatten", axis=1)
            x = g.node("MatMul", [x, g.const(d["weight"], "fc_w")], "fc")
    return x


def _zero_extend(g: _Graph, x: str, shape, out_shape) -> str:
    """dlib's add of differently shaped tensors: zeros appended at the end of channels, rows and columns."""
    if tuple(shape) == tuple(out_shape):
        return x
    pads = [0, 0, 0, 0] + [0] + [o - s for s, o in zip(shape, out_shape)]
    return g.node("Pad", [x, g.const(np.asarray(pads, np.int64), "pads")], "zero_extend", mode="constant")


def _model(g: _Graph, input_name: str, size: int, output: str, embedding: int, doc: str):
    import onnx

    TP = onnx.TensorProto
    graph = onnx.helper.make_graph(
        g.nodes, "dlib_face_recognition_resnet_model_v1",
        [onnx.helper.make_tensor_value_info(input_name, TP.FLOAT, ["batch", 3, size, size])],
        [onnx.helper.make_tensor_value_info("embedding", TP.FLOAT, ["batch", embedding])],
        initializer=g.inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="fiqa_trt.onnx_export.dlib_resnet",
                                   producer_version=str(IMPORTER_VERSION), doc_string=doc)
    model.ir_version = 8  # opset 17; readable by every ONNX Runtime / OpenVINO this project supports
    onnx.checker.check_model(model, full_check=True)
    return model


def _config(net: DlibNetwork, size: int, name: str) -> dict:
    return dict(input_size=[size, size], color="RGB", mean=[float(v) for v in net.avg_rgb], std=[256.0] * 3,
                embedding_size=net.embedding_size, normalized_output=False, layout="NCHW", name=name)


def _rename_output(g: _Graph, out: str) -> None:
    for node in g.nodes:
        for i, name in enumerate(node.output):
            if name == out:
                node.output[i] = "embedding"


def build_chip_model(net: DlibNetwork):
    """The network as ONNX: input (N, 3, 150, 150) float, RGB, already (pixel - avg) / 256; output (N, 128)."""
    from fiqa_trt.onnx_export.graph import write_metadata

    g = _Graph()
    out = _network_nodes(g, net, "input")
    _rename_output(g, out)
    model = _model(g, "input", net.input_size, "embedding", net.embedding_size,
                   "dlib face-recognition ResNet v1 (150x150 dlib face chips)")
    write_metadata(model, _config(net, net.input_size, MODEL_NAME))
    return model


def _sampling_grid(size_in: int, size_out: int, matrix: np.ndarray) -> np.ndarray:
    """GridSample's grid (1, size_out, size_out, 2) for align_corners=1: output pixel -> input pixel via matrix^-1."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(full)[:2]
    v, u = np.mgrid[0:size_out, 0:size_out].astype(np.float64)
    src = np.einsum("ij,jhw->hwi", inverse, np.stack([u, v, np.ones_like(u)]))  # (H, W, 2) as (x, y)
    return (src / (size_in - 1) * 2.0 - 1.0)[None].astype(np.float32)


def build_arcface_input_model(net: DlibNetwork, matrix: np.ndarray = ARCFACE112_TO_DLIB150):
    """The network behind a fixed bilinear warp: input (N, 3, 112, 112) ArcFace crops, normalised like the chip
    model; GridSample (border replication) to the 150x150 dlib chip, then the network."""
    from fiqa_trt.onnx_export.graph import write_metadata

    g = _Graph()
    grid = g.const(_sampling_grid(CROP_SIZE, net.input_size, np.asarray(matrix, np.float64)), "chip_grid")
    batch = g.node("Shape", ["input"], "input_shape", start=0, end=1)
    grid_shape = g.node("Concat", [batch, g.const(np.asarray([net.input_size, net.input_size, 2], np.int64),
                                                  "grid_dims")], "grid_shape", axis=0)
    grid = g.node("Expand", [grid, grid_shape], "grid")
    chip = g.node("GridSample", ["input", grid], "dlib_chip", mode="bilinear", padding_mode="border",
                  align_corners=1)
    out = _network_nodes(g, net, chip)
    _rename_output(g, out)
    model = _model(g, "input", CROP_SIZE, "embedding", net.embedding_size,
                   "dlib face-recognition ResNet v1 on ArcFace 112x112 crops (fixed warp to the 150x150 chip)")
    write_metadata(model, _config(net, CROP_SIZE, f"{MODEL_NAME}-arcface112"))
    return model


def _save(model, out_path: str | Path) -> Path:
    import onnx

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f"{out_path.name}.{os.getpid()}.tmp")  # atomic: a reader never sees half a file
    onnx.save(model, str(tmp))
    tmp.replace(out_path)
    return out_path


def export_chip_model(dat_path: str | Path, out_path: str | Path) -> Path:
    """Convert the .dat to the plain 150x150-input ONNX model (with fiqa-trt metadata)."""
    return _save(build_chip_model(read_dlib_network(dat_path)), out_path)


def export_arcface_input_model(dat_path: str | Path, out_path: str | Path,
                               matrix: np.ndarray = ARCFACE112_TO_DLIB150) -> Path:
    """Convert the .dat to the 112x112 ArcFace-crop-input ONNX model (the fiqa-trt default model)."""
    return _save(build_arcface_input_model(read_dlib_network(dat_path), matrix), out_path)


def arcface112_to_dlib150(images: np.ndarray, matrix: np.ndarray = ARCFACE112_TO_DLIB150) -> np.ndarray:
    """uint8 (N, 112, 112, 3) ArcFace crops -> uint8 (N, 150, 150, 3) dlib chips (bilinear, border replicated)."""
    import cv2

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1:] != (CROP_SIZE, CROP_SIZE, 3) or images.dtype != np.uint8:
        raise FiqaError(f"arcface112_to_dlib150 needs uint8 (N, 112, 112, 3) images, got {images.dtype} "
                        f"{images.shape}")
    m = np.asarray(matrix, np.float64)
    return np.stack([cv2.warpAffine(img, m, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE) for img in images])


__all__ = ["ARCFACE112_TO_DLIB150", "IMPORTER_VERSION", "DlibFormatError", "DlibNetwork", "arcface112_to_dlib150",
           "build_arcface_input_model", "build_chip_model", "export_arcface_input_model", "export_chip_model",
           "read_dlib_network"]
