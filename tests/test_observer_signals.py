"""Observer signals in the quality layer: what each reads off a pass's observer outputs, recipes that name layers,
passes without views (one forward per image)."""

from __future__ import annotations

import numpy as np
import pytest

from fiqa_trt.errors import FiqaError
from fiqa_trt.quality import Pass, Recipe


def _pass(views: int = 1, n: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 1 + views, 8)).astype(np.float32)
    observed = rng.uniform(1.0, 9.0, size=(n, 1 + views, 3)).astype(np.float32)  # l2 of layers a, b, c
    return Pass(emb, list(range(views)), observed, ("a", "b", "c")), observed


def test_observer_signals_read_their_layers_columns():
    p, obs = _pass(views=2)
    r = Recipe("o", ("affine:flip=1", "affine:rot=3"), "weighted_log",
               signals=(("obs:0", 1.0), ("obs-all:1", 1.0), ("froq", 1.0)), layers=("c", "a"))
    values = r.read_signals(p)
    np.testing.assert_allclose(values["obs:0"], np.log(obs[:, 0, 2]), rtol=1e-6)  # layer c of the original
    np.testing.assert_allclose(values["obs-all:1"], np.log(obs[:, :, 0]).mean(axis=1), rtol=1e-6)  # a, every forward
    np.testing.assert_allclose(values["froq"], np.log(obs[:, 0, [2, 0]].mean(axis=1)), rtol=1e-6)  # mean of c and a
    q = r.evaluate(p).quality
    np.testing.assert_allclose(q, values["obs:0"] + values["obs-all:1"] + values["froq"], rtol=1e-6)
    assert r.observers.layers == ("c", "a") and r.observers.reductions == ("l2",)


def test_a_recipe_without_views_reads_the_originals_alone():
    p, obs = _pass(views=0)
    r = Recipe("fast", (), "weighted_log", signals=(("lognorm", 1.0), ("obs:0", 0.5), ("lognorm:all", 0.0)),
               layers=("b",))
    out = r.evaluate(p)
    assert out.cosines.shape == (4, 0) and r.forwards == 1 and "views none (1 forward)" in r.describe()
    np.testing.assert_allclose(out.quality, np.log(np.linalg.norm(p.embeddings[:, 0], axis=1)) + 0.5 * np.log(
        obs[:, 0, 1]), rtol=1e-5)
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(FiqaError, match="a stability score needs one"):
        Recipe("s", (), "stability")


def test_observer_recipes_say_what_is_missing():
    p, _ = _pass()
    unnamed = Recipe("froq", ("affine:flip=1",), "weighted_log", signals=(("froq", 1.0),))
    with pytest.raises(FiqaError, match="names no layer: fiqa-trt calibrate MODEL IMAGES --recipe froq"):
        unnamed.check_runnable()
    assert unnamed.observers is None
    other = Recipe("x", ("affine:flip=1",), "weighted_log", signals=(("obs:0", 1.0),), layers=("z",))
    with pytest.raises(FiqaError, match="no observer output of layer 'z'"):
        other.evaluate(p)
    with pytest.raises(FiqaError, match="names layer 2, but the recipe has 1 layer"):
        Recipe("x", ("affine:flip=1",), "weighted_log", signals=(("obs:2", 1.0),), layers=("a",))
    with pytest.raises(FiqaError, match="distinct layer names"):
        Recipe("x", ("affine:flip=1",), "weighted_log", signals=(("obs:0", 1.0),), layers=("a", "a"))
    assert "layers" not in Recipe("plain", ("affine:flip=1",), "weighted_log", signals=(("lognorm", 1.0),)).to_dict()
    sub = p.select([0])
    assert sub.layers == ("a", "b", "c") and sub.observed.shape == (4, 2, 3)


def _lfw_folder(lfw, tmp_path, count=12):
    """`count` shared LFW crops of a few identities, copied into identity folders."""
    import shutil

    people = [p for p in sorted(lfw.iterdir()) if len(list(p.glob("*.jpg"))) >= 3][:4]
    root = tmp_path / "faces"
    for person in people:
        (root / person.name).mkdir(parents=True)
        for f in sorted(person.glob("*.jpg"))[:3]:
            shutil.copy(f, root / person.name / f.name)
    return root


def test_a_one_forward_observer_recipe_scores_and_evaluates_through_the_engine(lfw, real_model, tmp_path):
    """A recipe without views that reads a layer: `score` embeds each image once and the quality is log-norm + w x
    log layer norm of that same call; `eval --method` evaluates FROQ (a recipe file naming its layers) beside it in
    one pass, with the same values as its own forward."""
    import csv
    import json

    import cv2

    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.onnx_export.observers import Observers
    from tests.cli_runner import run_cli

    root = _lfw_folder(lfw, tmp_path)
    fast = Recipe("fast-test", (), "weighted_log", signals=(("lognorm", 1.0), ("obs:0", 2.5)), layers=("644",),
                  realign="off")
    froq = Recipe("froq-test", (), "weighted_log", signals=(("froq", 1.0),), layers=("665", "635"), realign="off")
    for r in (fast, froq):
        (tmp_path / f"{r.name}.json").write_text(json.dumps({"recipe": r.to_dict()}))
    done = run_cli("score", root, "-m", real_model, "--backend", "onnxruntime", "--precision", "fp32", "--recipe",
                   tmp_path / "fast-test.json", "-o", tmp_path / "fast.csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((tmp_path / "fast.csv").open()))
    assert not any(k.startswith("cos") for k in rows[0])  # no view, no cosine column
    runner = load_runner(str(real_model), "onnxruntime", "fp32").observing(Observers(("644", "665", "635")))
    paths = [root / r["path"] for r in rows]
    out = runner.forward(np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]))
    want = np.log(np.linalg.norm(out.embeddings, axis=1)) + 2.5 * np.log(out.observed[:, 0])
    np.testing.assert_allclose([float(r["quality"]) for r in rows], want, rtol=1e-4)
    pairs = tmp_path / "pairs.txt"
    keys = sorted(str(p.relative_to(root)) for p in root.glob("*/*.jpg"))
    pairs.write_text("\n".join(f"{a},{b},{1 if a.split('/')[0] == b.split('/')[0] else -1}"
                               for i, a in enumerate(keys) for b in keys[i + 1:]))
    done = run_cli("eval", root, "--pairs", pairs, "-m", real_model, "--backend", "onnxruntime", "--precision",
                   "fp32", "--recipe", tmp_path / "fast-test.json", "--method", tmp_path / "froq-test.json",
                   "--realign", "off", "--bootstrap", "0", "--no-plots", "-q", "-o", tmp_path / "eval")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert {"recipe:fast-test", "recipe:froq-test"} <= {m["name"] for m in report["methods"]}
    got = {r["path"]: r for r in csv.DictReader((tmp_path / "eval" / "qualities.csv").open())}
    by_path = {str(p.relative_to(root)): i for i, p in enumerate(paths)}
    froq_want = np.log(out.observed[:, 1:].mean(axis=1))
    for key, i in by_path.items():
        assert float(got[key]["recipe:froq-test"]) == pytest.approx(froq_want[i], rel=1e-4)
        assert float(got[key]["recipe:fast-test"]) == pytest.approx(want[i], rel=1e-4)
    again = run_cli("eval", root, "--pairs", pairs, "-m", real_model, "--method", tmp_path / "fast-test.json",
                    "--recipe", tmp_path / "fast-test.json", "--no-plots", "-q", "-o", tmp_path / "eval2")
    assert again.returncode == 2 and "is evaluated already" in again.stderr
