"""FROQ re-implemented (evaluation.froq): the pseudo-labels on the real model, the greedy layer selection on arrays."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fiqa_trt.engine.precision import spearman
from fiqa_trt.errors import FiqaError
from fiqa_trt.evaluation import froq


def test_the_occlusion_grid_covers_the_face_in_64_squares():
    cells = froq.occlusion_cells(112, 112)
    assert len(cells) == 64 and cells[0] == (0, 14, 0, 14) and cells[-1] == (98, 112, 98, 112)
    mask = np.zeros((112, 112), int)
    for y0, y1, x0, x1 in cells:
        mask[y0:y1, x0:x1] += 1
    assert mask.min() == mask.max() == 1
    assert len(froq.occlusion_cells(224, 224)) == 64 and froq.occlusion_cells(224, 224)[1] == (0, 28, 28, 56)


def test_pseudo_labels_are_the_mean_of_the_flip_and_occlusion_cosines(real_model, lfw_files):
    import cv2

    from fiqa_trt.engine.runners import load_runner

    runner = load_runner(str(real_model), "onnxruntime", "fp32")
    crops = np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in lfw_files[::4000][:2]])
    got = froq.pseudo_labels(runner, crops, batch=1)

    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    for crop, label in zip(crops[:1], got):  # the crop alone, its copies made here
        own = runner.embed(crop[None])[0].astype(np.float64)
        flip = cos(own, runner.embed(np.ascontiguousarray(crop[None, :, ::-1]))[0])
        copies = []
        for y in range(0, 112, 14):
            for x in range(0, 112, 14):
                copies.append(crop.copy())
                copies[-1][y : y + 14, x : x + 14] = 0
        occluded = [cos(own, e) for e in runner.embed(np.stack(copies)).astype(np.float64)]
        assert len(occluded) == 64 and label == pytest.approx((flip + np.mean(occluded)) / 2, abs=1e-5)
    assert np.all((got > 0) & (got < 1))


def test_greedy_selection_finds_the_layers_the_labels_follow():
    rng = np.random.default_rng(0)
    n, layers = 600, 30
    truth = rng.normal(size=n)
    norms = rng.normal(size=(n, layers)) + 10.0
    norms[:, 4] += 0.9 * truth  # the best single layer
    norms[:, 11] += 0.8 * truth + 0.5 * rng.normal(size=n)
    norms[:, 17] += 0.7 * truth
    norms[:, 20] = 10.0 - 2.0 * truth  # anti-correlated: never chosen
    labels = truth + 0.6 * rng.normal(size=n)
    names = [f"L{j}" for j in range(layers)]
    sel = froq.select(norms, labels, names)
    assert sel.layers[0] == "L4" and set(sel.layers) >= {"L4", "L17"} and "L20" not in sel.layers
    assert len(sel.steps) == froq.TOP and [s[0] for s in sel.steps][: len(sel.layers)] == sel.layers
    best = max(c for _, c in sel.steps)
    assert sel.correlation == best == pytest.approx(spearman(froq.quality(norms[:, [names.index(x) for x in
                                                                                     sel.layers]]), labels))
    assert sel.correlation > sel.utilities["L4"]  # the set beats its best layer
    assert sel.utilities["L20"] < 0


def test_selection_refuses_what_it_cannot_use():
    with pytest.raises(FiqaError, match="at least 3 images"):
        froq.select(np.ones((2, 3)), np.array([1.0, 2.0]), ["a", "b", "c"])
    with pytest.raises(FiqaError, match="no layer's norm varies"):
        froq.select(np.ones((5, 2)), np.arange(5.0), ["a", "b"])
    with pytest.raises(FiqaError, match="one name per column"):
        froq.select(np.ones((5, 2)), np.arange(5.0), ["a"])


def test_the_layers_are_chosen_on_a_runner_from_every_observable_layer(real_model, lfw_files):
    import cv2

    from fiqa_trt.engine.runners import load_runner

    runner = load_runner(str(real_model), "onnxruntime", "fp32")
    crops = np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in lfw_files[::1500][:6]])
    names = [layer.name for layer in runner.layers()]
    sel = froq.choose_layers(runner, crops)
    assert sel.faces == 6 and sel.layers and set(sel.layers) <= set(names) and set(sel.utilities) == set(names)
    norms = froq.layer_norms(runner, crops, names, batch=4)
    assert norms.shape == (6, len(names)) and np.all(norms > 0)
    assert sel == dataclasses.replace(froq.select(norms, froq.pseudo_labels(runner, crops), names), faces=6)


def test_the_check_layer_is_the_one_whose_norm_drops_under_every_kind():
    """Column 1 drops under both kinds for most faces, column 0 under one kind only, column 2 under none: the check
    layer is column 1, with its agreement per kind."""
    from fiqa_trt.evaluation import degradations

    rng = np.random.default_rng(0)
    clean = rng.uniform(5, 10, size=(100, 3))
    blur = clean * np.array([0.5, 0.8, 1.2]) + np.c_[np.zeros(100), np.where(np.arange(100) < 5, 10.0, 0.0),
                                                     np.zeros(100)]
    dark = clean * np.array([1.5, 0.9, 1.1])
    name, agreed = degradations.check_layer(clean, {"blur": blur, "dark": dark}, ["a", "b", "c"])
    assert name == "b" and agreed == {"blur": 0.95, "dark": 1.0}
    with pytest.raises(ValueError):
        degradations.check_layer(clean, {}, ["a", "b", "c"])


def test_a_recipe_reading_layer_signals_gets_the_check_layer_then_froqs(real_model, lfw):
    """`calibrate.with_layers` on real faces: a recipe reading `froq` gets FROQ's selection; one reading `obs:<i>`
    gets the check layer first, chosen on the check faces (whose norm, on the real MobileFaceNet, drops under every
    degradation kind for at least 90% of them), then FROQ's layers."""
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.engine.settings import ScoringSettings
    from fiqa_trt.evaluation import calibrate, degradations
    from fiqa_trt.quality.recipe import FLIP_SPEC, Recipe

    runner = load_runner(str(real_model), "onnxruntime", "fp32")
    plain = calibrate.fit_session(runner, ScoringSettings(seed=0), None, ("off", False), perturb=(FLIP_SPEC,)).scorer
    keys = sorted(str(p.relative_to(lfw)) for p in lfw.glob("*/*.jpg"))[::400][:30]
    froq_only = Recipe("f", (), "weighted_log", signals=(("froq", 1.0),), realign="off")
    observed = Recipe("o", (FLIP_SPEC,), "weighted_log", signals=(("lognorm:all", 1.0), ("obs-all:0", 1.0)),
                      realign="off")
    done, info = calibrate.with_layers(runner, plain, froq_only, lfw, keys[:12])
    assert done.layers == tuple(info["layers"]) and "check_layer" not in info
    done2, info2 = calibrate.with_layers(runner, plain, observed, lfw, keys[:12], check_keys=keys)
    assert info2["layers"] == info["layers"] and info2["check_faces"] == 30
    assert done2.layers == (info2["check_layer"],)  # obs-all:0 alone: the check layer alone is observed
    both = Recipe("b", (), "weighted_log", signals=(("obs:1", 1.0), ("obs:0", 1.0)), realign="off")
    done3, _ = calibrate.with_layers(runner, plain, both, lfw, keys[:12], check_keys=keys)
    ranked = [n for n, _ in info["steps"] if n != info2["check_layer"]]  # FROQ's greedy order, check layer out
    assert done3.layers == (info2["check_layer"], ranked[0])
    mixed = Recipe("m", (), "weighted_log", signals=(("froq", 1.0), ("obs:0", 1.0)), realign="off")
    with pytest.raises(FiqaError, match="check layer would enter FROQ's mean"):
        calibrate.with_layers(runner, plain, mixed, lfw, keys[:12], check_keys=keys)
    assert set(info2["check_agreement"]) == set(degradations.KINDS)
    assert min(info2["check_agreement"].values()) >= 0.9
    already = Recipe("o", (), "weighted_log", signals=(("obs:0", 1.0),), realign="off", layers=("644",))
    assert calibrate.with_layers(runner, plain, already, lfw, keys) == (already, None)
