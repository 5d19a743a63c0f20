"""TensorRT builder/runner: cache key, profile and error messages on the CPU; parity with ONNX Runtime on a GPU."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from fiqa_trt.engine.runners import tensorrt as trt_runner
from fiqa_trt.engine.runners.tensorrt import Profile, bucket, check_engine, engine_key
from fiqa_trt.errors import FiqaError
from tests.tensorrt_api.standin import VERSIONS

BASE = dict(onnx_sha256="ab" * 32, trt_version="10.13.0", gpu_name="NVIDIA H100 80GB HBM3",
            compute_capability=(9, 0), precision="fp16", profile=Profile(1, 64, 256))


def test_key_is_stable_and_covers_every_field():
    key = engine_key(**BASE)
    assert key == engine_key(**BASE) and len(key["id"]) == 32
    assert key["compute_capability"] == "9.0" and key["profile"] == {"min": 1, "opt": 64, "max": 256}
    changes = dict(onnx_sha256="cd" * 32, trt_version="11.0.0", gpu_name="NVIDIA H200", compute_capability=(9, 1),
                   precision="fp32", profile=Profile(1, 32, 256))
    ids = {engine_key(**{**BASE, name: value})["id"] for name, value in changes.items()}
    assert len(ids) == len(changes) and key["id"] not in ids


def test_key_rejects_unknown_precision():
    with pytest.raises(FiqaError, match="unknown precision 'int8'"):
        engine_key(**{**BASE, "precision": "int8"})


def test_stale_or_foreign_engines_are_refused():
    key = engine_key(**BASE)
    check_engine(dict(key), key)
    foreign = {**key, "gpu": "NVIDIA A100-SXM4-40GB", "tensorrt": "10.0.1"}
    wanted = "stale or was built elsewhere.*tensorrt: engine has '10.0.1'.*gpu: engine has 'NVIDIA A100"
    with pytest.raises(FiqaError, match=wanted):
        check_engine(foreign, key, "x.engine")


@pytest.mark.parametrize("text, message", [
    ("1,64", "three batch sizes"), ("a,b,c", "three batch sizes"), ("8,4,16", "1 <= min <= opt <= max"),
    ("0,1,2", "1 <= min"), ("1,2,100000", "over 65536"),
])
def test_profile_errors(text, message):
    with pytest.raises(FiqaError, match=message):
        Profile.parse(text)


def test_profile_and_fixed_batch():
    assert Profile.parse("1,64,256") == Profile(1, 64, 256)
    assert Profile(1, 1, 1).validated(fixed_batch=1) == Profile(1, 1, 1)
    with pytest.raises(FiqaError, match="batch is fixed at 1: use --profile 1,1,1"):
        Profile(1, 64, 256).validated(fixed_batch=1)


def test_buckets():
    p = Profile(4, 64, 256)
    assert [bucket(n, p) for n in (1, 4, 5, 64, 65, 256)] == [4, 4, 8, 64, 128, 256]


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_missing_tensorrt_says_what_to_install(tmp_path):
    with pytest.raises(FiqaError, match=r"'tensorrt' is not installed: pip install 'fiqa-trt\[tensorrt\]'"):
        trt_runner.build_engine(tmp_path / "model.onnx")


def test_build_command_checks_profile():
    from typer.testing import CliRunner

    from fiqa_trt.cli.app import app

    result = CliRunner().invoke(app, ["build", "m.onnx", "--profile", "4,2,1"])
    assert result.exit_code != 0 and isinstance(result.exception, FiqaError)


# ---------------------------------------------------------------------------------------------------- GPU


def _gpu_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed"
    from fiqa_trt.kernels.cuda import usable_device

    return usable_device()


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_reason() is not None, reason=f"TensorRT parity needs tensorrt and a GPU: {_gpu_reason()}")
@pytest.mark.parametrize("fp16", [False, True])
@pytest.mark.parametrize("graphs", [False, True])
def test_matches_onnxruntime(tmp_path_factory, fp16, graphs):
    torch = pytest.importorskip("torch")
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.onnx_export import export
    from fiqa_trt.weights import zoo
    from benchmarks.harness.nets import randomise

    tmp = tmp_path_factory.mktemp("trt")
    arch = zoo.arch("iresnet50").with_kwargs(name="iresnet50-reduced", layers=(1, 1, 1, 1))
    ckpt = tmp / "backbone.pth"
    torch.save(randomise(export.build_network(arch), seed=5).state_dict(), ckpt)
    fp32 = export.export_checkpoint(ckpt, arch, out=tmp / "fp32.onnx").path
    model = export.export_checkpoint(ckpt, arch, out=tmp / "m.onnx", fp16=fp16).path
    images = np.random.default_rng(0).integers(0, 256, (37, 112, 112, 3), dtype=np.uint8)
    want = load_runner(str(fp32), backend="onnxruntime", precision="fp32").embed(images)
    runner = trt_runner.load_tensorrt_runner(model, Profile(1, 16, 32), cache_dir=tmp / "cache", cuda_graphs=graphs)
    got = runner.embed(images)  # 37 > max 32: two chunks, the second padded to its bucket
    assert runner.precision == ("fp16" if fp16 else "fp32")
    assert export.cosines(got, want).min() >= (0.999 if fp16 else 0.99999)
    again = trt_runner.load_tensorrt_runner(model, Profile(1, 16, 32), cache_dir=tmp / "cache")  # from the cache
    assert export.cosines(again.embed(images), got).min() >= 0.99999


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_reason() is not None, reason=f"TensorRT scoring needs tensorrt and a GPU: {_gpu_reason()}")
def test_gpu_scores_of_the_real_model_rank_like_the_cpu(real_model, lfw, tmp_path, monkeypatch):
    """--device cuda on the shared MobileFaceNet (FP32 ONNX, converted to FP16 for the engine) against ONNX Runtime
    fp32 on the CPU: the same 128 LFW images, the same perturbations."""
    from fiqa_trt.engine.inputs import list_items
    from fiqa_trt.engine.precision import spearman
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.engine.scorer import Scorer

    monkeypatch.setenv("FIQA_TRT_CACHE", str(tmp_path))
    items = list_items(str(lfw))[:128]
    spec = ["affine:rot=-3:3,scale=0.97:1.03"]
    gpu = Scorer(load_runner(str(real_model), device="cuda"), spec, views=2, batch_size=32)
    assert gpu.device.is_cuda and gpu.runner.name == "tensorrt" and gpu.runner.precision == "fp16"
    got = np.array([r.quality for r in gpu.score(items)])
    cpu = Scorer(load_runner(str(real_model), "onnxruntime", "fp32", device="cpu"), spec, views=2, batch_size=32)
    want = np.array([r.quality for r in cpu.score(items)])
    assert spearman(got, want) >= 0.99 and np.abs(got - want).max() < 0.01


# ------------------------------------------------------------------- the calls, against the real TensorRT APIs


def _builder_standin(version: str, parses: bool = True):
    from tests.tensorrt_api.standin import StandInObject, StandInTensorRT

    def tensor(obj, index):
        return StandInObject(trt, "ITensor", {"name": "input", "shape": (-1, 3, 112, 112)})

    def error(obj, index):
        return StandInObject(trt, "ParserError", {})

    trt = StandInTensorRT(version, behaviour={
        ("OnnxParser", "parse"): lambda obj, data: parses and len(data) > 0,
        ("OnnxParser", "num_errors"): 0 if parses else 2,
        ("OnnxParser", "get_error"): error,
        ("ParserError", "desc"): lambda obj: "Unsupported ONNX op: Foo",
        ("INetworkDefinition", "get_input"): tensor,
        ("Builder", "build_serialized_network"): lambda obj, network, config: b"engine",
        ("ITimingCache", "serialize"): lambda obj: b"timing+",
    })
    return trt


@pytest.mark.parametrize("version", VERSIONS)
def test_builder_calls_fit_the_api(version, random_model):
    """Every builder call made for an engine is checked against TensorRT 10.13's and 11.4's recorded Python API."""
    import onnx

    trt = _builder_standin(version)
    proto = onnx.load(str(random_model))
    engine, timing = trt_runner.build_serialized(trt, proto, Profile(1, 8, 32), 2.0, b"old", "m.onnx")
    assert (engine, timing) == (b"engine", b"timing+")
    calls = {name: (args, kwargs) for name, args, kwargs in trt.calls}
    strongly_typed = {"10.13": 1, "11.4": 0}[version]  # the flag's value moved when EXPLICIT_BATCH went away
    assert calls["Builder.create_network"][0] == (1 << strongly_typed,)
    assert calls["IOptimizationProfile.set_shape"][0] == ("input", (1, 3, 112, 112), (8, 3, 112, 112),
                                                          (32, 3, 112, 112))
    assert calls["IBuilderConfig.set_memory_pool_limit"][0][1] == 2 << 30
    assert calls["IBuilderConfig.create_timing_cache"][0] == (b"old",)
    assert calls["IBuilderConfig.set_timing_cache"][1] == {"ignore_mismatch": False}


@pytest.mark.parametrize("version", VERSIONS)
def test_parser_errors_are_reported(version, random_model):
    import onnx

    with pytest.raises(FiqaError, match="TensorRT cannot parse m.onnx: Unsupported ONNX op: Foo; Unsupported"):
        trt_runner.build_serialized(_builder_standin(version, parses=False), onnx.load(str(random_model)),
                                    Profile(), 1.0, b"", "m.onnx")


def _runtime_standin(version: str, inputs: int = 1, loads: bool = True):
    from tests.tensorrt_api.standin import StandInObject, StandInTensorRT, numpy_type

    names = ["input", "input2"][:inputs] + ["embedding"]

    def engine(obj, data):
        return StandInObject(trt, "ICudaEngine") if loads else None

    def set_shape(obj, name, shape):
        obj.state["batch"] = shape[0]
        return 1 <= shape[0] <= 32

    trt = StandInTensorRT(version, behaviour={
        ("Runtime", "deserialize_cuda_engine"): engine,
        ("ICudaEngine", "num_io_tensors"): len(names),
        ("ICudaEngine", "get_tensor_name"): lambda obj, i: names[i],
        ("ICudaEngine", "get_tensor_mode"): lambda obj, n: trt.TensorIOMode.OUTPUT if n == "embedding"
        else trt.TensorIOMode.INPUT,
        ("ICudaEngine", "get_tensor_dtype"): lambda obj, n: trt.DataType.HALF if n == "embedding"
        else trt.DataType.UINT8,
        ("ICudaEngine", "get_tensor_shape"): lambda obj, n: (-1, 512) if n == "embedding" else (-1, 112, 112, 3),
        ("IExecutionContext", "set_input_shape"): set_shape,
        ("IExecutionContext", "get_tensor_shape"): lambda obj, n: (obj.state["batch"], 512),
        ("IExecutionContext", "set_tensor_address"): lambda obj, n, ptr: True,
        ("IExecutionContext", "execute_async_v3"): lambda obj, stream: True,
        ("ICudaEngine", "device_memory_size_v2"): 3 << 20,
        ("tensorrt", "nptype"): numpy_type,
    })
    return trt


@pytest.mark.parametrize("version", VERSIONS)
def test_runtime_calls_fit_the_api(version):
    """The runner's TensorRT calls (deserialise, describe I/O, set shape, bind, enqueue), checked the same way."""
    trt = _runtime_standin(version)
    session = trt_runner.EngineSession(trt, b"engine")
    assert (session.input, session.output, session.sample_shape) == ("input", "embedding", (112, 112, 3))
    assert session.dtypes == {"input": np.uint8, "embedding": np.float16}
    assert session.set_batch(8) == (8, 512)
    session.bind(4096, 8192)
    session.enqueue(1234)
    calls = [(name, args) for name, args, _ in trt.calls][-4:]
    assert calls == [("IExecutionContext.get_tensor_shape", ("embedding",)),
                     ("IExecutionContext.set_tensor_address", ("input", 4096)),
                     ("IExecutionContext.set_tensor_address", ("embedding", 8192)),
                     ("IExecutionContext.execute_async_v3", (1234,))]
    with pytest.raises(FiqaError, match="refused batch size 64"):
        session.set_batch(64)
    graph_context = session.graph_context(1 << 40)  # a context of its own per CUDA graph, on shared scratch memory
    assert session.set_batch(4, graph_context) == (4, 512)
    session.enqueue(99, graph_context)
    calls = [(name, args) for name, args, _ in trt.calls]
    assert ("ICudaEngine.create_execution_context", (trt.ExecutionContextAllocationStrategy.USER_MANAGED,)) in calls
    assert ("IExecutionContext.set_device_memory", (1 << 40, 3 << 20)) in calls
    assert graph_context is not session.context and graph_context.state["batch"] == 4


def test_runtime_refuses_what_it_cannot_run():
    with pytest.raises(FiqaError, match="could not load engine"):
        trt_runner.EngineSession(_runtime_standin(VERSIONS[-1], loads=False), b"junk")
    with pytest.raises(FiqaError, match=r"one input and an embedding output.*\['input', 'input2'\]"):
        trt_runner.EngineSession(_runtime_standin(VERSIONS[-1], inputs=2), b"engine")


def test_standin_catches_api_mistakes():
    """The stand-in fails on what the real module would refuse (so the tests above can fail)."""
    from tests.tensorrt_api.standin import ApiMismatch

    trt = _builder_standin("11.4")
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    with pytest.raises(ApiMismatch, match="has no Builder.build_engine"):
        builder.build_engine(None, None)  # removed in TensorRT 10
    config = builder.create_builder_config()
    with pytest.raises(ApiMismatch, match="fits no signature"):
        config.set_timing_cache(None, ignore_mismatched=True)
    with pytest.raises(ApiMismatch, match="has no BuilderFlag.FP16"):
        trt.BuilderFlag.FP16  # 11.x removed the precision flags
    assert int(_builder_standin("10.13").BuilderFlag.FP16) >= 0


# ---------------------------------------------------------------------------------------------------- plumbing


@pytest.mark.parametrize("precision, least", [("fp32", 0.99999), ("fp16", 0.999)])
def test_engine_graph_computes_what_the_model_does(real_model, precision, least):
    """The ONNX graph handed to TensorRT (normalisation in front, uint8 NHWC in; FP16-converted for fp16), run by
    ONNX Runtime on LFW-like images, gives the embeddings of the original model with its preprocessing."""
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.engine.runners.onnx_model import open_onnx_model
    from fiqa_trt.onnx_export.graph import ort_session
    from fiqa_trt.onnx_export.export import cosines

    proto, got_precision = trt_runner.engine_graph(open_onnx_model(real_model), precision)
    assert got_precision == precision
    import cv2

    rng = np.random.default_rng(3)
    images = np.stack([cv2.resize(rng.integers(0, 256, (14, 14, 3), dtype=np.uint8), (112, 112)) for _ in range(8)])
    session = ort_session(proto)
    got = session.run(None, {session.get_inputs()[0].name: images})[0].astype(np.float32).reshape(8, -1)
    want = load_runner(str(real_model), "onnxruntime", "fp32", device="cpu").embed(images)
    assert cosines(got, want).min() >= least


def test_build_engine_caches_and_refuses_foreign(monkeypatch, tmp_path, random_model):
    from contextlib import nullcontext

    import onnx

    from fiqa_trt.engine.runners.onnx_model import open_onnx_model

    trt = _builder_standin(VERSIONS[-1])
    builds = []
    real = trt_runner.build_serialized
    monkeypatch.setattr(trt_runner, "_trt", lambda: trt)
    monkeypatch.setattr(trt_runner, "_device_scope", lambda device_id: nullcontext())
    monkeypatch.setattr(trt_runner, "gpu_identity", lambda device_id=0: ("NVIDIA H100 80GB HBM3", (9, 0)))
    monkeypatch.setattr(trt_runner, "build_serialized",
                        lambda trt_, proto, *a: builds.append(proto) or real(trt_, proto, *a))
    profile = Profile(1, 1, 1) if open_onnx_model(random_model).batch_limit else Profile(1, 4, 8)
    path, key = trt_runner.build_engine(random_model, profile, tmp_path, workspace_gib=1)
    assert path.read_bytes() == b"engine" and path.name == f"{key['id']}.engine" and len(builds) == 1
    assert key["precision"] == "fp32" and key["tensorrt"] == trt.__version__
    timing = list(tmp_path.glob("timing-*.cache"))
    assert len(timing) == 1 and timing[0].read_bytes() == b"timing+"
    assert trt_runner.build_engine(random_model, profile, tmp_path)[0] == path and len(builds) == 1  # cache hit
    trt_runner.build_engine(random_model, profile, tmp_path, force=True)
    assert len(builds) == 2 and ("IBuilderConfig.create_timing_cache", (b"timing+",), {}) in trt.calls  # reused
    half, half_key = trt_runner.build_engine(random_model, profile, tmp_path, precision="fp16")
    assert half != path and half_key["precision"] == "fp16" and len(builds) == 3
    types = {i.data_type for i in builds[-1].graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types and onnx.TensorProto.FLOAT not in types  # converted first
    image = builds[-1].graph.input[0].type.tensor_type  # the normalisation is in the graph: uint8 NHWC in
    assert image.elem_type == onnx.TensorProto.UINT8 and [d.dim_value for d in image.shape.dim][1:] == [112, 112, 3]
    other = trt_runner.build_engine(random_model, profile, tmp_path, mean=100.0)[1]  # mean/std are in the engine
    assert other["id"] != key["id"] and other["preprocessing"]["mean"] == [100.0] * 3 and len(builds) == 4
    meta = path.with_suffix(".json")
    meta.write_text(meta.read_text().replace(f'"{trt.__version__}"', '"9.9.9"'))  # left by another TensorRT
    with pytest.raises(FiqaError, match="stale or was built elsewhere"):
        trt_runner.build_engine(random_model, profile, tmp_path)
