"""TensorRT engine builder (with an on-disk engine cache) and runner, written against the TensorRT 10 / 11 Python API.

Owns: the engine cache key and its checks (pure functions, tested on the CPU), building a strongly typed engine from
an ONNX file (FP16 comes from an FP16 ONNX: `fiqa-trt export --fp16`, or an FP32 file converted here; on 10.x the
STRONGLY_TYPED creation flag is set, 11.x is always strongly typed), one optimisation profile for a dynamic batch (min/opt/max), a workspace limit, a
timing cache persisted next to the engines and reused, and `TensorRTRunner` (`embed(uint8 images) -> float32`).
As on the CPU runners, the model's normalisation is put into the graph before the build (uint8 NHWC in, Cast ->
Transpose -> Sub -> Div, which TensorRT takes as a uint8 network input and fuses), so a batch goes to the engine as
the pipeline decoded it, one byte per pixel, with no normalisation kernel of ours.
CuPy owns device memory and the stream (no pycuda); buffers are allocated once per batch bucket (powers of two up to
the profile's max) and bound with `set_tensor_address`; `execute_async_v3(stream.ptr)` runs them. With
`cuda_graphs=True` each bucket gets its own execution context (shapes and addresses fixed, device memory shared
between them), its enqueue is captured once into a CUDA graph (after one plain run, as TensorRT requires after a
shape change, in thread-local capture mode) and replayed; a batch is padded up to its bucket.

NOT YET EXECUTED: TensorRT cannot be installed on this project's machines and no GPU has been available. Tested on
the CPU: the pure functions, every TensorRT call against the recorded 10.13 and 11.4 Python APIs
(`tests/tensorrt_api/`), and the graph handed to TensorRT (run by ONNX Runtime against the original model).

Observer signals (`onnx_export.observers`): with `observers` the engine is built from the graph with the observer
output added after the FP16 conversion (the reductions run in float32 on the cast activations), the observers are
part of the cache key, and each call returns the embeddings and the reduced activations from the same enqueue.
`tests/test_tensorrt.py` holds the GPU parity tests (skipped without tensorrt/GPU).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fiqa_trt.engine.runners.base import Forward, Runner, power_of_two_bucket
from fiqa_trt.errors import FiqaError, require

log = logging.getLogger("fiqa_trt")
ENGINE_FORMAT = 2  # bump when the cache layout or what goes into an engine changes (2: normalisation in-graph)
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
               precision: str, profile: Profile, preprocessing: dict | None = None, observers=None) -> dict:
    """Everything an engine depends on, and its digest (`key["id"]`): the cache file name. `preprocessing`: the
    normalisation built into the engine (mean, std, layout); `observers`: the observer output built into it."""
    if precision not in PRECISIONS:
        raise FiqaError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    fields = {"format": ENGINE_FORMAT, "onnx_sha256": onnx_sha256, "tensorrt": trt_version, "gpu": gpu_name,
              "compute_capability": f"{compute_capability[0]}.{compute_capability[1]}", "precision": precision,
              "profile": asdict(profile.validated()), "preprocessing": preprocessing or {}}
    if observers is not None:  # only then: the engines without observers keep their names
        fields["observers"] = observers.key()
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
    return power_of_two_bucket(n, profile.min, profile.max)


def _trt():
    return require("tensorrt", extra="tensorrt")


def _cupy():
    return require("cupy", extra="gpu")


def _device_scope(device_id: int):
    return _cupy().cuda.Device(device_id)


def gpu_identity(device_id: int = 0) -> tuple[str, tuple[int, int]]:
    cp = _cupy()
    props = cp.cuda.runtime.getDeviceProperties(device_id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return name, (int(props["major"]), int(props["minor"]))


def onnx_precision(proto) -> str:
    from fiqa_trt.onnx_export import graph

    meta = graph.read_metadata(proto) or {}
    return "fp16" if meta.get("precision") == "fp16" else "fp32"


def engine_graph(opened, precision: str = "auto", observers=None) -> tuple[object, str]:
    """The ONNX graph TensorRT builds: the model with its normalisation in front (uint8 NHWC input), in the wanted
    precision ('auto' keeps the file's; an FP32 file is converted for 'fp16'), with the observer output of
    `observers` added last (reduced in float32). Returns (proto, precision)."""
    have = onnx_precision(opened.proto)
    proto = opened.with_preprocessing()
    if precision not in ("auto", have):
        if precision != "fp16":
            raise FiqaError(f"{opened.path.name} is an FP16 ONNX: its engine is FP16 (export an FP32 ONNX for fp32)")
        from fiqa_trt.onnx_export.fp16 import convert_to_fp16

        log.info("%s is FP32: converting it to FP16 for a strongly typed FP16 engine", opened.path.name)
        proto, have = convert_to_fp16(proto), "fp16"
    if observers is not None:
        from fiqa_trt.onnx_export.observers import observed_graph

        c = opened.config
        proto = observed_graph(proto, opened.sha256, observers, {
            "tensorrt": have, "batch_limit": opened.batch_limit, "mean": list(c.mean), "std": list(c.std),
            "layout": c.layout})
    return proto, have


def build_engine(onnx_path: str | Path, profile: Profile = Profile(), cache_dir: str | Path | None = None,
                 workspace_gib: float = 4.0, force: bool = False, device_id: int = 0,
                 precision: str = "auto", observers=None, **config_overrides) -> tuple[Path, dict]:
    """Build (or find in the cache) the engine of an ONNX file; returns (engine path, its key).

    precision: 'auto' (the ONNX file's), 'fp32' or 'fp16' (an FP32 file is converted to FP16 first).
    observers (`onnx_export.observers.Observers`): their output is built into the engine.
    config_overrides (color, mean, std): as for every runner; mean and std are built into the engine."""
    from fiqa_trt.engine.runners.onnx_model import open_onnx_model
    from fiqa_trt.files import cache_dir as user_cache

    if precision not in ("auto", *PRECISIONS):
        raise FiqaError(f"unknown precision {precision!r}; use auto, fp32 or fp16")
    trt = _trt()
    opened = open_onnx_model(onnx_path, **config_overrides)
    profile = profile.validated(opened.batch_limit)
    gpu, cc = gpu_identity(device_id)
    proto, precision = engine_graph(opened, precision, observers)
    c = opened.config
    key = engine_key(opened.sha256, trt.__version__, gpu, cc, precision, profile,
                     {"mean": list(c.mean), "std": list(c.std), "layout": c.layout}, observers)
    folder = Path(cache_dir) if cache_dir else Path(user_cache()) / "tensorrt"
    folder.mkdir(parents=True, exist_ok=True)
    engine_path, meta_path = folder / f"{key['id']}.engine", folder / f"{key['id']}.json"
    if engine_path.is_file() and meta_path.is_file() and not force:
        check_engine(json.loads(meta_path.read_text()), key, str(engine_path))
        return engine_path, key

    timing_path = folder / f"timing-{gpu.replace(' ', '_')}-{cc[0]}{cc[1]}-trt{trt.__version__}.cache"
    log.info("building a %s TensorRT engine for %s on %s (once: it is cached in %s)", precision,
             Path(onnx_path).name, gpu, folder)
    with _device_scope(device_id):
        serialized, timing = build_serialized(trt, proto, profile, workspace_gib,
                                              timing_path.read_bytes() if timing_path.is_file() else b"",
                                              Path(onnx_path).name)
    engine_path.write_bytes(serialized)
    timing_path.write_bytes(timing)
    meta_path.write_text(json.dumps({**key, "onnx": str(Path(onnx_path).resolve()),
                                     "config": opened.config.to_dict()}, indent=2) + "\n")
    log.info("built %s for %s (%s)", engine_path.name, Path(onnx_path).name, gpu)
    return engine_path, key


def build_serialized(trt, proto, profile: Profile | None, workspace_gib: float, timing: bytes,
                     label: str, shapes: dict | None = None) -> tuple[bytes, bytes]:
    """The TensorRT builder calls: a strongly typed network parsed from the ONNX proto, one optimisation profile
    (for the batch of the first input; or `shapes`: input name -> (min, opt, max) shapes), a workspace limit, the
    timing cache read and extended. Returns (engine, timing cache) bytes."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if typed is None else 1 << int(typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(proto.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise FiqaError(f"TensorRT cannot parse {label}: {errors[:400]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    cache = config.create_timing_cache(timing)
    config.set_timing_cache(cache, ignore_mismatch=False)
    opt_profile = builder.create_optimization_profile()
    if shapes is None:
        tensor = network.get_input(0)
        chw = tuple(tensor.shape)[1:]
        shapes = {tensor.name: ((profile.min, *chw), (profile.opt, *chw), (profile.max, *chw))}
    for name, (low, opt, high) in shapes.items():
        opt_profile.set_shape(name, tuple(low), tuple(opt), tuple(high))
    config.add_optimization_profile(opt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise FiqaError(f"TensorRT could not build an engine for {label} (see its log above)")
    return bytes(serialized), bytes(config.get_timing_cache().serialize())


class EngineSession:
    """The TensorRT side of the runner, on raw device addresses (no CuPy here): deserialise the engine, describe
    its one input, its embedding output and the observer output where it has one, set a batch size, bind addresses
    and enqueue on a stream.

    `context` serves plain enqueues (its shape and addresses are set per call). A CUDA graph fixes the shapes and
    addresses it was captured with, so each graph gets a context of its own (`graph_context`), created with
    user-managed device memory: all of them use one scratch buffer of the engine's largest need, which is safe
    because they run one after another on one stream."""

    def __init__(self, trt, engine_bytes: bytes, label: str = "engine"):
        self._trt = trt
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise FiqaError(f"TensorRT could not load {label} (rebuild it with `fiqa-trt build --force`)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        from fiqa_trt.onnx_export.observers import OUTPUT

        embeddings = [n for n in outputs if n != OUTPUT]
        if len(inputs) != 1 or not embeddings:
            raise FiqaError(f"{label}: an FR engine has one input and an embedding output; this one has inputs "
                            f"{inputs} and outputs {outputs}")
        self.input, self.output = inputs[0], embeddings[0]
        self.observed = OUTPUT if OUTPUT in outputs else None  # the observer output, where the engine has one
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))
                       for n in (self.input, self.output, self.observed) if n is not None}
        self.sample_shape = tuple(self.engine.get_tensor_shape(self.input))[1:]  # (H, W, 3): uint8 images

    @property
    def scratch_bytes(self) -> int:
        """Device memory a context needs at the largest shapes of the profile (what `graph_context` is given)."""
        return int(self.engine.device_memory_size_v2)

    def graph_context(self, scratch_ptr: int):
        """A context of its own for one CUDA graph, on the shared scratch memory at `scratch_ptr`."""
        context = self.engine.create_execution_context(self._trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        context.set_device_memory(scratch_ptr, self.scratch_bytes)
        return context

    def set_batch(self, size: int, context=None) -> tuple[int, ...]:
        """Set the input batch size (of `context`, default the plain one); returns the output shape it gives."""
        context = context or self.context
        if not context.set_input_shape(self.input, (size, *self.sample_shape)):
            raise FiqaError(f"TensorRT refused batch size {size} (outside the engine's profile)")
        return tuple(context.get_tensor_shape(self.output))

    def observed_shape(self, context=None) -> tuple[int, ...]:
        """The observer output's shape at the batch size set last (an engine with observers)."""
        return tuple((context or self.context).get_tensor_shape(self.observed))

    def bind(self, input_ptr: int, output_ptr: int, context=None, observed_ptr: int | None = None) -> None:
        context = context or self.context
        ok = context.set_tensor_address(self.input, input_ptr) and context.set_tensor_address(self.output, output_ptr)
        if self.observed is not None:
            if observed_ptr is None:
                raise FiqaError("this engine has an observer output: give its address")
            ok = ok and context.set_tensor_address(self.observed, observed_ptr)
        if not ok:
            raise FiqaError("TensorRT refused a tensor address")

    def enqueue(self, stream_ptr: int, context=None) -> None:
        if not (context or self.context).execute_async_v3(stream_ptr):
            raise FiqaError("TensorRT failed to enqueue the engine")


class TensorRTRunner(Runner):
    """`embed(uint8 (B, H, W, 3))`: NumPy in -> NumPy out; CuPy in (already on the device, as the GPU pipeline
    hands it over) -> CuPy out, with no host copy. Work is ordered after the caller's current CuPy stream and the
    caller's stream waits for the result."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, cuda_graphs: bool = False, device_id: int = 0, observers=None,
                 source: dict | None = None):
        """`observers`: those the engine was built with (its key says so); `source`: how `load_tensorrt_runner`
        built it, for `observing`."""
        from fiqa_trt.weights.model_config import ModelConfig

        trt, cp = _trt(), _cupy()
        engine_path = Path(engine_path)
        meta = json.loads(engine_path.with_suffix(".json").read_text())
        gpu, cc = gpu_identity(device_id)
        check_engine(meta, {"format": ENGINE_FORMAT, "tensorrt": trt.__version__, "gpu": gpu,
                            "compute_capability": f"{cc[0]}.{cc[1]}"}, str(engine_path))
        self.config = ModelConfig.from_dict(meta["config"], source="metadata")
        self.profile, self.precision = Profile(**meta["profile"]), meta["precision"]
        self.sha256, self.observers, self._source = meta.get("onnx_sha256"), observers, source
        if (observers.key() if observers is not None else None) != meta.get("observers"):
            raise FiqaError(f"{engine_path} was built with observers {meta.get('observers')}, not "
                            f"{observers.key() if observers is not None else None}")
        self.device, self.cuda_graphs, self.device_id = f"cuda:{device_id}", cuda_graphs, device_id
        self._cp = cp
        with cp.cuda.Device(device_id):
            self.session = EngineSession(trt, engine_path.read_bytes(), str(engine_path))
            self._stream = cp.cuda.Stream(non_blocking=True)
            self._scratch = cp.empty(self.session.scratch_bytes, cp.uint8) if cuda_graphs else None
        # bucket -> [input, output, CUDA graph or None, its context or None, observer output or None]
        self._buffers: dict[int, list] = {}

    def _slot(self, size: int) -> list:
        """The buffers of a bucket (allocated once). Plain mode: the shared context is set to the bucket's shape and
        addresses on every call. Graph mode: the bucket's own context is set once, and its graph replays that."""
        cp, session = self._cp, self.session
        if size in self._buffers and self.cuda_graphs:
            return self._buffers[size]
        context = None
        if self.cuda_graphs:
            context = session.graph_context(self._scratch.data.ptr)
        out_shape = session.set_batch(size, context)
        if size not in self._buffers:
            x = cp.empty((size, *session.sample_shape), session.dtypes[session.input])
            y = cp.empty(out_shape, session.dtypes[session.output])
            z = (cp.empty(session.observed_shape(context), session.dtypes[session.observed])
                 if session.observed is not None else None)
            self._buffers[size] = [x, y, None, context, z]
        x, y, _, _, z = self._buffers[size]
        session.bind(x.data.ptr, y.data.ptr, context, None if z is None else z.data.ptr)
        return self._buffers[size]

    def _run(self, chunk) -> tuple:
        """One chunk (CuPy uint8, at most profile.max images) -> CuPy float32 (n, D) and the observer output
        (n, M) or None, on self._stream."""
        cp, n = self._cp, len(chunk)
        slot = self._slot(bucket(n, self.profile))
        x, y = slot[0], slot[1]
        x[:n] = chunk  # uint8 NHWC, as decoded: the engine normalises
        if n < len(x):
            x[n:] = 0
        context = slot[3]
        if not self.cuda_graphs:
            self.session.enqueue(self._stream.ptr)
        elif slot[2] is None:
            self.session.enqueue(self._stream.ptr, context)  # one plain run after setting the shape, then capture
            self._stream.begin_capture(cp.cuda.runtime.streamCaptureModeThreadLocal)
            self.session.enqueue(self._stream.ptr, context)
            slot[2] = self._stream.end_capture()
            slot[2].launch(self._stream)
        else:
            slot[2].launch(self._stream)
        z = slot[4]  # copies: the bucket's buffers are reused by the next call
        return y[:n].astype(cp.float32).reshape(n, -1), None if z is None else z[:n].astype(cp.float32).reshape(n, -1)

    def _embed(self, batch):
        return self._forward(batch).embeddings

    def _forward(self, batch) -> Forward:
        cp = self._cp
        on_device = isinstance(batch, cp.ndarray)
        with cp.cuda.Device(self.device_id):
            caller = cp.cuda.get_current_stream()
            self._stream.wait_event(caller.record())
            with self._stream:
                images = batch if on_device else cp.asarray(np.ascontiguousarray(batch, np.uint8))
                outs = [self._run(images[start : start + self.profile.max].astype(cp.uint8, copy=False))
                        for start in range(0, len(images), self.profile.max)]
                emb = (cp.concatenate([o[0] for o in outs]) if outs
                       else cp.zeros((0, self.config.embedding_size), cp.float32))
                obs = None
                if self.observers is not None:
                    width = len(self.observers.columns)
                    obs = cp.concatenate([o[1] for o in outs]) if outs else cp.zeros((0, width), cp.float32)
            caller.wait_event(self._stream.record())
            if on_device:
                return Forward(emb, obs)
            return Forward(cp.asnumpy(emb, stream=caller), None if obs is None else cp.asnumpy(obs, stream=caller))

    def _observing(self, observers) -> "TensorRTRunner":
        if self._source is None:
            raise FiqaError("this TensorRT runner was opened from an engine file: build it with the observers "
                            "(load_tensorrt_runner(..., observers=...))")
        return load_tensorrt_runner(**{**self._source, "observers": observers})

    def layers(self) -> list:
        from fiqa_trt.engine.runners.onnx_model import open_onnx_model

        if self._source is None:
            raise FiqaError("this TensorRT runner was opened from an engine file: list the ONNX model's layers")
        overrides = {k: self._source[k] for k in ("color", "mean", "std") if k in self._source}
        return open_onnx_model(self._source["onnx_path"], **overrides).layers()


def load_tensorrt_runner(onnx_path: str | Path, profile: Profile = Profile(), cache_dir: str | Path | None = None,
                         cuda_graphs: bool = False, device_id: int = 0, observers=None,
                         **build_options) -> TensorRTRunner:
    """Build or reuse the cached engine of `onnx_path` (with the output of `observers`, if given) and open a runner on
    it (build_options: precision, workspace_gib, force, and the config overrides color, mean, std)."""
    engine_path, _ = build_engine(onnx_path, profile, cache_dir, device_id=device_id, observers=observers,
                                  **build_options)
    source = {"onnx_path": onnx_path, "profile": profile, "cache_dir": cache_dir, "cuda_graphs": cuda_graphs,
              "device_id": device_id, **{k: v for k, v in build_options.items() if k != "force"}}
    return TensorRTRunner(engine_path, cuda_graphs=cuda_graphs, device_id=device_id, observers=observers,
                          source=source)
