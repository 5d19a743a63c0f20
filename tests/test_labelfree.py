"""Calibration without identity labels (evaluation.labelfree): pseudo-labels, the fit to them, names never read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fiqa_trt.errors import FiqaError
from fiqa_trt.evaluation import calibrate, labelfree


def test_the_pseudo_label_is_the_mean_of_standardised_ranks():
    r = labelfree.standard_ranks(np.array([3.0, 1.0, 2.0, 2.0]))
    np.testing.assert_allclose(r, (np.array([3.0, 0.0, 1.5, 1.5]) - 1.5) / np.std([3.0, 0.0, 1.5, 1.5]))
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([40.0, 10.0, 30.0, 20.0])
    np.testing.assert_allclose(labelfree.combine({"a": a, "b": b}),
                               (labelfree.standard_ranks(a) + labelfree.standard_ranks(b)) / 2)
    assert labelfree.combine({"a": a, "b": 7 * a + 100}).tolist() == labelfree.standard_ranks(a).tolist()


def test_the_fit_to_labels_finds_the_weights_the_labels_follow():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=500), rng.normal(size=500)
    labels = x + 0.5 * y  # in standard units, y weighs half as much as x
    w = calibrate.descend({"x": 3 * x, "y": y / 4}, lambda q: -np.corrcoef(q, labels)[0, 1])
    assert w["x"] == 1.0 and w["y"] / 12 == pytest.approx(0.5, rel=0.1)  # 3x + w y / 4 = 3 (x + w y / 12)


def test_the_sample_is_drawn_by_content_name_and_seed():
    keys = [f"{i:064x}.jpg" for i in range(50)]
    one = labelfree.sample(keys, 10, 0)
    assert one == labelfree.sample(list(reversed(keys)), 10, 0) and len(one) == 10 and one == sorted(one)
    assert one != labelfree.sample(keys, 10, 1) and labelfree.sample(keys, 99, 0) == keys


def _faces(lfw, count):
    from fiqa_trt.evaluation.protocols import identities

    groups = [ks[:3] for ks in identities(lfw).values() if len(ks) >= 3]
    return [k for ks in groups[: count // 3] for k in ks]


def test_the_label_free_fit_reads_no_name(lfw, real_model, tmp_path):
    """The same faces as identity folders and flattened under other names (in another order) give the same fitted
    recipe and report: the fit reads the pixels, never a file or folder name."""
    from fiqa_trt.engine.recipes import RECIPES
    from fiqa_trt.engine.runners import load_runner

    keys = _faces(lfw, 12)
    grouped, flat = tmp_path / "grouped", tmp_path / "flat"
    for k in keys:
        (grouped / k).parent.mkdir(parents=True, exist_ok=True)
        (grouped / k).symlink_to(lfw / k)
    flat.mkdir()
    for i, k in enumerate(reversed(keys)):
        (flat / f"face_{i:03d}.JPG").write_bytes((lfw / k).read_bytes())  # copies, upper-case suffix
    runner = load_runner(str(real_model), "onnxruntime", "fp32")
    recipe = RECIPES["lognorm-ui-flip"]
    one = labelfree.calibrate_unlabelled(runner, grouped, recipe, seed=3, batch_size=8, count=8, realign="off")
    two = labelfree.calibrate_unlabelled(runner, flat, recipe, seed=3, batch_size=8, count=8, realign="off")
    assert one.recipe.to_dict() == two.recipe.to_dict() and one.report == two.report
    assert one.report["images"] == 12 and one.report["labels"]["sample"] == 8 and one.sample == two.sample
    assert all(len(k) == 64 + 4 for k in one.sample)  # content names: the SHA-256 of the file and its suffix
    assert one.recipe.calibration is not None and len(one.recipe.centre) == 512
    assert set(one.report["labels"]["component_correlation"]) == {"stability", "norm", "centre"}
    assert one.report["degradation_check"]["faces"] == 8
    other = labelfree.calibrate_unlabelled(runner, flat, recipe, seed=4, batch_size=8, count=8, realign="off")
    assert other.sample != one.sample  # the seed draws the sample


def test_calibrate_without_identity_folders_fits_on_pseudo_labels(lfw, real_model, tmp_path):
    from tests.cli_runner import run_cli

    flat = tmp_path / "flat"
    flat.mkdir()
    for k in _faces(lfw, 6):
        (flat / k.split("/")[1]).symlink_to(lfw / k)
    out = tmp_path / "fitted.json"
    result = run_cli("calibrate", str(real_model), str(flat), "--recipe", "lognorm-ui-flip", "--no-store",
                     "--backend", "onnxruntime", "--precision", "fp32", "--realign", "off", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "no identity labels: pseudo-labels of 6 sampled images" in result.stderr
    doc = json.loads(out.read_text())
    assert doc["recipe"]["name"] == "lognorm-ui-flip-calibrated" and "split" not in doc["report"]
    refused = run_cli("calibrate", str(real_model), str(flat), "--no-labels", "--pairs", str(tmp_path / "p.txt"),
                      "--no-store", "--backend", "onnxruntime")
    assert refused.returncode != 0 and "--pairs needs the identity labels" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_calibrate_chooses_froqs_layers_and_froq_then_runs_them(lfw, real_model, tmp_path, monkeypatch):
    from fiqa_trt.engine.resolve import resolve_recipe
    from tests.cli_runner import run_cli

    monkeypatch.setenv("FIQA_TRT_CACHE", str(tmp_path / "cache"))
    flat = tmp_path / "flat"
    flat.mkdir()
    for k in _faces(lfw, 6):
        (flat / k.split("/")[1]).symlink_to(lfw / k)
    result = run_cli("calibrate", str(real_model), str(flat), "--recipe", "froq", "--backend", "onnxruntime",
                     "--precision", "fp32", "--realign", "off")
    assert result.returncode == 0, result.stderr
    assert "FROQ's layers (chosen on 6 faces" in result.stderr
    recipe, source = resolve_recipe("froq", real_model)
    assert source.startswith("calibrated") and recipe.name == "froq-calibrated" and recipe.layers
    assert dict(recipe.signals) == {"froq": 1.0} and recipe.perturb == ()


def test_an_empty_folder_is_refused(tmp_path):
    with pytest.raises(FiqaError, match="holds no image files"):
        labelfree.image_files(tmp_path)
