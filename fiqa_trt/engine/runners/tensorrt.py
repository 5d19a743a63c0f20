"""TensorRT engine builder (with an on-disk engine cache) and runner, written against the TensorRT 10 / 11 Python API.

Owns: the engine cache key and its checks (pure functions, tested on the CPU), building a strongly typed engine from
an ONNX file (FP16 comes from an FP16 ONNX, `fiqa-trt export --fp16`; on 10.x the STRONGLY_TYPED creation flag is set,
11.x is always strongly typed), one optimisation profile for a dynamic batch (min/opt/max), a workspace limit, a
timing cache persisted next to the engines and reused, and `TensorRTRunner` (`embed(uint8 images) -> float32`):
CuPy owns device memory and the stream (no pycuda); buffers are allocated once per batch bucket (powers of two up to
the profile's max) and bound with `set_tensor_address`; `execute_async_v3(stream.ptr)` runs them. With
`cuda_graphs=True` each bucket's enqueue is captured once into a CUDA graph (after one plain warm-up run, as TensorRT
requires after a shape change) and replayed; a batch is padded up to its bucket. Normalisation (uint8 NHWC -> the
model's float NCHW input) runs in CuPy on the same stream.

NOT YET EXECUTED: TensorRT cannot be installed on this project's machines and no GPU has been available; only the
pure functions are tested here. `tests/test_tensorrt.py` holds the GPU parity tests (skipped without tensorrt/GPU).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fiqa_trt.errors import FiqaError, MissingDependency

log = logging.getLogger("fiqa_trt")
ENGINE_FORMAT = 1  # bump when the cache layout changes
PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class Profile:
    """The dynamic batch range of the engine's one optimisation profile."""

    min: int = 1
    opt: int = 64
    max: int = 256

    @classmethod
    def parse(cls, text: str) -> "Profile":
        """'MIN,OPT,MAX' (for example '1,64,256')."""
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) != 3:
            raise FiqaError(f"--profile {text!r}: give three batch sizes MIN,OPT,MAX, for example 1,64,256")
        return cls(*values).validated()

    def validated(self, fixed_batch: int | None = None) -> "Profile":
        if not 1 <= self.min <= self.opt <= self.max:
            raise FiqaError(f"batch profile min={self.min}, opt={self.opt}, max={self.max}: need "
                            "1 <= min <= opt <= max")
        if self.max > 65536:
            raise FiqaError(f"batch profile max={self.max} is over 65536")
        if fixed_batch is not None and not self.min == self.opt == self.max == fixed_batch:
            raise FiqaError(f"the model's batch is fixed at {fixed_batch}: use --profile "
                            f"{fixed_batch},{fixed_batch},{fixed_batch} (or export it with a dynamic batch)")
        return self


def engine_key(onnx_sha256: str, trt_version: str, gpu_name: str, compute_capability: tuple[int, int],
               precision: str, profile: Profile) -> dict:
    """Everything an engine depends on, and its digest (`key["id"]`): the cache file name."""
    if precision not in PRECISIONS:
        raise FiqaError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    fields = {"format": ENGINE_FORMAT, "onnx_sha256": onnx_sha256, "tensorrt": trt_version, "gpu": gpu_name,
              "compute_capability": f"{compute_capability[0]}.{compute_capability[1]}", "precision": precision,
              "profile": asdict(profile.validated())}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
    return {**fields, "id": digest}


def check_engine(meta: dict, expected: dict, path: str = "engine") -> None:
    """Refuse an engine built for something else (another ONNX, TensorRT, GPU, precision or profile)."""
    wrong = [f"{k}: engine has {meta.get(k)!r}, needed {v!r}" for k, v in expected.items() if meta.get(k) != v]
    if wrong:
        raise FiqaError(f"{path} is stale or was built elsewhere ({'; '.join(wrong)}): rebuild it with "
                        "`fiqa-trt build` (or delete it)")


def bucket(n: int, profile: Profile) -> int:
    """The buffer / CUDA-graph bucket of a batch of n: the next power of two within [min, max]."""
    return max(profile.min, min(profile.max, 1 << max(0, (n - 1).bit_length())))


def _trt():
    try:
        import tensorrt
    except ImportError:
        raise MissingDependency("tensorrt", "tensorrt") from None
    return tensorrt


def _cupy():
    try:
        import cupy
    except ImportError:
        raise MissingDependency("cupy", "gpu") from None
    return cupy


def gpu_identity(device_id: int = 0) -> tuple[str, tuple[int, int]]:
    cp = _cupy()
    props = cp.cuda.runtime.getDeviceProperties(device_id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return name, (int(props["major"]), int(props["minor"]))


def onnx_precision(proto) -> str:
    from fiqa_trt.onnx_export import graph

    meta = graph.read_metadata(proto) or {}
    return "fp16" if meta.get("precision") == "fp16" else "fp32"


def build_engine(onnx_path: str | Path, profile: Profile = Profile(), cache_dir: str | Path | None = None,
                 workspace_gib: float = 4.0, force: bool = False, device_id: int = 0) -> tuple[Path, dict]:
    """Build (or find in the cache) the engine of an ONNX file; returns (engine path, its key)."""
    from fiqa_trt.engine.runners.onnx_model import open_onnx_model
    from fiqa_trt.engine.precision import cache_dir as user_cache

    trt = _trt()
    opened = open_onnx_model(onnx_path)
    profile = profile.validated(opened.batch_limit)
    gpu, cc = gpu_identity(device_id)
    key = engine_key(opened.sha256, trt.__version__, gpu, cc, onnx_precision(opened.proto), profile)
    folder = Path(cache_dir) if cache_dir else Path(user_cache()) / "tensorrt"
    folder.mkdir(parents=True, exist_ok=True)
    engine_path, meta_path = folder / f"{key['id']}.engine", folder / f"{key['id']}.json"
    if engine_path.is_file() and meta_path.is_file() and not force:
        check_engine(json.loads(meta_path.read_text()), key, str(engine_path))
        return engine_path, key

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)  # 11.x: always strongly typed
    network = builder.create_network(0 if typed is None else 1 << int(typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(opened.proto.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise FiqaError(f"TensorRT cannot parse {Path(onnx_path).name}: {errors[:400]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    timing_path = folder / f"timing-{gpu.replace(' ', '_')}-{cc[0]}{cc[1]}-trt{trt.__version__}.cache"
    cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    opt_profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    chw = tuple(network.get_input(0).shape)[1:]
    opt_profile.set_shape(name, (profile.min, *chw), (profile.opt, *chw), (profile.max, *chw))
    config.add_optimization_profile(opt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise FiqaError(f"TensorRT could not build an engine for {Path(onnx_path).name} (see its log above)")
    engine_path.write_bytes(bytes(serialized))
    timing_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    meta_path.write_text(json.dumps({**key, "onnx": str(Path(onnx_path).resolve()),
                                     "config": opened.config.to_dict()}, indent=2) + "\n")
    log.info("built %s for %s (%s)", engine_path.name, Path(onnx_path).name, gpu)
    return engine_path, key


class TensorRTRunner:
    name = "tensorrt"

    def __init__(self, engine_path: str | Path, cuda_graphs: bool = False, device_id: int = 0):
        from fiqa_trt.engine.model_config import ModelConfig

        trt, cp = _trt(), _cupy()
        engine_path = Path(engine_path)
        meta = json.loads(engine_path.with_suffix(".json").read_text())
        gpu, cc = gpu_identity(device_id)
        check_engine(meta, {"format": ENGINE_FORMAT, "tensorrt": trt.__version__, "gpu": gpu,
                            "compute_capability": f"{cc[0]}.{cc[1]}"}, str(engine_path))
        self.config = ModelConfig.from_dict(meta["config"], source="metadata")
        self.profile, self.precision = Profile(**meta["profile"]), meta["precision"]
        self.device, self.cuda_graphs = f"cuda:{device_id}", cuda_graphs
        self._cp, self._trt = cp, trt
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise FiqaError(f"TensorRT could not load {engine_path} (rebuild it with `fiqa-trt build`)")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._input, self._output = inputs[0], [n for n in names if n not in inputs][0]
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        self._stream = cp.cuda.Stream(non_blocking=True)
        self._sample_shape = tuple(self._engine.get_tensor_shape(self._input))[1:]  # (3, H, W) or (H, W, 3)
        self._mean = cp.asarray(self.config.mean, cp.float32)  # broadcast over NHWC pixels
        self._std = cp.asarray(self.config.std, cp.float32)
        self._buffers: dict[int, tuple] = {}  # bucket -> (input, output, CUDA graph or None)

    def _bind(self, size: int):
        cp, ctx = self._cp, self._context
        if size not in self._buffers:
            x = cp.empty((size, *self._sample_shape), self._dtypes[self._input])
            ctx.set_input_shape(self._input, x.shape)
            y = cp.empty(tuple(ctx.get_tensor_shape(self._output)), self._dtypes[self._output])
            self._buffers[size] = [x, y, None]
        x, y, graph = self._buffers[size]
        ctx.set_input_shape(self._input, x.shape)
        ctx.set_tensor_address(self._input, x.data.ptr)
        ctx.set_tensor_address(self._output, y.data.ptr)
        return self._buffers[size]

    def _enqueue(self):
        if not self._context.execute_async_v3(self._stream.ptr):
            raise FiqaError("TensorRT failed to enqueue the engine")

    def embed(self, batch: np.ndarray) -> np.ndarray:
        cp = self._cp
        outs = []
        with self._stream:
            for start in range(0, len(batch), self.profile.max):
                chunk = np.ascontiguousarray(batch[start : start + self.profile.max], np.uint8)
                slot = self._bind(bucket(len(chunk), self.profile))
                x, y = slot[0], slot[1]
                pixels = (cp.asarray(chunk).astype(cp.float32) - self._mean) / self._std
                if self.config.layout == "NCHW":
                    pixels = pixels.transpose(0, 3, 1, 2)
                x[: len(chunk)] = pixels.astype(x.dtype)
                if len(chunk) < len(x):
                    x[len(chunk):] = 0
                if not self.cuda_graphs:
                    self._enqueue()
                elif slot[2] is None:
                    self._enqueue()  # one plain run after the shape change, then capture
                    self._stream.begin_capture()
                    self._enqueue()
                    slot[2] = self._stream.end_capture()
                    slot[2].launch(self._stream)
                else:
                    slot[2].launch(self._stream)
                outs.append(cp.asnumpy(y[: len(chunk)].astype(cp.float32).reshape(len(chunk), -1),
                                       stream=self._stream))
            self._stream.synchronize()
        return np.concatenate(outs) if outs else np.zeros((0, self.config.embedding_size), np.float32)


def load_tensorrt_runner(onnx_path: str | Path, profile: Profile = Profile(), cache_dir: str | Path | None = None,
                         cuda_graphs: bool = False, **build_options) -> TensorRTRunner:
    """Build or reuse the cached engine of `onnx_path` and open a runner on it."""
    engine_path, _ = build_engine(onnx_path, profile, cache_dir, **build_options)
    return TensorRTRunner(engine_path, cuda_graphs=cuda_graphs)
