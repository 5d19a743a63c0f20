"""The DALI perturbation pipeline on the CPU: each perturbation does what its registry entry says."""

from __future__ import annotations

import numpy as np
import pytest

from fiqa_trt.engine.inputs import Item, check_item
from fiqa_trt.weights.model_config import ModelConfig
from fiqa_trt.engine.perturbations import parse_spec, plan_views
from fiqa_trt.engine.pipeline import PerturbPipeline, Sample, mixup_partner
from tests.conftest import write_image

RAW = ModelConfig(input_size=(112, 112))


def items_of(tmp_path, arrays, fmt="png") -> list[Sample]:
    """The pipeline's samples of image files written from `arrays` (read and checked as the producer does)."""
    out = []
    for i, a in enumerate(arrays):
        path = write_image(tmp_path / f"im{i}.{fmt}", a)
        item = check_item(Item(str(path), path.name))
        assert item.error is None
        out.append(Sample.of(item, RAW.input_size))
    return out


def run(items, spec, views=1, seed=0, config=RAW, partners=None):
    pipe = PerturbPipeline(plan_views([parse_spec(spec)], views), config, seed=seed, batch_size=8, num_threads=2)
    out = pipe.run(items, partners)  # (N, 1+K, H, W, C) uint8
    assert out.dtype == np.uint8
    return out.astype(np.float32)


@pytest.fixture
def pictures():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:112, 0:112]
    smooth = np.stack([xx * 2, yy * 2, (xx + yy)], -1).astype(np.uint8)
    noisy = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    grey = np.full((112, 112, 3), 128, np.uint8)
    return {"smooth": smooth, "noisy": noisy, "grey": grey}


def test_original_is_the_decoded_image(tmp_path, pictures):
    out = run(items_of(tmp_path, [pictures["noisy"]]), "affine")
    np.testing.assert_array_equal(out[0, 0], pictures["noisy"])


def test_affine_flip_translation_rotation_are_exact(tmp_path, pictures):
    items = items_of(tmp_path, [pictures["noisy"]])
    img = pictures["noisy"].astype(np.float32)
    np.testing.assert_array_equal(run(items, "affine:rot=0,scale=1,flip=1")[0, 1], img[:, ::-1])
    np.testing.assert_array_equal(run(items, "affine:rot=0,scale=1,flip=0,tx=3")[0, 1][:, 3:], img[:, :-3])
    np.testing.assert_array_equal(run(items, "affine:rot=0,scale=1,flip=0,ty=-2")[0, 1][:-2], img[2:])
    rot = run(items, "affine:rot=90,scale=1,flip=0")[0, 1]
    np.testing.assert_array_equal(rot[1:-1, 1:-1], np.rot90(img, 1)[1:-1, 1:-1])  # counter-clockwise


def test_default_affine_is_a_slight_change(tmp_path, pictures):
    out = run(items_of(tmp_path, [pictures["smooth"]]), "affine")
    flipped = pictures["smooth"][:, ::-1].astype(np.float32)
    assert 0 < np.abs(out[0, 1] - flipped).mean() < 3  # flip + 0.5 degree + 1% zoom


def test_gaussian_noise_has_the_requested_sigma(tmp_path, pictures):
    out = run(items_of(tmp_path, [pictures["grey"]] * 2), "gaussian:sigma=10", views=3)
    noise = out[:, 1:] - 128
    assert abs(noise.std() - 10) < 0.5 and abs(noise.mean()) < 0.5
    assert not np.array_equal(out[0, 1], out[0, 2])  # views differ


def test_poisson_noise_variance_follows_intensity(tmp_path, pictures):
    dark, bright = np.full((112, 112, 3), 20, np.uint8), np.full((112, 112, 3), 200, np.uint8)
    out = run(items_of(tmp_path, [dark, bright]), "poisson:factor=1")
    assert abs(out[0, 1].var() / 20 - 1) < 0.1 and abs(out[1, 1].var() / 200 - 1) < 0.1
    assert abs(out[1, 1].mean() - 200) < 1


def test_salt_and_pepper_amount_and_values(tmp_path, pictures):
    out = run(items_of(tmp_path, [pictures["grey"]]), "saltpepper:amount=0.1,salt=0.5")[0, 1]
    changed = (out != 128).any(-1)
    assert abs(changed.mean() - 0.1) < 0.01
    values = out[changed]
    assert set(np.unique(values)) <= {0.0, 255.0}
    assert (values[:, 0:1] == values).all()  # all channels together
    assert abs((values[:, 0] == 255).mean() - 0.5) < 0.05


def test_random_occlusion_is_one_black_square_inside(tmp_path):
    white = np.full((112, 112, 3), 255, np.uint8)
    out = run(items_of(tmp_path, [white] * 3), "occlusion:size=20", views=4)
    positions = set()
    for n in range(3):
        for k in range(1, 5):
            ys, xs = np.nonzero((out[n, k] == 0).all(-1))
            assert len(ys) == 400 and np.ptp(ys) == 19 and np.ptp(xs) == 19
            assert ((out[n, k] == 0).all(-1) | (out[n, k] == 255).all(-1)).all()
            positions.add((ys.min(), xs.min()))
    assert len(positions) > 6  # positions vary over images and views


def test_border_occlusion_is_a_black_frame(tmp_path, pictures):
    out = run(items_of(tmp_path, [pictures["noisy"]]), "border:thickness=7")[0, 1]
    inner = np.zeros((112, 112), bool)
    inner[7:-7, 7:-7] = True
    assert (out[~inner] == 0).all()
    np.testing.assert_array_equal(out[inner], pictures["noisy"][inner])


def test_elastic_deforms_smoothly_and_alpha_zero_is_identity(tmp_path, pictures):
    items = items_of(tmp_path, [pictures["smooth"]])
    np.testing.assert_array_equal(run(items, "elastic:alpha=0")[0, 1], pictures["smooth"])
    out = run(items, "elastic:alpha=200,sigma=6", views=2)
    diff = np.abs(out[0, 1:, 8:-8, 8:-8] - out[0, 0, 8:-8, 8:-8])
    assert 0.5 < diff.mean() < 20
    assert not np.array_equal(out[0, 1], out[0, 2])


def test_lowres_is_the_face_at_a_few_pixels(tmp_path, pictures):
    """Down to size x size (area average) and back up: close to OpenCV's INTER_AREA + INTER_LINEAR, a flat image
    stays flat, the view has no detail finer than its size (shrinking it again changes little), size = the input
    size changes nothing."""
    cv2 = pytest.importorskip("cv2")
    items = items_of(tmp_path, [pictures["noisy"], pictures["smooth"], pictures["grey"]])
    for size in (8, 10, 28):
        view = run(items, f"lowres:size={size}")[:, 1]
        reference = np.stack([cv2.resize(cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA), (112, 112),
                                         interpolation=cv2.INTER_LINEAR) for p in
                              (pictures["noisy"], pictures["smooth"], pictures["grey"])]).astype(np.float32)
        assert np.abs(view - reference).mean() < 4.0, size
        np.testing.assert_array_equal(view[2], pictures["grey"])
        assert view[0].std() < 0.2 * pictures["noisy"].std()  # noise averaged away
    np.testing.assert_array_equal(run(items, "lowres:size=112")[:, 1], run(items, "lowres:size=112")[:, 0])


def test_selfmixup_shuffles_tiles_with_none_in_place(tmp_path, pictures):
    img = pictures["noisy"]
    for grid in (2, 4, 5):
        out = run(items_of(tmp_path, [img]), f"selfmixup:grid={grid},lam=0")[0, 1]
        t = 112 // grid
        tiles = {img[r * t:(r + 1) * t, c * t:(c + 1) * t].tobytes(): (r, c) for r in range(grid) for c in range(grid)}
        sources = [tiles.get(out[r * t:(r + 1) * t, c * t:(c + 1) * t].astype(np.uint8).tobytes())
                   for r in range(grid) for c in range(grid)]
        assert None not in sources and len(set(sources)) == grid * grid  # a permutation of the tiles
        assert all(src != (r, c) for src, (r, c) in zip(sources, [(r, c) for r in range(grid) for c in range(grid)]))
        np.testing.assert_array_equal(out[grid * t:], img[grid * t:])  # the remainder stays in place
    blended = run(items_of(tmp_path, [img]), "selfmixup:grid=2,lam=0.75")[0]
    shuffled = run(items_of(tmp_path, [img]), "selfmixup:grid=2,lam=0")[0, 1]
    np.testing.assert_allclose(blended[1], np.round(0.75 * img + 0.25 * shuffled), atol=1)


def test_mixup_blends_with_another_input_image(tmp_path, pictures):
    arrays = [pictures["noisy"], pictures["smooth"], pictures["grey"]]
    items = items_of(tmp_path, arrays)
    keys = [it.key for it in items]
    view = plan_views([parse_spec("mixup:lam=0.6")], 1)[0]
    chosen = [mixup_partner(i, keys, view, seed=0) for i in range(3)]
    assert all(c != i for i, c in enumerate(chosen))
    partners = {0: [items[c] for c in chosen]}
    out = run(items, "mixup:lam=0.6", partners=partners)
    for i, c in enumerate(chosen):
        expected = 0.6 * arrays[i].astype(np.float32) + 0.4 * arrays[c]
        np.testing.assert_allclose(out[i, 1], np.round(expected), atol=1)


def test_colour_order_comes_from_the_config(tmp_path, pictures):
    items = items_of(tmp_path, [pictures["smooth"]])
    rgb = PerturbPipeline(plan_views([], 1), ModelConfig((112, 112), "RGB"), batch_size=2).run(items)
    bgr = PerturbPipeline(plan_views([], 1), ModelConfig((112, 112), "BGR"), batch_size=2).run(items)
    np.testing.assert_array_equal(rgb[0, 0], pictures["smooth"])
    np.testing.assert_array_equal(bgr[0, 0], pictures["smooth"][..., ::-1])
    assert rgb.shape == (1, 2, 112, 112, 3)


def test_other_sizes_grey_and_rgba_become_model_sized_rgb(tmp_path, pictures):
    from PIL import Image

    big = np.asarray(Image.fromarray(pictures["smooth"]).resize((150, 200)))
    grey = pictures["smooth"][..., 0]
    rgba = np.dstack([pictures["smooth"], np.full((112, 112), 255, np.uint8)])
    items = items_of(tmp_path, [big, grey, rgba])
    assert items[0].size == (200, 150)
    out = run(items, "affine")
    assert out.shape == (3, 2, 112, 112, 3)
    np.testing.assert_array_equal(out[1, 0], np.repeat(grey[..., None], 3, -1))
    np.testing.assert_array_equal(out[2, 0], pictures["smooth"])


def test_same_seed_same_views_other_seed_other_views(tmp_path, pictures):
    items = items_of(tmp_path, [pictures["noisy"], pictures["smooth"]])
    spec = "affine:rot=-5:5,scale=0.9:1.1,flip=0.5"
    a, b, c = run(items, spec, 3, seed=1), run(items, spec, 3, seed=1), run(items, spec, 3, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:, 1:], c[:, 1:])
    # parameters drawn from ranges do not depend on the batch: the second image alone gets the same views
    np.testing.assert_array_equal(run(items[1:], spec, 3, seed=1)[0], a[1])


def test_pixels_in_memory_give_what_their_png_gives(tmp_path, pictures):
    """Decoded RGB pixels fed as they are: the same views as the same image encoded losslessly, in either colour
    order and at another size."""
    from PIL import Image

    big = np.asarray(Image.fromarray(pictures["smooth"]).resize((150, 200)))
    arrays = [pictures["noisy"], big]
    encoded = items_of(tmp_path, arrays)
    pixels = [Sample(s.key, a, a.shape[:2], s.resize) for s, a in zip(encoded, arrays)]
    views = plan_views([parse_spec("affine:rot=-5:5"), parse_spec("occlusion")], 2)
    for color in ("RGB", "BGR"):
        pipe = PerturbPipeline(views, ModelConfig((112, 112), color), batch_size=2)
        np.testing.assert_array_equal(pipe.run(pixels), pipe.run(encoded))


SPECS_OF_EVERY_KIND = ["affine", "affine:rot=-4:4,scale=0.9:1.1,flip=0.5", "occlusion", "border", "lowres",
                       "selfmixup", "gaussian:sigma=5", "elastic:alpha=40,sigma=4"]


def test_the_identity_placement_changes_nothing(tmp_path, pictures):
    """A placed graph given no placement (the identity: crops already on the template) gives the unplaced graph's
    pixels exactly, for every kind of view."""
    samples = items_of(tmp_path, [pictures["noisy"], pictures["smooth"]])
    views = plan_views([parse_spec(s) for s in SPECS_OF_EVERY_KIND], 1)
    plain = PerturbPipeline(views, RAW, batch_size=2).run(samples)
    placed = PerturbPipeline(views, RAW, batch_size=2, placed=True).run(samples)
    np.testing.assert_array_equal(placed, plain)


def test_placement_warps_as_opencv_and_affine_views_warp_once(tmp_path, pictures):
    """The original is warped by its placement as OpenCV's warpAffine does with BORDER_REPLICATE (rounding aside);
    an affine view is one warp by its matrix composed with the placement; other views perturb the placed original."""
    import cv2

    from fiqa_trt.engine import geometry

    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:112, 0:112]
    smooth = np.stack([xx * 2, yy * 2, 128 + 60 * np.sin(xx / 9.0) * np.cos(yy / 7.0)], -1).astype(np.uint8)
    placements = [np.float64([[1, 0, 8], [0, 1, 0]]), cv2.getRotationMatrix2D((50, 60), 7, 1.08)]
    placements[1][:, 2] += rng.uniform(-5, 5, 2)
    samples = [Sample(f"im{i}", smooth, (112, 112), False, m) for i, m in enumerate(placements)]
    views = plan_views([parse_spec("affine:rot=0,scale=1,flip=1"), parse_spec("affine:rot=10,scale=0.9,flip=0"),
                        parse_spec("border:thickness=8")], 1)
    out = PerturbPipeline(views, RAW, batch_size=2, placed=True).run(samples).astype(np.int16)

    def cv_warp(forward):
        return cv2.warpAffine(smooth, forward, (112, 112), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE).astype(np.int16)

    view_forward = {1: np.float64([[-1, 0, 111], [0, 1, 0]]),  # the flip, pixel centres at integers
                    2: cv2.getRotationMatrix2D((55.5, 55.5), 10, 0.9)}
    for i, placement in enumerate(placements):
        assert np.abs(out[i, 0] - cv_warp(placement)).max() <= 1
        for v, forward in view_forward.items():
            assert np.abs(out[i, v] - cv_warp(geometry.compose(forward, placement))).max() <= 1
        framed = out[i, 0].copy()
        framed[:8], framed[-8:], framed[:, :8], framed[:, -8:] = 0, 0, 0, 0
        np.testing.assert_array_equal(out[i, 3], framed)


# ---- the GPU graph, checked without a GPU: DALI traces it (argument names, where each input lives) and every
# operator it places is one DALI registers for that device (the check reads DALI's traced graph, an internal API)


def _misplaced_ops(pipe) -> list[tuple[str, str]]:
    """(operator, device) pairs of a traced pipeline that DALI has no implementation for on that device."""
    import nvidia.dali.backend as backend

    registered = {"cpu": set(backend.RegisteredCPUOps()), "gpu": set(backend.RegisteredGPUOps()),
                  "mixed": set(backend.RegisteredMixedOps())}
    return sorted((name, device) for name, device in _placed(pipe) if name not in registered[device])


def _placed(pipe) -> set[tuple[str, str]]:
    try:
        pipe._build_graph()
        return {(getattr(op._op, "schema_name", type(op._op).__name__), op._op.device) for op in pipe._ops}
    except AttributeError as exc:
        pytest.skip(f"this DALI version's traced graph reads differently ({exc}): update _placed")


def test_gpu_graph_of_every_kind_is_placed_on_gpu_operators():
    from fiqa_trt.engine.perturbations import KINDS

    config = ModelConfig(input_size=(112, 112))
    views = plan_views([parse_spec(kind) for kind in KINDS], 2)
    traced = PerturbPipeline(views, config, device="gpu", device_id=0, build=False)._pipe
    assert _misplaced_ops(traced) == []
    placed = _placed(traced)
    assert ("decoders__Image", "mixed") in placed and ("experimental__Remap", "gpu") in placed
    assert not any(name == "PythonFunction" for name, _ in placed)  # no CPU fallback inside the GPU graph
    assert {name for name, device in placed if device == "cpu"} <= {"ExternalSource", "_ArithmeticGenericOp"}


def test_gpu_graphs_of_placed_pixels_are_placed_on_gpu_operators():
    """The realigned / aligned graphs (a placement warp) of both input forms trace on GPU operators only."""
    config = ModelConfig(input_size=(112, 112), color="BGR")
    views = plan_views([parse_spec("affine"), parse_spec("lowres"), parse_spec("mixup")], 1)
    pipe = PerturbPipeline(views, config, device="gpu", device_id=0, placed=True, build=False)
    for form in ("encoded", "pixels"):
        traced = pipe.graph(form)
        assert _misplaced_ops(traced) == []
        placed = _placed(traced)
        assert ("WarpAffine", "gpu") in placed
        assert {name for name, device in placed if device == "cpu"} <= {"ExternalSource", "_ArithmeticGenericOp"}
    assert ("ColorSpaceConversion", "gpu") in _placed(pipe.graph("pixels"))


def test_misplaced_operators_are_found():
    """What the check above would report: remap on CPU data, the reason for cpu_fallbacks."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=2, num_threads=1, device_id=None)
    def remap_on_cpu():
        image = fn.external_source(name="image")
        grid = fn.external_source(name="grid")
        return fn.experimental.remap(image, grid, grid, interp=types.INTERP_LINEAR)

    assert _misplaced_ops(remap_on_cpu()) == [("experimental__Remap", "cpu")]


def _decoders(pipe) -> list[tuple[str, dict]]:
    """(device, arguments) of every image decoder of a traced pipeline (DALI's traced graph, an internal API)."""
    try:
        pipe._build_graph()
        return [(op._op.device, dict(op._op._init_args)) for op in pipe._ops
                if getattr(op._op, "schema_name", "") == "decoders__Image"]
    except AttributeError as exc:
        pytest.skip(f"this DALI version's traced graph reads differently ({exc}): update _decoders")


def test_gpu_decoders_upsample_chroma_as_the_cpu_does():
    """nvJPEG's default chroma upsampling of 4:2:0 JPEGs (all of LFW) differs from libjpeg-turbo's: every decoder of
    the GPU graph (originals and mixup partners) asks for the CPU's ("fancy") upsampling."""
    views = plan_views([parse_spec("mixup"), parse_spec("affine")], 1)
    decoders = _decoders(PerturbPipeline(views, RAW, device="gpu", device_id=0, build=False)._pipe)
    assert [device for device, _ in decoders] == ["mixed", "mixed"]
    assert all(args.get("jpeg_fancy_upsampling") is True for _, args in decoders)


def test_elastic_is_the_documented_field_made_in_the_graph(tmp_path, pictures):
    """The graph's elastic view equals the definition computed here with NumPy and OpenCV from the same key words:
    uniform(-1, 1) from the uint32 hash, Gaussian blur (window int(8 sigma + 1) | 1, mirrored borders), times
    alpha / 2, added to the pixel grid, bilinear remap with zeros outside."""
    import cv2

    from fiqa_trt.engine.perturbations import Elastic
    from fiqa_trt.engine.pipeline import host_inputs

    items = items_of(tmp_path, [pictures["smooth"], pictures["noisy"]])
    views = plan_views([parse_spec("elastic:alpha=120,sigma=4")], 2)
    out = PerturbPipeline(views, RAW, seed=3, batch_size=4).run(items)
    feeds = host_inputs(views, [it.key for it in items], 3, 112, 112)
    for v in views:
        key0, key1 = feeds[f"v{v.index}_key0"], feeds[f"v{v.index}_key1"]
        fields = Elastic.field_uniforms(key0, key1, 112, 112)  # (N, 2, H, W, 1)
        k = int(feeds[f"v{v.index}_window"][0])
        assert k == 33
        ys, xs = np.mgrid[0:112, 0:112].astype(np.float32)
        for n, img in enumerate([pictures["smooth"], pictures["noisy"]]):
            dx, dy = (cv2.GaussianBlur(fields[n, a, :, :, 0], (k, k), 4, borderType=cv2.BORDER_REFLECT_101) * 60
                      for a in (0, 1))
            want = cv2.remap(img, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            got = out[n, 1 + v.index]
            diff = np.abs(got.astype(np.int16) - want)
            assert diff.mean() < 0.05 and (diff > 1).mean() < 0.002, (v.index, n, diff.mean(), diff.max())
    assert not np.array_equal(out[0, 1], out[0, 2]) and not np.array_equal(out[0, 1], out[1, 1])


def test_graph_hash_is_the_numpy_hash():
    """The uint32 hash written as DALI arithmetic (shifts as divisions, wrapping products) is the NumPy one."""
    from nvidia.dali import fn, pipeline_def, types

    from fiqa_trt.engine.perturbations import Graph, _mix32, mix32

    counter = np.arange(5000, dtype=np.uint32) * np.uint32(2654435761)

    @pipeline_def(batch_size=2, num_threads=1, device_id=None, exec_dynamic=True)
    def hashed():
        g = Graph(fn, types, "cpu", 1, 1, 0)
        return _mix32(g, g.constant(counter) ^ fn.external_source(name="key", dtype=types.UINT32))

    pipe = hashed()
    pipe.build()
    pipe.feed_input("key", np.array([7, 4000000000], np.uint32))
    (out,) = pipe.run()
    got = np.asarray(out.as_tensor())
    assert got.dtype == np.uint32
    np.testing.assert_array_equal(got, mix32(counter[None] ^ np.array([[7], [4000000000]], np.uint32)))


@pytest.mark.parametrize("spec", ["elastic:alpha=80,sigma=3", "occlusion:size=10:30", "selfmixup:grid=2:5",
                                  "affine:rot=-5:5,flip=0.5"])
def test_views_of_an_image_do_not_depend_on_its_batch(tmp_path, pictures, spec):
    items = items_of(tmp_path, [pictures["noisy"], pictures["smooth"], pictures["grey"]])
    together = run(items, spec, 3, seed=4)
    for i in range(3):
        np.testing.assert_array_equal(run(items[i:i + 1], spec, 3, seed=4)[0], together[i])
    np.testing.assert_array_equal(run(items[::-1], spec, 3, seed=4)[::-1], together)  # order does not matter


def test_one_pipeline_serves_batches_of_any_size(tmp_path, pictures):
    items = items_of(tmp_path, [pictures["noisy"], pictures["smooth"], pictures["grey"]])
    pipe = PerturbPipeline(plan_views([parse_spec("occlusion")], 2), RAW, batch_size=3)
    full = pipe.run(items).copy()
    np.testing.assert_array_equal(pipe.run(items[1:2])[0], full[1])
    np.testing.assert_array_equal(pipe.run(items)[2], full[2])


def test_a_scorer_builds_its_pipeline_once(random_model, face_like, monkeypatch):
    """Every score / embed / score_crops call of one Scorer reuses the pipeline built by the first (before, each
    `score` built a new one, so a warm-up warmed nothing)."""
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.engine.scorer import Scorer

    built = []
    real_init = PerturbPipeline.__init__

    def counting_init(self, *args, **kwargs):
        built.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(PerturbPipeline, "__init__", counting_init)
    scorer = Scorer(load_runner(str(random_model), "onnxruntime", "fp32"), ["occlusion"], views=2, batch_size=3)
    items = [Item(str(p), p.name) for p in face_like]
    first = [r.quality for r in scorer.score(items)]
    second = [r.quality for r in scorer.score(items)]
    list(scorer.embed(items[:2]))
    scorer.score_crops([np.full((112, 112, 3), 90, np.uint8)])
    assert len(built) == 1
    assert first == second  # the reused pipeline gives the same scores (keyed draws)


# ---- on a GPU (pytest -m gpu on the device machine)


def _gpu_reason() -> str | None:
    from fiqa_trt.kernels.cuda import usable_device

    return usable_device()


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_reason() is not None, reason=f"needs a CUDA device: {_gpu_reason()}")
def test_gpu_decodes_lfw_jpegs_as_the_cpu_does(lfw_files):
    """On 4:2:0 JPEGs (LFW), nvJPEG with fancy upsampling gives the CPU decoder's pixels (IDCT rounding aside)."""
    items = [Sample.of(check_item(Item(str(p), p.name)), RAW.input_size) for p in lfw_files[:64]]
    views = plan_views([parse_spec("affine:rot=0,scale=1,flip=1")], 1)
    cpu = PerturbPipeline(views, RAW, batch_size=64).run(items)
    gpu = PerturbPipeline(views, RAW, batch_size=64, device="gpu", device_id=0).run(items).get()
    diff = np.abs(gpu.astype(np.int16) - cpu)
    assert diff.mean() < 0.05 and diff.max() <= 4, (diff.mean(), diff.max())


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_reason() is not None, reason=f"needs a CUDA device: {_gpu_reason()}")
@pytest.mark.parametrize("spec", ["elastic:alpha=50,sigma=5", "border", "occlusion", "selfmixup"])
def test_gpu_views_match_cpu_views(tmp_path, pictures, spec):
    """Keyed kinds give the same pixels on both devices (elastic: its field is made in the graph on each)."""
    items = items_of(tmp_path, [pictures["noisy"], pictures["smooth"]])
    views = plan_views([parse_spec(spec)], 2)
    cpu = PerturbPipeline(views, RAW, batch_size=2).run(items)
    gpu = PerturbPipeline(views, RAW, batch_size=2, device="gpu", device_id=0).run(items).get()
    diff = np.abs(gpu.astype(np.int16) - cpu)
    assert diff.mean() < 0.05 and diff.max() <= 2, (diff.mean(), diff.max())
