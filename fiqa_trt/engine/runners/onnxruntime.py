"""ONNX Runtime CPU runner: opens any ONNX FR model, fixes what it must (fixed batch), and embeds batches."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from fiqa_trt.engine.model_config import ModelConfig
from fiqa_trt.errors import FiqaError, MissingDependency
from fiqa_trt.onnx_export import graph as onnx_graph

log = logging.getLogger("fiqa_trt")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _dims(value) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def inspect_model(path: str | os.PathLike, **overrides) -> tuple["object", ModelConfig]:
    """Load and validate an ONNX FR model; return (ModelProto, ModelConfig). Raises FiqaError for bad models."""
    import onnx

    from fiqa_trt.weights import registry

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
    dims = _dims(inputs[0])
    if len(dims) != 4 or 3 not in (dims[1], dims[3]):
        raise FiqaError(
            f"{path}: input '{inputs[0].name}' has shape {dims}; fiqa-trt needs a 3-channel image input "
            "(N, 3, H, W) or (N, H, W, 3)"
        )
    layout = "NCHW" if dims[1] == 3 else "NHWC"
    hw = dims[2:4] if layout == "NCHW" else dims[1:3]
    out_dims = _dims(model.graph.output[0])
    embedding = out_dims[-1] if isinstance(out_dims[-1], int) and out_dims[-1] > 0 else 0

    meta = onnx_graph.read_metadata(model)
    if meta is not None:
        config = ModelConfig.from_dict(meta, source="metadata")
    elif (known := registry.lookup(sha256_of(path))) is not None:
        config = known
    else:
        if not all(isinstance(v, int) and v > 0 for v in hw):
            raise FiqaError(f"{path}: the input size is not fixed in the graph ({hw}) and the model has no metadata")
        config = ModelConfig(input_size=tuple(hw), embedding_size=embedding, layout=layout, name=path.stem)
        if not any(v is not None for v in overrides.values()):
            log.warning(
                "%s carries no preprocessing metadata and is not a known model: assuming the ArcFace convention "
                "(RGB, (x - 127.5) / 127.5). Pass --color/--mean/--std if it differs.",
                path.name,
            )
    config = config.with_overrides(**overrides)
    fixed_hw = all(isinstance(v, int) and v > 0 for v in hw)
    if config.layout != layout or (fixed_hw and tuple(config.input_size) != tuple(hw)):
        raise FiqaError(f"{path}: its config says {config.layout} {config.input_size}, the graph input is {dims}")
    return model, config


class OnnxRuntimeRunner:
    """ONNX Runtime on CPU. A fixed batch dimension is made dynamic and checked numerically before use."""

    name = "onnxruntime"
    device = "cpu"

    def __init__(self, model_path: str | os.PathLike, threads: int | None = None, max_batch: int = 64, **overrides):
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependency("onnxruntime") from None
        model, self.config = inspect_model(model_path, **overrides)
        self.path = Path(model_path)
        self.max_batch = max_batch
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3

        def session(proto):
            try:
                return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
            except Exception as exc:
                raise FiqaError(f"ONNX Runtime cannot run {self.path.name}: {str(exc)[:300]}") from None

        self._input = None
        fixed = onnx_graph.fixed_batch_size(model)
        self.batch_limit: int | None = None  # None: any batch size
        if fixed is None:
            self._session = session(model)
        else:
            original = session(model)
            dynamic, rewritten = onnx_graph.make_batch_dynamic(model)
            try:
                candidate = session(dynamic)
                self._session = candidate if self._same_outputs(original, candidate, fixed) else None
            except FiqaError:
                self._session = None
            if self._session is None:
                log.warning("%s has a fixed batch of %d that could not be made dynamic exactly; running it %d at a "
                            "time (slower)", self.path.name, fixed, fixed)
                self._session, self.batch_limit = original, fixed
            else:
                log.info("%s: fixed batch %d made dynamic (%d reshape(s) rewritten, checked numerically)",
                         self.path.name, fixed, rewritten)
        self._input = self._session.get_inputs()[0].name
        if not self.config.embedding_size:
            probe = self.embed(np.zeros((1, *self._input_shape()), np.float32))
            self.config = replace(self.config, embedding_size=int(probe.shape[1]))

    def _input_shape(self) -> tuple[int, int, int]:
        h, w = self.config.input_size
        return (3, h, w) if self.config.layout == "NCHW" else (h, w, 3)

    def _same_outputs(self, original, dynamic, fixed: int) -> bool:
        """The rewritten graph must give the original's outputs, sample by sample, at a batch of 2 * fixed."""
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2 * fixed, *self._input_shape())).astype(np.float32)
        name = original.get_inputs()[0].name
        try:
            got = dynamic.run(None, {name: x})[0]
        except Exception:
            return False
        want = np.concatenate([original.run(None, {name: x[i : i + fixed]})[0] for i in range(0, 2 * fixed, fixed)])
        return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-4, atol=1e-5))

    def embed(self, batch: np.ndarray) -> np.ndarray:
        step = self.batch_limit or self.max_batch
        outs = []
        for start in range(0, len(batch), step):
            chunk = np.ascontiguousarray(batch[start : start + step], dtype=np.float32)
            out = self._session.run(None, {self._input: chunk})[0]
            outs.append(out.reshape(len(chunk), -1))
        return np.concatenate(outs).astype(np.float32, copy=False)
