"""The quality layer on arrays: the Pass, each signal, the registry, Recipe.evaluate, the 0-100 scales."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fiqa_trt import kernels
from fiqa_trt.errors import FiqaError
from fiqa_trt.quality import Pass, Recipe, fuse, scale, signals
from fiqa_trt.quality.recipe import FLIP_SPEC

FLIP = (FLIP_SPEC,)


def _emb(n=5, views=2, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 1 + views, d)).astype(np.float32)


def test_a_pass_computes_once_and_selects_specs():
    emb = _emb(views=3)
    p = Pass(emb, [0, 1, 0])
    assert p.norms() is p.norms()  # cached
    np.testing.assert_array_equal(p.norms(), np.linalg.norm(emb, axis=2))
    assert p.columns(0) == [0, 2] and p.columns(1) == [1] and p.columns(2) == []
    sub = p.select([1, 0])  # spec 0 of the new pass is spec 1 here
    assert sub.view_specs == (0, 1, 1)
    np.testing.assert_array_equal(sub.embeddings, emb[:, [0, 2, 1, 3]])
    cos, q = p.kernel("min")
    np.testing.assert_array_equal(p.view_cosines(), cos)
    np.testing.assert_array_equal(q, kernels.quality(emb, "min")[1])
    with pytest.raises(ValueError):
        Pass(emb, [0, 1])
    observed = np.arange(5 * 4 * 2, dtype=np.float32).reshape(5, 4, 2)  # reduced activations of the same forwards
    np.testing.assert_array_equal(Pass(emb, [0, 1, 0], observed, ("a", "b")).select([1]).observed, observed[:, [0, 2]])
    with pytest.raises(ValueError):
        Pass(emb, [0, 1, 0], observed[:, :2], ("a", "b"))


def test_each_signal_reads_what_it_says():
    centre = (1.0, 0.0)
    emb = np.array([[[0.0, 3.0], [1.0, 0.0]], [[-2.0, 0.0], [0.0, 5.0]]], np.float32)  # 2 images, 2 forwards, D=2
    r = Recipe("x", FLIP, "weighted_log", signals=(("ui:all", 1.0), ("ui", 1.0), ("lognorm", 1.0),
                                                   ("lognorm:all", 1.0), ("cos:0", 1.0)), centre=centre)
    values = r.read_signals(Pass(emb, [0]))
    np.testing.assert_allclose(values["ui"], np.log([1.0, 2.0]))  # the original's distance 1 - cos
    np.testing.assert_allclose(values["ui:all"], np.log([0.5, 1.5]))  # the log of the mean distance
    np.testing.assert_allclose(values["lognorm"], np.log([3.0, 2.0]))
    np.testing.assert_allclose(values["lognorm:all"], [np.log(3.0) / 2, (np.log(2.0) + np.log(5.0)) / 2])
    np.testing.assert_allclose(values["cos:0"], np.log([1e-6, 1e-6]))  # orthogonal views: the floor
    on_centre = np.array([[[4.0, 0.0], [1.0, 0.0]]], np.float32)
    assert np.isfinite(r.read_signals(Pass(on_centre, [0]), ["ui"])["ui"]).all()  # the floor, not -inf
    with pytest.raises(FiqaError, match="another model"):
        r.read_signals(Pass(np.ones((1, 2, 3), np.float32), [0]), ["ui"])
    with pytest.raises(FiqaError, match="has no centre"):
        Recipe("z", FLIP, "weighted_log", signals=(("ui", 1.0),)).check_runnable()
    with pytest.raises(FiqaError, match="gives no view"):
        Recipe("v", ("gaussian", "border"), "weighted_log", signals=(("cos:1", 1.0),)).evaluate(
            Pass(_emb(views=1), [0]))


def test_evaluate_is_the_weighted_sum_of_the_signals_and_stability_is_the_kernel():
    emb = _emb(n=7, views=2)
    emb[3] = 0  # a zero embedding: NaN
    centre = tuple(np.eye(8)[0])
    r = Recipe("w", (FLIP_SPEC, "affine:rot=6,scale=1,flip=0"), "weighted_log",
               signals=(("lognorm:all", 1.0), ("ui:all", 0.5), ("cos:1", 2.0), ("cos:0", 0.0)), centre=centre)
    p = Pass(emb, [0, 1])
    got = r.evaluate(p)
    values = r.read_signals(p)
    expected = values["lognorm:all"] + 0.5 * values["ui:all"] + 2.0 * values["cos:1"]
    np.testing.assert_array_equal(np.delete(got.quality, 3), np.delete(expected, 3))
    assert np.isnan(got.quality[3]) and got.quality.dtype == np.float64
    np.testing.assert_array_equal(got.cosines, kernels.quality(emb)[0])
    np.testing.assert_array_equal(fuse(values, dict(r.signals)), got.quality)
    seed = Recipe("s", FLIP, agg="median")
    np.testing.assert_array_equal(seed.evaluate(p.select([0])).quality, kernels.quality(emb[:, :2], "median")[1])


def test_adding_a_signal_is_one_class():
    @signals.register
    class Spread(signals.Signal):
        name, words = "spread-test", "log spread of the forwards"

        def read(self, p):
            return p.xp.log(p.norms().astype(p.xp.float64).std(axis=1) + 1)

    try:
        r = Recipe("n", FLIP, "weighted_log", signals=(("spread-test", 1.0),))
        assert "log spread of the forwards" in r.describe()
        emb = _emb(views=1)
        np.testing.assert_allclose(r.evaluate(Pass(emb, [0])).quality,
                                   np.log(np.linalg.norm(emb, axis=2).std(axis=1) + 1), rtol=1e-6)
        assert Recipe.from_dict(r.to_dict()) == r
    finally:
        signals.SIGNALS.pop("spread-test")
    with pytest.raises(FiqaError, match="unknown signal"):
        Recipe("n", FLIP, "weighted_log", signals=(("spread-test", 1.0),))


def test_recipe_validation():
    with pytest.raises(FiqaError, match="unknown signal"):
        Recipe("x", fusion="weighted_log", signals=(("cos:1", 1.0),))  # one spec: cos:0 only
    with pytest.raises(FiqaError, match="unknown signal"):
        Recipe("x", fusion="weighted_log", signals=(("cos:a", 1.0),))
    with pytest.raises(FiqaError, match="unit vector"):
        Recipe("w", FLIP, fusion="weighted_log", signals=(("ui", 1.0),), centre=(2.0, 0.0))
    r = Recipe("u", FLIP, "weighted_log", signals=(("ui:all", 0.0), ("lognorm", 1.0)))
    assert r.reads_centre and not r.uses_centre
    r.check_runnable()  # an unweighted ui signal needs no centre
    assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_calibrated_scale_is_linear_clipped_and_rounded():
    s = scale.Scale.calibrated(0.9, 1.1)
    np.testing.assert_array_equal(s(np.array([0.8, 0.9, 1.0, 1.0549, 1.2, np.nan])), [0, 0, 50, 77, 100, np.nan])
    assert np.isnan(scale.unified(np.array([1.0]), None)).all()
    assert scale.fit_calibration(np.arange(101.0)) == (1.0, 99.0)
    assert s.quality_at(50) == pytest.approx(1.0) and s(s.quality_at(30)) == 30
    r = Recipe("c", calibration=(0.9, 1.1))
    assert scale.for_recipe(r) == s and scale.for_recipe(None) is None


def test_generic_scale_of_the_stability_score():
    g = scale.Scale.generic()
    np.testing.assert_array_equal(g(np.array([0.5, 0.9, 0.99, 0.999, 1.0, np.nan])), [0, 0, 50, 100, 100, np.nan])
    q = np.sort(np.random.default_rng(0).uniform(0.85, 1.0, 200))
    assert np.all(np.diff(g(q)) >= 0)  # monotonic
    assert g.quality_at(50) == pytest.approx(0.99) and g(g.quality_at(70)) == 70
    plain = Recipe("stability")
    assert scale.for_recipe(plain) is None and scale.for_recipe(plain, generic=True) == g
    weighted = Recipe("n", FLIP, "weighted_log", signals=(("lognorm", 1.0),))
    assert scale.for_recipe(weighted, generic=True) is None  # a weighted quality has no generic scale
    assert "fiqa-trt calibrate" in scale.GENERIC_WARNING


def _gpu_reason() -> str | None:
    from fiqa_trt.kernels.cuda import usable_device

    return usable_device()


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_reason() is not None, reason=f"needs a CUDA device: {_gpu_reason()}")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_pass_on_the_gpu_gives_numpy_qualities(dtype):
    """Signals read and fused on the device (CuPy) give NumPy's qualities, and come back as NumPy arrays."""
    import cupy

    rng = np.random.default_rng(1)
    centre = rng.normal(size=64)
    r = Recipe("g", (FLIP_SPEC,), "weighted_log", signals=(("ui:all", 0.4), ("lognorm:all", 1.0), ("cos:0", 0.7)),
               centre=tuple(centre / np.linalg.norm(centre)))
    emb = rng.normal(size=(33, 2, 64)).astype(dtype)
    cpu, gpu = r.evaluate(Pass(emb, [0])), r.evaluate(Pass(cupy.asarray(emb), [0]))
    assert isinstance(gpu.quality, np.ndarray) and isinstance(gpu.cosines, np.ndarray)
    np.testing.assert_allclose(gpu.quality, cpu.quality, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gpu.cosines, cpu.cosines, atol=1e-5)
    g_norms = cupy.asnumpy(Pass(cupy.asarray(emb), [0]).norms())
    np.testing.assert_allclose(g_norms, np.linalg.norm(emb.astype(np.float32), axis=2), rtol=1e-5)
