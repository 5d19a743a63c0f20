"""Quality recipes, the template check and the 0-100 score, on the shared MobileFaceNet and shared LFW crops:
the seed recipe gives the seed's scores, reruns are identical, the fit sees only the dev half, the template check
finds a known shift, the unified score follows the quality."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fiqa_trt.engine import recipes
from fiqa_trt.engine.recipes import Recipe
from fiqa_trt.errors import FiqaError

cv2 = pytest.importorskip("cv2")
SEED_SCORES = Path(__file__).parent / "data" / "seed_scores_mobilefacenet.csv"


def _runner(model):
    from fiqa_trt.engine.runners import load_runner

    return load_runner(str(model), "onnxruntime", "fp32", threads=2)


def _items(files):
    from fiqa_trt.engine.inputs import Item

    return [Item(str(f), f"{f.parent.name}/{f.name}") for f in files]


def _seed_scores(lfw) -> tuple[list[Path], np.ndarray]:
    rows = [r for r in csv.reader(ln for ln in SEED_SCORES.read_text().splitlines() if not ln.startswith("#"))][1:]
    return [lfw / r[0] for r in rows], np.array([float(r[1]) for r in rows])


def test_seed_recipe_reproduces_the_seed_scores(lfw, real_model):
    """The scores written by the seed code (before recipes existed) for 64 crops, reproduced by the seed recipe."""
    from fiqa_trt.engine.scorer import Scorer

    files, expected = _seed_scores(lfw)
    items = _items(files)
    runner = _runner(real_model)
    seed = np.array([r.quality for r in Scorer(runner, recipe=recipes.SEED, batch_size=32, threads=1).score(items)])
    plain = np.array([r.quality for r in Scorer(runner, batch_size=32, threads=1).score(items)])
    assert np.array_equal(seed, plain)  # the seed recipe is the plain stability path, bit for bit
    np.testing.assert_allclose(seed, expected, rtol=0, atol=1e-6)  # the stored seed scores (exact on this machine)


def test_default_recipe_rerun_is_identical(lfw_files, real_model):
    from fiqa_trt.engine.scorer import Scorer
    from fiqa_trt.engine.template import realigner_for

    recipe, source = recipes.resolve(None, real_model)
    assert source == "model registry" and recipe.fusion == "weighted_log" and recipe.calibration is not None
    items = _items(lfw_files[::400])
    runs = []
    for _ in range(2):
        aligner, _ = realigner_for(items, (112, 112), recipe.realign)
        assert aligner is not None  # the shared crops are 8 px off the ArcFace template
        results = list(Scorer(_runner(real_model), recipe=recipe, aligner=aligner, batch_size=8, threads=1)
                       .score(items))
        runs.append(([r.quality for r in results], [r.score for r in results]))
    assert runs[0] == runs[1]
    assert all(0 <= s <= 100 and s == int(s) for s in runs[0][1])


def test_template_check_finds_a_known_shift(lfw_files):
    from fiqa_trt.engine.template import estimate

    crops = np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in lfw_files[::200]])
    base = estimate(crops, (112, 112))
    assert base.detected >= 0.95 * len(crops)
    assert -10 < np.median(base.offset[:, 0]) < -6  # the shared crops: about 8 px left of ArcFace's template
    for dx, dy in ((8, 0), (-4, 3), (0, -5)):
        m = np.float64([[1, 0, dx], [0, 1, dy]])
        shifted = np.stack([cv2.warpAffine(c, m, (112, 112), borderMode=cv2.BORDER_REPLICATE) for c in crops])
        moved = np.median(estimate(shifted, (112, 112)).offset - base.offset, axis=0)
        np.testing.assert_allclose(moved, [dx, dy], atol=1.0)
    realigned = estimate(np.stack([cv2.warpAffine(c, base.matrix, (112, 112), borderMode=cv2.BORDER_REPLICATE)
                                   for c in crops]), (112, 112))
    assert realigned.shift_px < 1.5 < base.shift_px


def test_realign_each_puts_every_crop_on_the_template(lfw_files):
    """Real crops each moved by its own offset: the median transform cannot put them all back, the per-crop one
    (O-Net's points on each crop) does; a crop with no face keeps the median transform."""
    from fiqa_trt.engine.template import Landmarks, Realigner, estimate, model_template

    crops = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in lfw_files[::250]]
    rng = np.random.default_rng(5)
    moves = rng.uniform(-5, 5, (len(crops), 2))
    moved = np.stack([cv2.warpAffine(c, np.float64([[1, 0, dx], [0, 1, dy]]), (112, 112),
                                     borderMode=cv2.BORDER_REPLICATE) for c, (dx, dy) in zip(crops, moves)])
    check = estimate(moved, (112, 112))
    landmarks, template = Landmarks(), model_template((112, 112))

    def residual(realigner):  # per crop: how far the centre of O-Net's points is from the template's, realigned
        points, _ = landmarks(np.stack([realigner.warp(c) for c in moved]))  # (a face's own shape is not the
        return np.linalg.norm(points.mean(axis=1) - template.mean(axis=0), axis=1)  # template's: centres only)

    median, each = residual(Realigner(check, (112, 112))), residual(Realigner(check, (112, 112), each=True))
    assert np.median(median) > 2.5 and np.median(each) < 1.0  # the moves are up to 5 px each way
    assert np.mean(each < median) > 0.8
    blank = Realigner(check, (112, 112), each=True)
    flat = np.full((112, 112, 3), 128, np.uint8)
    np.testing.assert_array_equal(blank.warp(flat), Realigner(check, (112, 112)).warp(flat))
    assert blank.fallbacks == 1


def test_lognorm_all_is_the_mean_log_norm_of_every_forward():
    r = Recipe("x", ("affine:rot=0,scale=1,flip=1",), fusion="weighted_log", signals=(("lognorm:all", 1.0),))
    norms, cos = np.array([[2.0, 8.0], [1.0, 1.0]]), np.ones((2, 1))
    np.testing.assert_allclose(r.fuse(norms, cos, [0]), [np.log(4.0), 0.0])
    plain = Recipe("y", ("affine:rot=0,scale=1,flip=1",), fusion="weighted_log", signals=(("lognorm", 1.0),))
    np.testing.assert_allclose(plain.fuse(norms, cos, [0]), np.log([2.0, 1.0]))  # the original's column only
    np.testing.assert_allclose(plain.fuse(norms[:, 0], cos, [0]), np.log([2.0, 1.0]))
    with pytest.raises(FiqaError, match="every forward"):
        r.fuse(norms[:, 0], cos, [0])
    assert r.uses_norm and Recipe.from_dict({**r.to_dict(), "realign_each": True}).realign_each


def test_unified_score_is_monotonic_in_quality(lfw_files, real_model):
    """On real crops, blurred to several strengths: sorted by raw quality, the 0-100 scores never decrease."""
    from fiqa_trt.engine.scorer import Scorer

    recipe = recipes.resolve(None, real_model)[0]
    crops = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in lfw_files[::300]]
    crops += [cv2.GaussianBlur(c, (0, 0), s) for c in crops[:12] for s in (1.5, 3.0)]
    scorer = Scorer(_runner(real_model), recipe=recipe, batch_size=16, threads=1)
    q = scorer.score_crops(crops)
    s = scorer.unified(q)
    order = np.argsort(q, kind="stable")
    assert np.all(np.diff(s[order]) >= 0) and s.min() >= 0 and s.max() <= 100 and len(np.unique(s)) > 5
    assert np.array_equal(s, np.round(s))
    assert np.isnan(recipe.unified_score(np.array([np.nan]))).all()


def test_recipe_files_and_errors(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(recipes.NORM_FLIP.to_dict()))
    assert recipes.load(str(path)) == recipes.NORM_FLIP
    for bad in ({"fusion": "product", "name": "x"}, {"name": "x", "fusion": "weighted_log", "signals": [["snr", 1]]},
                {"name": "x", "colour": 1}, {"name": "x", "fusion": "weighted_log", "signals": [["cos:0", "abc"]]},
                {"name": "x", "fusion": "weighted_log", "signals": [["cos:0"]]}, {"name": "x", "calibration": [1]},
                {"name": "x", "perturb": "affine:rot=3"}, {"name": "x", "signals": [["foo", 1]]}, [1, 2], "x"):
        path.write_text(json.dumps(bad))
        with pytest.raises(FiqaError):
            recipes.load(str(path))
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(FiqaError, match="cannot read"):
        recipes.load(str(path))
    assert Recipe("y").realign == "auto"  # as every shipped recipe but the seed's
    with pytest.raises(FiqaError, match="unknown recipe"):
        recipes.load("nope")
    with pytest.raises(FiqaError, match="unknown signal"):
        Recipe("x", fusion="weighted_log", signals=(("cos:1", 1.0),))
    r = Recipe("x", ("gaussian", "border"), fusion="weighted_log", signals=(("cos:1", 1.0),))
    with pytest.raises(FiqaError, match="gives no view"):
        r.fuse(np.ones(2), np.ones((2, 1)), [0])


@pytest.fixture(scope="module")
def embedded_lfw(lfw, real_model):
    """Real embeddings (originals and flips of the crops as they are: enough false non-matches for an EDC on a few
    hundred images) of every third identity with at least 6 images, 6 images each."""
    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.engine.scorer import Scorer
    from fiqa_trt.evaluation.protocols import identities

    groups = [ks for ks in identities(lfw).values() if len(ks) >= 6][::3]
    keys = [k for ks in groups for k in ks[:6]]
    items = [Item(str(lfw / k), k) for k in keys]
    scorer = Scorer(_runner(real_model), recipe=recipes.NORM_FLIP, batch_size=32, threads=2)
    originals, cosines = [], []
    for batch in scorer.embed(items):
        originals.append(batch.embeddings[:, 0].astype(np.float64))
        cosines.append(scorer._quality(batch.embeddings)[0][:, 0])
    emb = np.concatenate(originals)
    ident = np.array([k.split("/")[0] for k in keys])
    signals = {"lognorm": np.log(np.linalg.norm(emb, axis=1)), "cos:0": np.log(np.concatenate(cosines))}
    return emb, ident, signals, keys


def test_weights_are_fitted_on_the_dev_half_only(embedded_lfw, lfw):
    """Replacing every test-half signal (even by noise that would pull the weights elsewhere) leaves the fitted
    weights and the dev figures unchanged and changes the test figures: the test half is only reported."""
    from fiqa_trt.evaluation.calibrate import fit, halves
    from fiqa_trt.evaluation.protocols import all_mated_pairs

    emb, ident, signals, keys = embedded_lfw
    pairs = all_mated_pairs(lfw, max_images=20, nonmated=20000, seed=3, keys=keys)
    first = fit(signals, emb, keys, pairs, seed=3, bootstrap=20)
    assert all(np.isfinite(v) for v in [*first.dev.values(), *first.test.values()])
    cut = halves(pairs, 3)[2]
    dev = np.array([cut.side(i) == "dev" for i in ident])
    assert 0 < dev.sum() < len(dev)
    rng = np.random.default_rng(0)
    scrambled = {name: np.where(dev, v, rng.permutation(v)) for name, v in signals.items()}
    scrambled["cos:0"] = np.where(dev, scrambled["cos:0"], -scrambled["lognorm"] * 50)
    second = fit(scrambled, emb, keys, pairs, seed=3, bootstrap=20)
    assert second.weights == first.weights and second.dev == first.dev
    assert second.test != first.test
    # and the dev half does move them: scrambling it instead changes the search's input
    leak = {name: np.where(~dev, v, rng.permutation(v)) for name, v in signals.items()}
    assert fit(leak, emb, keys, pairs, seed=3, bootstrap=20).dev != first.dev


def test_ui_signals_read_the_distance_to_the_centre():
    centre = (1.0, 0.0)
    r = Recipe("x", ("affine:rot=0,scale=1,flip=1",), fusion="weighted_log", signals=(("ui:all", 1.0),),
               centre=centre)
    emb = np.array([[[0.0, 3.0], [1.0, 0.0]], [[-2.0, 0.0], [0.0, 5.0]]], np.float32)  # (2 images, 2 forwards, D=2)
    norms, centre_cos = r.forward_stats(emb)
    np.testing.assert_allclose(centre_cos, [[0.0, 1.0], [-1.0, 0.0]])
    cos = np.ones((2, 1))
    # ui:all: log(1 - mean cosine over the forwards); ui: the original's alone
    np.testing.assert_allclose(r.fuse(norms, cos, [0], centre_cos), np.log([0.5, 1.5]))
    one = Recipe("y", r.perturb, fusion="weighted_log", signals=(("ui", 2.0), ("lognorm", 1.0)), centre=centre)
    np.testing.assert_allclose(one.fuse(norms, cos, [0], centre_cos), 2 * np.log([1.0, 2.0]) + np.log([3.0, 2.0]))
    on_centre = np.array([[[4.0, 0.0], [1.0, 0.0]]], np.float32)  # at the centre: the floor, not -inf
    assert np.isfinite(r.fuse(*r.forward_stats(on_centre)[:1], np.ones((1, 1)), [0], r.forward_stats(on_centre)[1]))
    assert Recipe.from_dict(json.loads(recipes.recipe_json(r.to_dict()))) == r
    with pytest.raises(FiqaError, match="has no centre"):
        Recipe("z", r.perturb, fusion="weighted_log", signals=(("ui", 1.0),)).check_runnable()
    with pytest.raises(FiqaError, match="another model"):
        r.forward_stats(np.ones((1, 2, 3), np.float32))
    with pytest.raises(FiqaError, match="unit vector"):
        Recipe("w", r.perturb, fusion="weighted_log", signals=(("ui", 1.0),), centre=(2.0, 0.0))


def test_a_recipe_without_its_centre_is_refused_before_scoring(real_model):
    from fiqa_trt.engine.scorer import Scorer

    with pytest.raises(FiqaError, match="fiqa-trt calibrate"):
        Scorer(_runner(real_model), recipe=recipes.RECIPES["lognorm-ui-flip"])


def test_packaged_default_recipes_belong_to_their_records():
    from fiqa_trt.evaluation import degradations
    from fiqa_trt.weights import registry

    for record in registry.KNOWN_MODELS:
        doc = json.loads((registry.RECIPE_DIR / f"{record.name}.json").read_text())
        assert doc["sha256"] == record.sha256 and doc["model"] == record.name
        recipe = Recipe.from_dict(doc["recipe"])
        assert recipe.calibration is not None and recipe.figures.get("test_npauc30")
        dims = {"faceplugin-mobilefacenet": 512, "dlib-resnet-v1-arcface112": 128}[record.name]
        assert recipe.uses_centre and len(recipe.centre) == dims
        check = recipe.figures["degradation_check"]["agreement"]
        assert set(check) == set(degradations.KINDS) and min(check.values()) >= round(degradations.FLOOR, 3)
        assert set(doc["calibrations"]) == {"seed", "stability"}
        assert recipes.load(recipe.name) == recipe  # by its name too


def test_the_centre_and_weights_never_see_the_test_half(lfw, real_model, tmp_path):
    """Calibrating through the engine twice, the second time with every test-half image replaced by a blurred
    copy: the centre (from dev images' low-resolution views) and the weights are the same, the test figures not."""
    from fiqa_trt.evaluation.calibrate import calibrate_model, dev_sample, halves
    from fiqa_trt.evaluation.protocols import all_mated_pairs, identities

    groups = [(i, ks[:5]) for i, ks in identities(lfw).items() if len(ks) >= 5][:24]
    trees = {}
    for name, blur in (("plain", False), ("blurred", True)):
        root = tmp_path / name
        for ident, ks in groups:
            (root / ident).mkdir(parents=True)
            for k in ks:
                (root / k).symlink_to(lfw / k)
        trees[name] = root
    keys = [k for _, ks in groups for k in ks]
    cut = halves(all_mated_pairs(trees["plain"], nonmated=5000, seed=1, keys=keys), 1)[2]
    assert set(k.split("/")[0] for k in dev_sample(keys, cut, 1)) == {i for i, _ in groups if cut.side(i) == "dev"}
    for ident, ks in groups:
        if cut.side(ident) == "test":
            for k in ks:
                target = trees["blurred"] / k
                target.unlink()
                cv2.imwrite(str(target), cv2.GaussianBlur(cv2.imread(str(lfw / k)), (0, 0), 4.0))
    runner = _runner(real_model)
    fits = [calibrate_model(runner, trees[n], recipes.RECIPES["lognorm-ui-flip"], seed=1, batch_size=16, threads=1,
                            bootstrap=10, nonmated=5000) for n in ("plain", "blurred")]
    (a, ra), (b, rb) = fits
    assert a.centre is not None and len(a.centre) == 512 and a.centre == b.centre
    assert a.signals == b.signals and ra["dev"] == rb["dev"]
    assert ra["test"] != rb["test"]


def test_calibrate_command_stores_a_recipe(lfw, real_model, tmp_path, monkeypatch):
    from fiqa_trt.evaluation.protocols import identities
    from fiqa_trt.files import sha256_of
    from tests.cli_runner import run_cli

    monkeypatch.setenv("FIQA_TRT_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "faces"
    for ident, ks in [(i, ks) for i, ks in identities(lfw).items() if len(ks) >= 6][:40]:
        (root / ident).mkdir(parents=True)
        for k in ks[:6]:
            (root / k).symlink_to(lfw / k)
    out = tmp_path / "calibration.json"
    result = run_cli("calibrate", str(real_model), str(root), "--recipe", "lognorm-ui-flip", "--backend",
                     "onnxruntime", "--precision", "fp32", "--bootstrap", "20", "--seed", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "centre: lowres:size=10 views of" in result.stderr
    doc = json.loads(out.read_text())
    # the halves are those of `fiqa-trt eval --half dev|test --split-seed 2`
    from fiqa_trt.evaluation.split import identity_split

    cut = identity_split([p.name for p in root.iterdir()], seed=2)
    assert doc["report"]["dev"]["identities"] == len(cut.dev) and doc["report"]["test"]["identities"] == len(cut.test)
    stored = recipes.cache_file(sha256_of(Path(real_model)))
    assert stored.is_file()
    recipe, source = recipes.resolve(None, real_model)
    assert source.startswith("calibrated") and recipe.calibration is not None and len(recipe.centre) == 512
    assert dict(recipe.signals) == doc["report"]["weights"] and recipe.name == "lognorm-ui-flip-calibrated"
    assert set(doc["report"]["degradation_check"]["agreement"]) == {"blur2", "blur4", "down18", "noise25", "eyes"}
    # the named recipe now runs the fitted one; the shipped default stays reachable by its name
    assert recipes.resolve("lognorm-ui-flip", real_model)[0] == recipe
    assert recipes.resolve("mobilefacenet-default", real_model)[0].name == "mobilefacenet-default"
    assert "--recipe mobilefacenet-default runs the shipped one" in result.stderr
    # refitting a calibrated recipe keeps its name
    again = run_cli("calibrate", str(real_model), str(root), "--backend", "onnxruntime", "--precision", "fp32",
                    "--bootstrap", "10", "--no-store")
    assert again.returncode == 0 and "lognorm-ui-flip-calibrated" in again.stderr
    assert "calibrated-calibrated" not in again.stderr


def test_degradations_do_what_they_say():
    from fiqa_trt.evaluation import degradations

    crop = cv2.cvtColor(cv2.imread(str(Path(__file__).parents[1] / "examples/faces/astronaut.png")), cv2.COLOR_BGR2RGB)
    detail = lambda im: float(np.abs(cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_64F)).mean())  # noqa
    out = {k: degradations.degrade(crop, k, "astronaut", 0) for k in degradations.KINDS}
    assert all(o.shape == crop.shape and o.dtype == np.uint8 for o in out.values())
    assert detail(out["blur4"]) < detail(out["blur2"]) < 0.5 * detail(crop)
    assert detail(out["down18"]) < 0.5 * detail(crop)
    assert detail(out["noise25"]) > detail(crop)
    np.testing.assert_array_equal(out["noise25"], degradations.degrade(crop, "noise25", "astronaut", 0))  # keyed
    assert not np.array_equal(out["noise25"], degradations.degrade(crop, "noise25", "other", 0))
    assert out["eyes"][40:68, 20:92].max() == 0 and np.array_equal(out["eyes"][:40], crop[:40])
    assert degradations.agreement(np.array([1.0, 2.0, np.nan]), {"a": np.array([0.5, 3.0, 0.0])}) == {"a": 1 / 3}
    with pytest.raises(ValueError):
        degradations.degrade(crop, "fog")


def test_the_weight_search_honours_the_degradation_floor():
    """Signal `a` predicts the false non-matches better, but rises when faces are degraded; `b` is weaker but falls:
    unconstrained the search keeps `a` alone; with the floor it weighs `b` in until the degraded copies drop."""
    from fiqa_trt.evaluation import degradations
    from fiqa_trt.evaluation.calibrate import Protocol, search

    rng = np.random.default_rng(0)
    n = 400
    ma, mb = np.arange(0, n, 2), np.arange(1, n, 2)
    truth = rng.normal(size=n)
    errors = np.minimum(truth[ma], truth[mb]) < -0.8
    proto = Protocol(ma, mb, np.arange(len(ma)), {1e-3: errors, 1e-4: errors}, {1e-3: 0.0, 1e-4: 0.0}, 1000)
    signals = {"a": truth + 0.3 * rng.normal(size=n), "b": truth + 1.5 * rng.normal(size=n)}
    faces = rng.normal(size=50)
    check = {"clean": {"a": faces, "b": faces}, "blur": {"a": faces + 1.0, "b": faces - 3.0}}
    free = search({"b": signals["b"], "a": signals["a"]}, proto)
    held = search({"b": signals["b"], "a": signals["a"]}, proto, degraded=check, floor=degradations.FLOOR)

    def agreed(w):
        fused = {k: w["a"] * v["a"] + w["b"] * v["b"] for k, v in check.items()}
        return degradations.agreement(fused["clean"], {"blur": fused["blur"]})["blur"]

    assert agreed(free) < degradations.FLOOR <= agreed(held)


def test_the_shipped_mobilefacenet_recipe_ranks_degraded_crops_lower(lfw_files, real_model):
    """Through the engine: every kind of degradation lowers the default recipe's quality of real crops (put on the
    template first) for nearly all of them (measured on 400 dev faces: 100% under each kind)."""
    from fiqa_trt.engine.scorer import Scorer
    from fiqa_trt.engine.template import realigner_for
    from fiqa_trt.evaluation import degradations

    recipe, _ = recipes.resolve(None, real_model)
    items = _items(lfw_files[::331])
    aligner, _ = realigner_for(_items(lfw_files[::100]), (112, 112), "auto")
    crops = [aligner.warp(cv2.cvtColor(cv2.imread(it.path), cv2.COLOR_BGR2RGB)) for it in items]
    scorer = Scorer(_runner(real_model), recipe=recipe, batch_size=16, threads=1)
    clean = scorer.score_crops(crops)
    worse = degradations.agreement(clean, {k: scorer.score_crops([degradations.degrade(c, k, str(i))
                                                                  for i, c in enumerate(crops)])
                                           for k in degradations.KINDS})
    assert min(worse.values()) >= 0.9, worse
    # the ui signal alone points the same way: a 10-px face is nearer the centre than the face
    ui = Recipe("ui", recipe.perturb, "weighted_log", signals=(("ui", 1.0),), centre=recipe.centre)
    probe = Scorer(_runner(real_model), recipe=ui, batch_size=16, threads=1)
    low = [cv2.resize(cv2.resize(c, (10, 10), interpolation=cv2.INTER_AREA), (112, 112)) for c in crops]
    assert np.mean(probe.score_crops(low) < probe.score_crops(crops)) >= 0.9


def test_the_shipped_dlib_recipe_ranks_blurred_and_small_crops_lower(lfw_files):
    """The default model's recipe through the engine: blur sigma 4 and 18 px lower the quality of nearly every real
    crop (400 dev faces: 97% and 95%; blur sigma 2 sits at the 2/3 floor, too close to test on a few crops)."""
    from fiqa_trt.engine.models import default_model_path
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.engine.scorer import Scorer
    from fiqa_trt.engine.template import realigner_for
    from fiqa_trt.evaluation import degradations

    try:
        model = default_model_path()
    except FiqaError as exc:
        pytest.skip(f"the default model is not available: {exc}")
    recipe, source = recipes.resolve(None, model)
    assert source == "model registry" and recipe.uses_centre
    items = _items(lfw_files[::331])
    aligner, _ = realigner_for(_items(lfw_files[::100]), (112, 112), "auto")
    crops = [aligner.warp(cv2.cvtColor(cv2.imread(it.path), cv2.COLOR_BGR2RGB)) for it in items]
    scorer = Scorer(load_runner(str(model), "onnxruntime", "fp32", threads=2), recipe=recipe, batch_size=16, threads=1)
    clean = scorer.score_crops(crops)
    worse = degradations.agreement(clean, {k: scorer.score_crops([degradations.degrade(c, k, str(i))
                                                                  for i, c in enumerate(crops)])
                                           for k in ("blur4", "down18")})
    assert min(worse.values()) >= 0.85, worse


def _gpu_reason() -> str | None:
    from fiqa_trt.kernels.cuda import usable_device

    return usable_device()


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_reason() is not None, reason=f"needs a CUDA device: {_gpu_reason()}")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_forward_stats_on_the_gpu_match_numpy(dtype):
    """The norms and centre cosines the scorer computes on the device (CuPy) are NumPy's."""
    import cupy

    rng = np.random.default_rng(1)
    centre = rng.normal(size=64)
    r = Recipe("g", ("affine:rot=0,scale=1,flip=1",), "weighted_log", signals=(("ui:all", 1.0), ("lognorm:all", 1.0)),
               centre=tuple(centre / np.linalg.norm(centre)))
    emb = rng.normal(size=(33, 2, 64)).astype(dtype)
    norms, cos = r.forward_stats(emb)
    g_norms, g_cos = (cupy.asnumpy(x) for x in r.forward_stats(cupy.asarray(emb), cupy))
    np.testing.assert_allclose(g_norms, norms, rtol=1e-5)
    np.testing.assert_allclose(g_cos, cos, atol=1e-5)


def test_the_weight_search_refuses_a_half_with_nothing_to_discard():
    from fiqa_trt.evaluation.calibrate import Protocol, search

    none = np.zeros(10, bool)
    proto = Protocol(np.arange(0, 20, 2), np.arange(1, 20, 2), np.arange(10), {1e-3: none, 1e-4: none},
                     {1e-3: 0.0, 1e-4: 0.0}, 100)
    with pytest.raises(FiqaError, match="no false non-match"):
        search({"a": np.arange(20.0), "b": np.ones(20)}, proto)
    one = none.copy()
    one[3] = True  # an FMR without any error is left out of the objective, not a NaN that stops the search
    proto.errors = {1e-3: one, 1e-4: none}
    assert search({"a": np.arange(20.0), "b": np.ones(20)}, proto)["a"] == 1.0
    with pytest.raises(ValueError):
        search({"a": np.arange(20.0)}, proto, degraded={"clean": {"a": np.ones(3)}}, floor=0.5)
