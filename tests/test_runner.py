"""ONNX graph rewriting and the ONNX Runtime runner: dynamic batch, configs, clear errors for bad models."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fiqa_trt.engine.runners import load_runner
from fiqa_trt.errors import FiqaError
from fiqa_trt.onnx_export import graph
from tests.onnx_models import fixed_batch_embedder, non_image_model


def _per_sample(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])


@pytest.mark.parametrize("constant_node", [False, True])
def test_fixed_batch_rewrite_is_exact(tmp_path, constant_node):
    path = fixed_batch_embedder(tmp_path / "m.onnx", shape_as_constant_node=constant_node)
    dynamic, rewritten = graph.make_batch_dynamic(onnx.load(str(path)))
    assert rewritten == 1 and graph.fixed_batch_size(dynamic) is None
    onnx.checker.check_model(dynamic)
    x = np.random.default_rng(0).standard_normal((5, 3, 112, 112)).astype(np.float32)
    got = ort.InferenceSession(dynamic.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    np.testing.assert_allclose(got[0], _per_sample(path, x), rtol=1e-5, atol=1e-6)


def test_runner_embeds_large_batches_of_a_fixed_batch_model(random_model):
    runner = load_runner(str(random_model))
    assert runner.batch_limit is None and runner.config.embedding_size == 64
    x = np.random.default_rng(1).standard_normal((70, 3, 112, 112)).astype(np.float32)  # > max_batch: chunked
    np.testing.assert_allclose(runner.embed(x), _per_sample(random_model, x), rtol=1e-5, atol=1e-6)


def test_metadata_round_trip_sets_the_config(tmp_path, random_model):
    model = onnx.load(str(random_model))
    graph.write_metadata(model, {"input_size": [112, 112], "color": "BGR", "mean": 127.5, "std": 128.0,
                                 "embedding_size": 64, "name": "tagged"})
    onnx.save(model, str(tmp_path / "tagged.onnx"))
    cfg = load_runner(str(tmp_path / "tagged.onnx")).config
    assert (cfg.color, cfg.std, cfg.name, cfg.source) == ("BGR", (128.0,) * 3, "tagged", "metadata")
    assert load_runner(str(tmp_path / "tagged.onnx"), color="RGB").config.source == "user"


def test_unknown_model_gets_the_arcface_convention_with_a_warning(random_model, caplog):
    cfg = load_runner(str(random_model)).config
    assert (cfg.color, cfg.mean, cfg.std, cfg.input_size) == ("RGB", (127.5,) * 3, (127.5,) * 3, (112, 112))
    assert "no preprocessing metadata" in caplog.text


def test_the_shared_model_is_recognised_and_batched(real_model, lfw_files):
    runner = load_runner(str(real_model))
    cfg = runner.config
    assert (cfg.name, cfg.color, cfg.mean, cfg.std, cfg.embedding_size) == (
        "faceplugin-mobilefacenet", "RGB", (127.0,) * 3, (128.0,) * 3, 512)
    assert runner.batch_limit is None
    from PIL import Image

    x = np.stack([(np.asarray(Image.open(f).convert("RGB"), np.float32) - 127) / 128 for f in lfw_files[:6]])
    x = x.transpose(0, 3, 1, 2).copy()
    np.testing.assert_allclose(runner.embed(x), _per_sample(real_model, x), rtol=1e-4, atol=1e-4)


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
