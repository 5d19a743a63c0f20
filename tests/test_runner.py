"""ONNX graph rewriting and the ONNX Runtime runner: dynamic batch, configs, clear errors for bad models."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fiqa_trt.engine.runners import available_backends, load_runner, supported_precisions
from fiqa_trt.errors import FiqaError
from fiqa_trt.onnx_export import graph
from tests.onnx_models import fixed_batch_embedder, non_image_model


def _per_sample(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])


def _images(n, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


def _reference(path, images, mean=127.5, std=127.5):
    """The original graph, one sample at a time, on images normalised by hand in float64."""
    x = ((images.astype(np.float64) - mean) / std).astype(np.float32).transpose(0, 3, 1, 2).copy()
    return _per_sample(path, x)


@pytest.mark.parametrize("constant_node", [False, True])
def test_fixed_batch_rewrite_is_exact(tmp_path, constant_node):
    path = fixed_batch_embedder(tmp_path / "m.onnx", shape_as_constant_node=constant_node)
    dynamic, rewritten = graph.make_batch_dynamic(onnx.load(str(path)))
    assert rewritten == 1 and graph.fixed_batch_size(dynamic) is None
    onnx.checker.check_model(dynamic)
    x = np.random.default_rng(0).standard_normal((5, 3, 112, 112)).astype(np.float32)
    got = ort.InferenceSession(dynamic.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    np.testing.assert_allclose(got[0], _per_sample(path, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", available_backends())
def test_runner_embeds_large_batches_of_a_fixed_batch_model(random_model, backend):
    runner = load_runner(str(random_model), backend, "fp32")
    assert runner.batch_limit is None and runner.config.embedding_size == 64 and runner.precision == "fp32"
    images = _images(70)  # > max_batch: chunked
    want = _reference(random_model, images)
    np.testing.assert_allclose(runner.embed(images), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.skipif("openvino" not in available_backends(), reason="openvino not installed")
def test_reduced_precision_is_close_to_fp32_and_reports_what_ran(random_model):
    from fiqa_trt.engine.runners.openvino import cpu_precisions

    images = _images(16, seed=2)
    want = _reference(random_model, images).astype(np.float64)
    for precision in cpu_precisions()[1:]:
        runner = load_runner(str(random_model), "openvino", precision)
        assert runner.precision == precision
        got = runner.embed(images).astype(np.float64)
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert cos.min() > 0.999
    with pytest.raises(FiqaError, match="not"):
        load_runner(str(random_model), "onnxruntime", "bf16")


def test_auto_precision_needs_a_passing_ranking_check(random_model, tmp_path, monkeypatch):
    from fiqa_trt.engine import precision
    from fiqa_trt.files import sha256_of

    monkeypatch.setenv("FIQA_TRT_CACHE", str(tmp_path))
    backend = "openvino" if "openvino" in available_backends() else "onnxruntime"
    assert load_runner(str(random_model)).name == backend
    assert load_runner(str(random_model)).precision == "fp32"  # nothing recorded yet
    reduced = [p for p in supported_precisions(backend) if p != "fp32"]
    if not reduced:
        pytest.skip("this CPU has no reduced precision")
    digest = sha256_of(random_model)
    precision.record(digest, backend, reduced[0], 0.990, 100, "test")  # below the threshold: not used
    assert load_runner(str(random_model)).precision == "fp32"
    precision.record(digest, backend, reduced[0], 0.998, 100, "test")
    assert load_runner(str(random_model)).precision == reduced[0]
    assert load_runner(str(random_model), precision="fp32").precision == "fp32"


def test_spearman_with_ties():
    from fiqa_trt.engine.precision import spearman

    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 30, 40.0])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([4, 3, 2, 1.0])) == pytest.approx(-1.0)
    # ranks with ties averaged: a = [1, 2.5, 2.5, 4], b = [1, 2, 3, 4] -> Pearson of ranks = 0.9487
    assert spearman(np.array([1, 2, 2, 3.0]), np.array([1, 2, 3, 4.0])) == pytest.approx(0.9486833, abs=1e-6)


def test_metadata_round_trip_sets_the_config(tmp_path, random_model):
    model = onnx.load(str(random_model))
    graph.write_metadata(model, {"input_size": [112, 112], "color": "BGR", "mean": 127.5, "std": 128.0,
                                 "embedding_size": 64, "name": "tagged"})
    onnx.save(model, str(tmp_path / "tagged.onnx"))
    cfg = load_runner(str(tmp_path / "tagged.onnx")).config
    assert (cfg.color, cfg.std, cfg.name, cfg.source) == ("BGR", (128.0,) * 3, "tagged", "metadata")
    assert load_runner(str(tmp_path / "tagged.onnx"), color="RGB").config.source == "user"
    assert load_runner(str(tmp_path / "tagged.onnx"), color="rgb").config.color == "RGB"  # any case, as on the CLI


def test_unknown_model_gets_the_arcface_convention_with_a_warning(random_model, caplog):
    cfg = load_runner(str(random_model)).config
    assert (cfg.color, cfg.mean, cfg.std, cfg.input_size) == ("RGB", (127.5,) * 3, (127.5,) * 3, (112, 112))
    assert "no preprocessing metadata" in caplog.text


def test_the_shared_model_is_recognised_and_batched(real_model, lfw_files):
    runner = load_runner(str(real_model), "onnxruntime")
    cfg = runner.config
    assert (cfg.name, cfg.color, cfg.mean, cfg.std, cfg.embedding_size) == (
        "faceplugin-mobilefacenet", "RGB", (127.0,) * 3, (128.0,) * 3, 512)
    assert runner.batch_limit is None
    from PIL import Image

    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in lfw_files[:6]])
    want = _reference(real_model, images, mean=127.0, std=128.0)
    np.testing.assert_allclose(runner.embed(images), want, rtol=1e-4, atol=1e-4)


def test_normalisation_and_layout_come_from_the_config(tmp_path, random_model):
    model = onnx.load(str(random_model))
    graph.write_metadata(model, {"input_size": [112, 112], "color": "BGR", "mean": [10, 20, 30], "std": 50})
    onnx.save(model, str(tmp_path / "bgr.onnx"))
    images = _images(3)
    for backend in available_backends():
        got = load_runner(str(tmp_path / "bgr.onnx"), backend, "fp32").embed(images)
        want = _reference(random_model, images, mean=np.array([10, 20, 30]), std=50)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    nhwc = tmp_path / "nhwc.onnx"
    fixed_batch_embedder(nhwc, input_shape=(1, 112, 112, 3), transpose_input=True)
    got = load_runner(str(nhwc), "onnxruntime").embed(images)
    session = ort.InferenceSession(str(nhwc), providers=["CPUExecutionProvider"])
    x = ((images.astype(np.float64) - 127.5) / 127.5).astype(np.float32)
    want = np.concatenate([session.run(None, {"input": x[i:i + 1]})[0] for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p / "missing.onnx", "model file not found"),
    (lambda p: (p / "text.onnx").write_text("not a model") and p / "text.onnx", "not a valid ONNX model"),
    (lambda p: non_image_model(p / "vec.onnx"), "3-channel image input"),
    (lambda p: fixed_batch_embedder(p / "c1.onnx", input_shape=(1, 1, 112, 112)), "3-channel image input"),
])
def test_bad_models_raise_clear_errors(tmp_path, make, fragment):
    with pytest.raises(FiqaError) as info:
        load_runner(str(make(tmp_path)))
    assert fragment in str(info.value)


def test_the_shared_model_runs_in_bf16_where_its_ranking_check_passed(real_model, tmp_path, monkeypatch):
    monkeypatch.setenv("FIQA_TRT_CACHE", str(tmp_path))  # only the registry's record counts
    if "openvino" not in available_backends() or "bf16" not in supported_precisions("openvino"):
        pytest.skip("needs OpenVINO on a CPU with native bf16")
    runner = load_runner(str(real_model))
    assert (runner.name, runner.precision) == ("openvino", "bf16")
