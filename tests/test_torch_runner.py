"""The PyTorch runner on the CPU against ONNX Runtime on the exported ONNX of the same random-weight checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fiqa_trt.engine.runners import load_runner  # noqa: E402
from fiqa_trt.engine.runners.base import power_of_two_bucket  # noqa: E402
from fiqa_trt.engine.runners.torch_cuda import load_torch_runner  # noqa: E402
from fiqa_trt.errors import FiqaError  # noqa: E402
from fiqa_trt.onnx_export import export  # noqa: E402
from fiqa_trt.weights import zoo  # noqa: E402
from benchmarks.harness.nets import randomise  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("torch_runner")
    arch = zoo.arch("iresnet50").with_kwargs(name="iresnet50-reduced", layers=(1, 1, 1, 1))
    net = randomise(export.build_network(arch), seed=3)
    path = tmp / "backbone.pth"
    torch.save(net.state_dict(), path)
    onnx_path = export.export_checkpoint(path, arch, out=tmp / "model.onnx").path
    return arch, path, onnx_path


def test_cpu_matches_onnxruntime(checkpoint):
    arch, path, onnx_path = checkpoint
    images = np.random.default_rng(0).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    runner = load_torch_runner(path, arch, device="cpu", max_batch=2)  # 2: chunks of a batch are joined right
    assert runner.precision == "fp32" and runner.config.input_size == (112, 112)
    got = runner.embed(images)
    want = load_runner(str(onnx_path), backend="onnxruntime", precision="fp32").embed(images)
    assert got.shape == want.shape == (5, arch.embedding_size) and got.dtype == np.float32
    assert export.cosines(got, want).min() >= 0.99999


def test_options_are_checked(checkpoint):
    arch, path, _ = checkpoint
    with pytest.raises(FiqaError, match="fp16 autocast is for CUDA"):
        load_torch_runner(path, arch, device="cpu", fp16=True)
    from fiqa_trt.engine.runners.torch_cuda import TorchRunner

    runner = load_torch_runner(path, arch)
    with pytest.raises(FiqaError, match="bf16 too"):
        TorchRunner(runner.net, runner.config, device="cpu", bf16=True)
    with pytest.raises(FiqaError, match="CUDA graphs need"):
        load_torch_runner(path, arch, device="cpu", cuda_graphs=True)
    with pytest.raises(FiqaError, match="device must be"):
        load_torch_runner(path, arch, device="tpu")
    with pytest.raises(FiqaError, match="expected uint8"):
        load_torch_runner(path, arch).embed(np.zeros((1, 64, 64, 3), np.uint8))


def test_normalisation_overrides_given_after_loading_apply(checkpoint):
    """load_runner applies --mean/--std to a checkpoint's config after the runner is built: the runner reads the
    normalisation at call time, so the override is what runs (before, __init__ had fixed it)."""
    from fiqa_trt.engine.runners.torch_cuda import TorchRunner

    arch, path, _ = checkpoint
    images = np.random.default_rng(5).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    default = load_runner(str(path), device="cpu")
    overridden = load_runner(str(path), device="cpu", mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0))
    assert overridden.config.mean == (0.0, 0.0, 0.0) and overridden.config.std == (255.0, 255.0, 255.0)
    built_with = TorchRunner(overridden.net, overridden.config, device="cpu")
    np.testing.assert_array_equal(overridden.embed(images), built_with.embed(images))
    assert export.cosines(overridden.embed(images), default.embed(images)).min() < 0.9999


def test_buckets():
    assert [power_of_two_bucket(n, 1, 256) for n in (1, 2, 3, 64, 65, 256, 300)] == [1, 2, 4, 64, 128, 256, 256]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch sees no CUDA device")
def test_cuda_fp16_graphs_match_cpu(checkpoint):
    arch, path, _ = checkpoint
    images = np.random.default_rng(1).integers(0, 256, (7, 112, 112, 3), dtype=np.uint8)
    want = load_torch_runner(path, arch, device="cpu").embed(images)
    from fiqa_trt.engine.runners.torch_cuda import TorchRunner

    for graphs in (False, True):
        runner = load_torch_runner(path, arch, device="cuda:0", cuda_graphs=graphs)
        assert runner.precision == "fp16"
        assert export.cosines(runner.embed(images), want).min() >= 0.999
        bf16 = TorchRunner(runner.net, runner.config, device="cuda:0", bf16=True, cuda_graphs=graphs)
        assert bf16.precision == "bf16" and export.cosines(bf16.embed(images), want).min() >= 0.99


def _crops(n: int, seed: int) -> list[np.ndarray]:
    """Smooth random 112x112 images (face-crop sized; smooth so that perturbations change them gradually)."""
    import cv2

    rng = np.random.default_rng(seed)
    return [cv2.resize(rng.integers(0, 256, (14, 14, 3), dtype=np.uint8), (112, 112), interpolation=cv2.INTER_CUBIC)
            for _ in range(n)]


def test_checkpoint_scores_like_its_onnx(checkpoint):
    """load_runner opens a checkpoint with the PyTorch runner (CPU here); through the same Scorer it gives the
    qualities ONNX Runtime gives on the exported ONNX."""
    from fiqa_trt.engine.scorer import Scorer

    arch, path, onnx_path = checkpoint
    runner = load_runner(str(path), device="auto")
    assert runner.name == "torch" and runner.device == "cpu" and runner.precision == "fp32"
    crops = _crops(6, seed=4)
    got = Scorer(runner, ["gaussian:sigma=8"], batch_size=4).score_crops(crops)
    want = Scorer(load_runner(str(onnx_path), "onnxruntime", "fp32"), ["gaussian:sigma=8"],
                  batch_size=4).score_crops(crops)
    np.testing.assert_allclose(got, want, atol=1e-4)
    with pytest.raises(FiqaError, match="runs on the torch backend"):
        load_runner(str(path), backend="openvino")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch sees no CUDA device")
def test_cuda_takes_and_gives_cupy(checkpoint):
    cp = pytest.importorskip("cupy")
    arch, path, _ = checkpoint
    images = np.random.default_rng(2).integers(0, 256, (9, 112, 112, 3), dtype=np.uint8)
    runner = load_torch_runner(path, arch, device="cuda:0", max_batch=4)
    with cp.cuda.Stream(non_blocking=True):
        out = runner.embed(cp.asarray(images))
        assert isinstance(out, cp.ndarray) and out.shape == (9, arch.embedding_size)
        host = cp.asnumpy(out)
    assert export.cosines(host, runner.embed(images)).min() >= 0.99999


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch sees no CUDA device")
def test_cuda_scorer_matches_cpu(checkpoint):
    """The whole GPU path (DALI on the GPU, CuPy hand-over, CUDA kernel) against the CPU path."""
    pytest.importorskip("nvidia.dali")
    from fiqa_trt.engine.precision import spearman
    from fiqa_trt.engine.scorer import Scorer

    arch, path, _ = checkpoint
    crops = _crops(24, seed=5)
    spec = ["affine:rot=-4:4,scale=0.95:1.05"]
    gpu = Scorer(load_runner(str(path), device="cuda"), spec, views=2, batch_size=8)
    assert gpu.device.is_cuda
    got = gpu.score_crops(crops)
    want = Scorer(load_runner(str(path), device="cpu"), spec, views=2, batch_size=8).score_crops(crops)
    assert np.abs(got - want).max() < 5e-3 and spearman(got, want) >= 0.99


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch sees no CUDA device")
def test_cuda_scorer_on_lfw_jpegs_matches_cpu(checkpoint, lfw_files):
    """The GPU path on JPEG files (4:2:0, decoded by nvJPEG with fancy upsampling) against the CPU path (libjpeg-turbo):
    the crops test above feeds PNGs, which never reach nvJPEG."""
    pytest.importorskip("nvidia.dali")
    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.engine.precision import spearman
    from fiqa_trt.engine.scorer import Scorer

    arch, path, _ = checkpoint
    items = [Item(str(p), p.name) for p in lfw_files[:48]]
    spec = ["affine:rot=0.5,scale=1.01,flip=1"]
    got = np.array([r.quality for r in Scorer(load_runner(str(path), device="cuda"), spec, batch_size=16).score(items)])
    want = np.array([r.quality for r in Scorer(load_runner(str(path), device="cpu"), spec, batch_size=16).score(items)])
    assert np.abs(got - want).max() < 5e-3 and spearman(got, want) >= 0.99
