"""TensorRT builder/runner: cache key, profile and error messages on the CPU; parity with ONNX Runtime on a GPU."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from fiqa_trt.engine.runners import tensorrt as trt_runner
from fiqa_trt.engine.runners.tensorrt import Profile, bucket, check_engine, engine_key
from fiqa_trt.errors import FiqaError

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

    from fiqa_trt.cli import app

    result = CliRunner().invoke(app, ["build", "m.onnx", "--profile", "4,2,1"])
    assert result.exit_code != 0 and isinstance(result.exception, FiqaError)


# ---------------------------------------------------------------------------------------------------- GPU


def _gpu_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed"
    from fiqa_trt.kernels.cuda import usable_device

    return usable_device()


@pytest.mark.skipif(_gpu_reason() is not None, reason=f"TensorRT parity needs tensorrt and a GPU: {_gpu_reason()}")
@pytest.mark.parametrize("fp16", [False, True])
@pytest.mark.parametrize("graphs", [False, True])
def test_matches_onnxruntime(tmp_path_factory, fp16, graphs):
    torch = pytest.importorskip("torch")
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.onnx_export import export
    from fiqa_trt.weights import zoo
    from tests.test_export import randomise

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


# ---------------------------------------------------------------------------------------------------- plumbing


class _FakeTensorRT:
    """Stands for the tensorrt module (the calls build_engine makes, as documented for 10.x): plumbing only."""

    __version__ = "10.13.0"
    builds = 0

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class NetworkDefinitionCreationFlag:
        STRONGLY_TYPED = 1

    class MemoryPoolType:
        WORKSPACE = 0

    class _Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return self.data + b"+"

    class Builder:
        def __init__(self, logger):
            self.trt = _FakeTensorRT

        def create_network(self, flags):
            assert flags == 1 << 1  # strongly typed
            net = type("Net", (), {})()
            inp = type("In", (), {"name": "input", "shape": (-1, 3, 112, 112)})()
            net.get_input = lambda i: inp
            return net

        def create_builder_config(self):
            test = self

            class Config:
                def set_memory_pool_limit(self, pool, size):
                    test.workspace = size

                def create_timing_cache(self, data):
                    test.timing_in = data
                    return _FakeTensorRT._Cache(data)

                def set_timing_cache(self, cache, ignore_mismatch):
                    self.cache = cache

                def get_timing_cache(self):
                    return self.cache

                def add_optimization_profile(self, profile):
                    test.shapes = profile.shapes

            return Config()

        def create_optimization_profile(self):
            class P:
                def set_shape(self, name, lo, opt, hi):
                    self.shapes = (name, lo, opt, hi)

            return P()

        def build_serialized_network(self, network, config):
            _FakeTensorRT.builds += 1
            return b"engine"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse(self, data):
            return len(data) > 0


def test_build_engine_caches_and_refuses_foreign(monkeypatch, tmp_path, random_model):
    from fiqa_trt.engine.runners.onnx_model import open_onnx_model

    fake = _FakeTensorRT
    fake.builds = 0
    monkeypatch.setattr(trt_runner, "_trt", lambda: fake)
    monkeypatch.setattr(trt_runner, "gpu_identity", lambda device_id=0: ("NVIDIA H100 80GB HBM3", (9, 0)))
    profile = Profile(1, 1, 1) if open_onnx_model(random_model).batch_limit else Profile(1, 4, 8)
    path, key = trt_runner.build_engine(random_model, profile, tmp_path, workspace_gib=1)
    assert path.read_bytes() == b"engine" and path.name == f"{key['id']}.engine" and fake.builds == 1
    timing = list(tmp_path.glob("timing-*.cache"))
    assert len(timing) == 1 and timing[0].read_bytes() == b"+"
    assert trt_runner.build_engine(random_model, profile, tmp_path)[0] == path and fake.builds == 1  # cache hit
    trt_runner.build_engine(random_model, profile, tmp_path, force=True)
    assert fake.builds == 2 and timing[0].read_bytes() == b"++"  # the timing cache was read back and extended
    meta = path.with_suffix(".json")
    meta.write_text(meta.read_text().replace('"10.13.0"', '"9.9.9"'))  # an engine file left by another TensorRT
    with pytest.raises(FiqaError, match="stale or was built elsewhere"):
        trt_runner.build_engine(random_model, profile, tmp_path)
