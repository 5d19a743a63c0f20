"""A model of the BGR per-channel-mean convention (VGGFace2 style: BGR, mean 103.939, 116.779, 123.68, std 1),
stated once, by options or in its fiqa-trt ONNX metadata written by `fiqa-trt export`, is scored, evaluated and
calibrated with that preprocessing. The model's embedding is the mean of each channel of the input the runner gave
it, so the `norm` recipe's quality, the log of that vector's length, shows what the runner received."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli_runner import run_cli
from tests.conftest import write_image
from tests.onnx_models import channel_mean_embedder

MEAN = (103.939, 116.779, 123.68)  # in BGR order
STATED = ["--color", "BGR", "--mean", ",".join(map(str, MEAN)), "--std", "1"]
RUNTIME = ["--backend", "onnxruntime", "--precision", "fp32"]


def fiqa(*args):
    proc = run_cli(*args)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """Identity folders of uniform-colour 112x112 PNGs, and each image's expected quality under the stated
    preprocessing: log |(B - 103.939, G - 116.779, R - 123.68)|."""
    root = tmp_path_factory.mktemp("colours") / "ids"
    rng = np.random.default_rng(5)
    expected = {}
    for i in range(10):
        base = rng.integers(20, 235, 3)
        for j in range(4):
            rgb = np.clip(base + rng.integers(-12, 13, 3), 0, 255).astype(np.uint8)
            key = f"id{i}/{j}.png"
            (root / f"id{i}").mkdir(parents=True, exist_ok=True)
            write_image(root / key, np.broadcast_to(rgb, (112, 112, 3)).copy())
            r, g, b = (float(v) for v in rgb)
            expected[key] = float(np.log(np.linalg.norm([b - MEAN[0], g - MEAN[1], r - MEAN[2]])))
    return root, expected


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """The bare model, and its copy with the preprocessing and the norm recipe in its metadata (fiqa-trt export)."""
    folder = tmp_path_factory.mktemp("bgr")
    bare = channel_mean_embedder(folder / "bare.onnx")
    stated = folder / "stated.onnx"
    fiqa("export", bare, *STATED, "--recipe", "norm", "-o", stated)
    return bare, stated


def qualities(path: Path, root: Path) -> dict[str, float]:
    with open(path, newline="") as f:
        return {str(Path(r["path"]).relative_to(root)): float(r["quality"]) for r in csv.DictReader(f)}


def test_export_writes_the_stated_preprocessing_and_recipe(models):
    import onnx

    from fiqa_trt.onnx_export.graph import read_metadata

    meta = read_metadata(onnx.load(str(models[1])))
    assert meta["color"] == "BGR" and meta["mean"] == list(MEAN) and meta["std"] == [1.0, 1.0, 1.0]
    assert meta["recipe"]["name"] == "norm" and meta["input_size"] == [112, 112]


def test_scored_with_the_stated_preprocessing_by_options_or_metadata(models, colours, tmp_path):
    bare, stated = models
    root, expected = colours
    fiqa("score", root, "-m", bare, *STATED, *RUNTIME, "--recipe", "norm", "-o", tmp_path / "options.csv")
    proc = fiqa("score", root, "-m", stated, *RUNTIME, "-v", "-o", tmp_path / "metadata.csv")
    assert "color: BGR (ONNX metadata)" in proc.stderr and "recipe: norm (ONNX metadata)" in proc.stderr
    for name in ("options.csv", "metadata.csv"):
        got = qualities(tmp_path / name, root)
        assert got.keys() == expected.keys()
        assert np.allclose([got[k] for k in expected], list(expected.values()), rtol=0, atol=2e-5), name
    plain = qualities(tmp_path / "options.csv", root)  # the ArcFace guess would give other qualities
    fiqa("score", root, "-m", bare, *RUNTIME, "--recipe", "norm", "-o", tmp_path / "guess.csv")
    assert not np.allclose(list(qualities(tmp_path / "guess.csv", root).values()), list(plain.values()), atol=0.1)


def test_evaluated_with_the_stated_preprocessing(models, colours, tmp_path):
    root, expected = colours
    fiqa("eval", root, "--generate", "-m", models[1], *RUNTIME, "--bootstrap", "0", "--no-plots", "-q",
         "-o", tmp_path / "ev")
    with open(tmp_path / "ev" / "qualities.csv", newline="") as f:
        got = {r["path"] if "path" in r else r["key"]: float(r["recipe:norm"]) for r in csv.DictReader(f)}
    assert np.allclose([got[k] for k in expected], list(expected.values()), rtol=0, atol=2e-5)
    resolution = json.loads((tmp_path / "ev" / "results.json").read_text())["settings"]["resolution"]
    assert resolution["mean"] == {"value": list(MEAN), "source": "ONNX metadata"}
    assert resolution["color"] == {"value": "BGR", "source": "ONNX metadata"}


def test_calibrated_with_the_stated_preprocessing(models, colours, tmp_path):
    root, expected = colours
    fiqa("calibrate", models[1], root, *RUNTIME, "--recipe", "norm", "--no-store", "--bootstrap", "0",
         "-o", tmp_path / "cal.json")
    fitted = json.loads((tmp_path / "cal.json").read_text())["recipe"]
    want = np.percentile(list(expected.values()), [1, 99])
    assert np.allclose(fitted["calibration"], want, atol=1e-4), (fitted["calibration"], want)
