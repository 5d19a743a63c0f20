"""The template check and realignment on real crops (shared LFW, shared MobileFaceNet): each crop is put on the
template by itself, a crop's score does not depend on the other crops of the run, and the geometry's matrix
conventions."""

from __future__ import annotations

import numpy as np
import pytest

from fiqa_trt.engine import geometry

cv2 = pytest.importorskip("cv2")


def _rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _moved(crop: np.ndarray, dx: float, dy: float) -> np.ndarray:
    return cv2.warpAffine(crop, np.float64([[1, 0, dx], [0, 1, dy]]), (112, 112), borderMode=cv2.BORDER_REPLICATE)


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m = geometry.similarity_transform(src, src @ rot.T + shift)
    np.testing.assert_allclose(m, np.hstack([rot, shift[:, None]]), atol=1e-9)
    assert geometry.scale_of(m) == pytest.approx(1.7) and geometry.rotation_deg(m) == pytest.approx(np.degrees(0.3))
    np.testing.assert_allclose(geometry.compose(m, geometry.invert(m)), geometry.IDENTITY, atol=1e-12)


def test_known_templates_are_eight_pixels_apart():
    assert geometry.template((112, 112)) is not geometry.ARCFACE_112
    np.testing.assert_allclose(geometry.template((224, 224)), 2 * geometry.ARCFACE_112)
    m = geometry.similarity_transform(geometry.SPHEREFACE_112, geometry.ARCFACE_112)
    np.testing.assert_allclose(m, [[1, 0, 8], [0, 1, 0]], atol=1e-9)


def test_dali_matrices_follow_dali_pixel_corners():
    """A forward OpenCV matrix becomes DALI's output-to-source matrix with pixel corners at integers: a 2x resize
    maps output centre (0.5, 0.5) to source (0.25, 0.25), and the identity stays exactly the identity."""
    np.testing.assert_array_equal(geometry.to_dali(geometry.IDENTITY), geometry.IDENTITY.astype(np.float32))
    up = geometry.resize_matrix((10, 10), (20, 20))
    np.testing.assert_allclose(geometry.to_dali(up) @ [0.5, 0.5, 1], [0.25, 0.25], atol=1e-7)
    shift = np.float64([[1, 0, 8], [0, 1, -3]])
    np.testing.assert_allclose(geometry.to_dali(shift), [[1, 0, -8], [0, 1, 3]], atol=1e-7)


def test_each_crop_is_put_on_the_template_by_itself(lfw_files):
    """The shared crops follow the SphereFace template: each is moved exactly 8 px right; the same crops moved onto
    the ArcFace template are left exactly as they are; moved off both templates, each goes back by its own points;
    `on` moves every crop by its own points; a crop without a face is left as it is."""
    from fiqa_trt.engine.template import Landmarks, Realigner

    crops = np.stack([_rgb(f) for f in lfw_files[::500]])
    realigner = Realigner((112, 112))
    on_sphereface = np.all(np.isclose(realigner.matrices(crops), [[1, 0, 8], [0, 1, 0]]), axis=(1, 2))
    assert on_sphereface.mean() >= 0.9
    assert realigner.counts["on the SphereFace 96x112 template"] == on_sphereface.sum()
    arcface = np.stack([_moved(c, 8, 0) for c in crops])
    assert np.mean(np.all(realigner.matrices(arcface) == geometry.IDENTITY, axis=(1, 2))) >= 0.9
    rng = np.random.default_rng(5)
    moves = rng.uniform([-2, 6.5], [2, 8.5], (len(crops), 2))
    moves[:, 1] *= rng.choice([-1, 1], len(crops))
    off = np.stack([_moved(c, dx, dy) for c, (dx, dy) in zip(arcface, moves)])  # 6.5+ px off both templates
    back = np.stack([cv2.warpAffine(c, m, (112, 112), borderMode=cv2.BORDER_REPLICATE)
                     for c, m in zip(off, realigner.matrices(off))])

    def residual(faces):  # per crop: how far the centre of O-Net's points is from the template's (a face's own
        points, _ = Landmarks()(faces)  # shape is not the template's: centres only)
        return np.linalg.norm(points.mean(axis=1) - geometry.ARCFACE_112.mean(axis=0), axis=1)

    assert realigner.counts["realigned by their own points"] >= 0.8 * len(crops)
    assert np.median(residual(back)) < 2.0 < np.median(residual(off)) - 4
    on = Realigner((112, 112), "on")
    assert not np.any(np.all(on.matrices(arcface) == geometry.IDENTITY, axis=(1, 2)))
    flat = np.full((1, 112, 112, 3), 128, np.uint8)
    assert np.array_equal(realigner.matrices(flat)[0], geometry.IDENTITY)
    np.testing.assert_array_equal(realigner.warp(flat[0]), flat[0])


def test_a_crop_scores_the_same_in_any_set(lfw_files, real_model):
    """The default recipe realigns: a crop's quality and 0-100 score are the same scored with the whole set, with
    random subsets of it in any order and batch size, and alone."""
    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.engine.resolve import resolve_recipe
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.engine.scorer import Scorer
    from fiqa_trt.engine.template import realigner_for

    runner = load_runner(str(real_model), "onnxruntime", "fp32", threads=2)
    recipe, _ = resolve_recipe(None, real_model)
    files = lfw_files[7::613]
    items = [Item(str(f), f"{f.parent.name}/{f.name}") for f in files]

    def scored(subset, batch_size):
        aligner, _ = realigner_for((112, 112), recipe.realign)
        scorer = Scorer(runner, recipe=recipe, aligner=aligner, batch_size=batch_size, threads=1)
        return {r.path: (r.quality, r.score) for r in scorer.score([items[i] for i in subset])}

    everything = scored(range(len(items)), 8)
    rng = np.random.default_rng(11)
    for size, batch_size in ((1, 1), (3, 2), (len(items) // 2, 5)):
        subset = rng.choice(len(items), size, replace=False)
        for path, (quality, score) in scored(subset, batch_size).items():
            assert quality == pytest.approx(everything[path][0], abs=1e-5)
            assert score == everything[path][1]
