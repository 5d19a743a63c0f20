"""Small ONNX graphs with several outputs (the face detector's networks) on the FR models' backends: ONNX Runtime and
OpenVINO on the CPU, TensorRT on a CUDA device; one interface, `GraphRunner.run(x) -> [outputs]`.

The FR runners (`engine.runners.Runner`) take one image batch at the model's input size and give embeddings; these
take one input of any shape the graph allows (dynamic height and width included) and give every graph output, in
the graph's output order, as float32 arrays: NumPy on the CPU; on a CUDA device CuPy in -> CuPy out (NumPy in ->
NumPy out), with no host round trip.

- ONNX Runtime: the project's session (`onnx_export.graph.ort_session`), intra-op threads not spinning between runs
  (the detector runs many short calls between a stream's decoding and the FR model, which need the cores).
- OpenVINO: the graph compiled for the CPU with dynamic shapes, latency hint, fp32.
- TensorRT: an engine built from the same graph with one optimisation profile per input (min/opt/max shapes given by
  the caller), cached in the user cache directory under a key of the graph, TensorRT version, GPU and profile;
  buffers allocated per call from the shapes the context gives. NOT YET EXECUTED (no TensorRT or GPU on this
  project's machines): its TensorRT calls are checked against the recorded APIs (tests/tensorrt_api).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from fiqa_trt.errors import FiqaError

log = logging.getLogger("fiqa_trt")
GRAPH_BACKENDS = ("onnxruntime", "openvino", "tensorrt")


class GraphRunner:
    name = "graph"
    device = "cpu"

    def run(self, x) -> list:
        raise NotImplementedError


class OnnxRuntimeGraph(GraphRunner):
    name = "onnxruntime"

    def __init__(self, proto, threads: int | None = None, label: str = "graph"):
        from fiqa_trt.onnx_export.graph import ort_session

        try:
            self._session = ort_session(proto, threads, spin=False)
        except Exception as exc:
            raise FiqaError(f"ONNX Runtime cannot run {label}: {str(exc)[:300]}") from None
        self._input = self._session.get_inputs()[0].name

    def run(self, x) -> list[np.ndarray]:
        return self._session.run(None, {self._input: np.ascontiguousarray(x)})


class OpenVinoGraph(GraphRunner):
    name = "openvino"

    def __init__(self, proto, threads: int | None = None, label: str = "graph"):
        import os

        from fiqa_trt.errors import require

        core = require("openvino", extra="openvino").Core()
        try:
            compiled = core.compile_model(core.read_model(proto.SerializeToString()), "CPU", {
                "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1})
        except Exception as exc:
            raise FiqaError(f"OpenVINO cannot compile {label}: {str(exc)[:300]}") from None
        self._request = compiled.create_infer_request()
        self._outputs = list(compiled.outputs)

    def run(self, x) -> list[np.ndarray]:
        result = self._request.infer({0: np.ascontiguousarray(x)})
        return [np.asarray(result[o]) for o in self._outputs]


def engine_key(proto_sha256: str, trt_version: str, gpu_name: str, compute_capability: tuple[int, int],
               shapes: dict) -> dict:
    """Everything a graph's engine depends on, and its digest (`key["id"]`, the cache file name)."""
    fields = {"graph_sha256": proto_sha256, "tensorrt": trt_version, "gpu": gpu_name,
              "compute_capability": f"{compute_capability[0]}.{compute_capability[1]}",
              "shapes": {name: [list(s) for s in triple] for name, triple in sorted(shapes.items())}}
    return {**fields, "id": hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]}


class GraphSession:
    """The TensorRT side on raw device addresses: deserialise an engine, describe its inputs and outputs, set the
    input shape, read the output shapes, bind and enqueue."""

    def __init__(self, trt, engine_bytes: bytes, label: str = "engine"):
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise FiqaError(f"TensorRT could not load {label} (delete it from the cache to rebuild it)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise FiqaError(f"{label}: a graph engine here has one input; this one has {inputs}")
        self.input, self.outputs = inputs[0], [n for n in names if n not in inputs]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}

    def set_input(self, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Set the input shape; returns the output shapes it gives, in output order."""
        if not self.context.set_input_shape(self.input, tuple(shape)):
            raise FiqaError(f"TensorRT refused the input shape {tuple(shape)} (outside the engine's profile)")
        return [tuple(self.context.get_tensor_shape(n)) for n in self.outputs]

    def bind(self, addresses: dict[str, int]) -> None:
        for name, ptr in addresses.items():
            if not self.context.set_tensor_address(name, ptr):
                raise FiqaError(f"TensorRT refused the address of {name}")

    def enqueue(self, stream_ptr: int) -> None:
        if not self.context.execute_async_v3(stream_ptr):
            raise FiqaError("TensorRT failed to enqueue the engine")


class TensorRTGraph(GraphRunner):
    """A graph on TensorRT (see the module docstring). `shapes`: input name -> (min, opt, max) shapes."""

    name = "tensorrt"

    def __init__(self, proto, shapes: dict, device_id: int = 0, cache_dir: str | Path | None = None,
                 label: str = "graph", workspace_gib: float = 1.0):
        from fiqa_trt.engine.runners.tensorrt import _cupy, _trt, build_serialized, check_engine, gpu_identity
        from fiqa_trt.files import cache_dir as user_cache

        trt, cp = _trt(), _cupy()
        self._cp, self.device_id, self.device = cp, device_id, f"cuda:{device_id}"
        data = proto.SerializeToString()
        gpu, cc = gpu_identity(device_id)
        key = engine_key(hashlib.sha256(data).hexdigest(), trt.__version__, gpu, cc, shapes)
        folder = Path(cache_dir) if cache_dir else Path(user_cache()) / "tensorrt"
        folder.mkdir(parents=True, exist_ok=True)
        path, meta = folder / f"graph-{key['id']}.engine", folder / f"graph-{key['id']}.json"
        with cp.cuda.Device(device_id):
            if path.is_file() and meta.is_file():
                check_engine(json.loads(meta.read_text()), key, str(path))
            else:
                log.info("building a TensorRT engine for %s on %s (once: it is cached in %s)", label, gpu, folder)
                engine, _ = build_serialized(trt, proto, None, workspace_gib, b"", label, shapes=shapes)
                path.write_bytes(engine)
                meta.write_text(json.dumps(key, indent=2) + "\n")
            self.session = GraphSession(trt, path.read_bytes(), str(path))
            self._stream = cp.cuda.Stream(non_blocking=True)

    def run(self, x) -> list:
        cp = self._cp
        on_device = isinstance(x, cp.ndarray)
        session = self.session
        with cp.cuda.Device(self.device_id):
            caller = cp.cuda.get_current_stream()
            self._stream.wait_event(caller.record())
            with self._stream:
                x = cp.ascontiguousarray(cp.asarray(x), dtype=session.dtypes[session.input])
                shapes = session.set_input(x.shape)
                outs = [cp.empty(s, session.dtypes[n]) for s, n in zip(shapes, session.outputs)]
                session.bind({session.input: x.data.ptr, **{n: o.data.ptr for n, o in zip(session.outputs, outs)}})
                session.enqueue(self._stream.ptr)
                outs = [o.astype(cp.float32, copy=False) for o in outs]
            caller.wait_event(self._stream.record())
            return outs if on_device else [cp.asnumpy(o, stream=caller) for o in outs]


def open_graph(proto, backend: str = "auto", threads: int | None = None, device: str = "cpu",
               shapes: dict | None = None, label: str = "graph") -> GraphRunner:
    """A runner for an ONNX graph: `device` 'cpu' (backend auto = OpenVINO where installed, else ONNX Runtime) or
    'cuda[:N]' (TensorRT; `shapes` gives its optimisation profile)."""
    import importlib.util

    if str(device).startswith("cuda"):
        if backend not in ("auto", "tensorrt"):
            raise FiqaError(f"on {device} the detector runs on TensorRT, not '{backend}'")
        index = int(str(device).partition(":")[2] or 0)
        return TensorRTGraph(proto, shapes or {}, device_id=index, label=label)
    if backend == "auto":
        backend = "openvino" if importlib.util.find_spec("openvino") is not None else "onnxruntime"
    if backend == "onnxruntime":
        return OnnxRuntimeGraph(proto, threads, label)
    if backend == "openvino":
        return OpenVinoGraph(proto, threads, label)
    raise FiqaError(f"unknown backend '{backend}' for the detector; use one of: {', '.join(GRAPH_BACKENDS)}")
