"""Fitting a recipe on arrays (milliseconds): the weight search sees the dev half only, honours the degradation floor,
and its reports are those of the evaluation stack; the packaged recipe document records what wrote it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fiqa_trt.errors import FiqaError
from fiqa_trt.evaluation import calibrate, degradations, edc
from fiqa_trt.evaluation.calibrate import Protocol, search
from fiqa_trt.evaluation.protocols import Pairs, identity_of, sample_nonmated


def synthetic(identities: int = 120, per: int = 5, dim: int = 32, seed: int = 0, nonmated: int = 30000):
    """Identity folders of `per` images each: embeddings whose noise grows as the image's true quality `u` falls,
    and three signals of `u` (good, weak, noise), with every mated pair and `nonmated` non-mated pairs."""
    rng = np.random.default_rng(seed)
    keys = [f"id{i:03d}/{j}.jpg" for i in range(identities) for j in range(per)]
    label = np.repeat(np.arange(identities), per)
    u = rng.normal(size=len(keys))
    noise = rng.normal(size=(len(keys), dim)) * (0.3 * np.exp(-0.8 * u))[:, None]
    originals = (rng.normal(size=(identities, dim))[label] + noise * np.sqrt(dim) / 4).astype(np.float32)
    ma, mb = np.triu_indices(per, 1)
    a = np.concatenate([i * per + ma for i in range(identities)])
    b = np.concatenate([i * per + mb for i in range(identities)])
    na, nb = sample_nonmated(label, nonmated, np.random.default_rng(seed + 1))
    pairs = Pairs(Path("/synthetic"), keys, np.concatenate([a, na]), np.concatenate([b, nb]),
                  np.concatenate([np.ones(len(a), bool), np.zeros(len(na), bool)]), "synthetic")
    signals = {"good": u + 0.3 * rng.normal(size=len(u)), "weak": u + 1.5 * rng.normal(size=len(u)),
               "noise": rng.normal(size=len(u))}
    return keys, originals, signals, pairs


def test_mated_npauc_is_the_edc_normalised_pauc():
    rng = np.random.default_rng(4)
    sim = np.concatenate([rng.normal(0.6, 0.2, 300), rng.normal(0.0, 0.2, 3000)])
    mated = np.arange(len(sim)) < 300
    quality = np.round(rng.normal(size=len(sim)), 1)  # ties, discarded together
    for fmr in (1e-2, 1e-3):
        curve = edc.edc(sim, mated, quality, fmr)
        errors = sim[mated] <= edc.threshold_at_fmr(sim[~mated], fmr)[0]
        for limit in (0.2, 0.3):
            assert edc.mated_npauc(quality[mated], errors, limit) == pytest.approx(curve.normalised_pauc(limit),
                                                                                  rel=1e-12)
    assert np.isnan(edc.mated_npauc(quality[:10], np.zeros(10, bool), 0.3))


def test_the_weights_are_fitted_on_the_dev_half_only():
    """Replacing every test-half signal (even by values that would pull the weights elsewhere) leaves the fitted
    weights and the dev figures unchanged and changes the test figures; replacing the dev half's moves them."""
    keys, originals, signals, pairs = synthetic()
    first = calibrate.fit(signals, originals, keys, pairs, seed=3, bootstrap=20)
    assert first.weights["good"] == 1.0 and max(first.weights["weak"], first.weights["noise"]) < 1.0
    assert first.half("test")["npauc30"]["1e-03"] < 0.9 and first.half("dev")["npauc30"]["1e-03"] < 0.9
    dev = np.array([first.split.side(identity_of(k)) == "dev" for k in keys])
    assert 0 < dev.sum() < len(dev)
    rng = np.random.default_rng(0)
    scrambled = {n: np.where(dev, v, rng.permutation(v)) for n, v in signals.items()}
    scrambled["noise"] = np.where(dev, scrambled["noise"], -50 * signals["good"])
    second = calibrate.fit(scrambled, originals, keys, pairs, seed=3, bootstrap=20)
    assert second.weights == first.weights and second.half("dev") == first.half("dev")
    assert second.half("test") != first.half("test")
    leak = {n: np.where(~dev, v, rng.permutation(v)) for n, v in signals.items()}
    assert calibrate.fit(leak, originals, keys, pairs, seed=3, bootstrap=20).weights != first.weights


def test_the_fit_reports_what_the_evaluation_stack_computes():
    """The test half's figures are edc's EDC of the fused quality on the test pairs, its intervals and differences
    those of `evaluation.bootstrap` on the same resamples (the threshold set again in each)."""
    from fiqa_trt.evaluation import bootstrap
    from fiqa_trt.evaluation.sweep import pair_similarities

    keys, originals, signals, pairs = synthetic(seed=1)
    result = calibrate.fit(signals, originals, keys, pairs, seed=0, bootstrap=30, bootstrap_seed=5,
                           references={"norm": np.log(np.linalg.norm(originals, axis=1))}, name="recipe:x")
    np.testing.assert_array_equal(result.quality, calibrate.fuse(signals, result.weights))
    test = result.test_pairs
    rows = calibrate.rows_of(test, keys)
    sim = pair_similarities(originals[rows], test.a, test.b)
    q = result.quality[rows]
    res = bootstrap.identity_resamples(test, 30, 5)
    values = bootstrap.resampled_paucs(res, test, sim, {"x": q, "good": signals["good"][rows]},
                                       fmrs=calibrate.FMRS, limits=(0.3,))
    half = result.half("test")
    for fmr in calibrate.FMRS:
        key = f"{fmr:.0e}"
        curve = edc.edc(sim, test.mated, edc.pair_quality(q[test.a], q[test.b]), fmr)
        assert half["npauc30"][key] == pytest.approx(curve.normalised_pauc(0.3), rel=1e-12)
        assert half["false_non_matches"][key] == curve.n_errors
        assert half["npauc30_90"][key] == list(bootstrap.interval(values[("x", fmr, 0.3)]))
        assert result.reference_figures()["good"]["difference_90"][key] == list(
            bootstrap.interval(values[("x", fmr, 0.3)] - values[("good", fmr, 0.3)]))
    assert set(result.reference_figures()) == {"good", "weak", "noise", "norm"}


def _pairs_of(seed: int, n: int = 400):
    """(rng, protocol, truth): n images in mated pairs (0, 1), (2, 3)...; a pair is a false non-match where the worse
    of its two images' true qualities is below -0.8."""
    rng = np.random.default_rng(seed)
    ma, mb = np.arange(0, n, 2), np.arange(1, n, 2)
    truth = rng.normal(size=n)
    errors = np.minimum(truth[ma], truth[mb]) < -0.8
    return rng, Protocol(ma, mb, {1e-3: errors, 1e-4: errors}), truth


def test_the_weight_search_honours_the_degradation_floor():
    """Signal `a` predicts the false non-matches better, but rises when faces are degraded; `b` is weaker but falls:
    unconstrained the search keeps `a` alone; with the floor it weighs `b` in until the degraded copies drop."""
    rng, proto, truth = _pairs_of(0)
    n = len(truth)
    signals = {"a": truth + 0.3 * rng.normal(size=n), "b": truth + 1.5 * rng.normal(size=n)}
    faces = rng.normal(size=50)
    check = {"clean": {"a": faces, "b": faces}, "blur": {"a": faces + 1.0, "b": faces - 3.0}}
    free = search({"b": signals["b"], "a": signals["a"]}, proto)
    held = search({"b": signals["b"], "a": signals["a"]}, proto, degraded=check, floor=degradations.FLOOR)

    def agreed(w):
        fused = {k: w["a"] * v["a"] + w["b"] * v["b"] for k, v in check.items()}
        return degradations.agreement(fused["clean"], {"blur": fused["blur"]})["blur"]

    assert agreed(free) < degradations.FLOOR <= agreed(held)


def test_a_kind_no_signal_can_rank_does_not_move_the_weights():
    """Under a kind that every signal alone ranks above the face (out of reach), the search fits as without it; a
    kind within reach of one signal still constrains it."""
    rng, proto, truth = _pairs_of(1)
    n = len(truth)
    signals = {"b": truth + 1.5 * rng.normal(size=n), "a": truth + 0.3 * rng.normal(size=n)}
    faces = rng.normal(size=50)
    dark = {"clean": {"a": faces, "b": faces}, "dark": {"a": faces + 1.0, "b": faces + 0.5 + rng.normal(size=50)}}
    assert calibrate.reachable(dark, degradations.FLOOR) == []
    assert search(signals, proto, degraded=dark, floor=degradations.FLOOR) == search(signals, proto)
    both = {**dark, "blur": {"a": faces + 1.0, "b": faces - 3.0}}
    assert calibrate.reachable(both, degradations.FLOOR) == ["blur"]
    assert search(signals, proto, degraded=both, floor=degradations.FLOOR) != search(signals, proto)


def test_the_weight_search_refuses_a_half_with_nothing_to_discard():
    none = np.zeros(10, bool)
    proto = Protocol(np.arange(0, 20, 2), np.arange(1, 20, 2), {1e-3: none, 1e-4: none})
    with pytest.raises(FiqaError, match="no false non-match"):
        search({"a": np.arange(20.0), "b": np.ones(20)}, proto)
    one = none.copy()
    one[3] = True  # an FMR without any error is left out of the objective, not a NaN that stops the search
    proto.errors = {1e-3: one, 1e-4: none}
    assert search({"a": np.arange(20.0), "b": np.ones(20)}, proto)["a"] == 1.0
    with pytest.raises(ValueError):
        search({"a": np.arange(20.0)}, proto, degraded={"clean": {"a": np.ones(3)}}, floor=0.5)


def test_the_centre_and_the_degradation_check_sample_dev_images_only():
    keys, _, _, pairs = synthetic(identities=60)
    _, _, cut = calibrate.halves(pairs, seed=1)
    for count in (10_000, 50):
        sample = calibrate.dev_sample(keys, cut, seed=1, count=count)
        assert sample and all(cut.side(identity_of(k)) == "dev" for k in sample) and len(sample) <= count
    assert calibrate.dev_sample(keys, cut, seed=1, count=50) == calibrate.dev_sample(keys, cut, seed=1, count=50)


def test_a_package_document_records_what_wrote_it():
    from fiqa_trt.quality.recipe import LOGNORM_UI_FLIP

    keys, originals, signals, pairs = synthetic(identities=60)
    result = calibrate.fit(signals, originals, keys, pairs, bootstrap=0)
    report = {"images": len(keys), "protocol": pairs.source, "split": result.split.describe(), "split_seed": 0,
              "template_check": "template check off (--realign off)"}
    done = calibrate.Calibration(LOGNORM_UI_FLIP, report, result, {}, {"seed": (0.9, 0.99)})
    from fiqa_trt.benchmark import provenance

    doc = calibrate.package_document(done, "/m/fr.onnx", "ab" * 32, "some-model",
                                     provenance(["fiqa-trt", "calibrate", "M", "I"]), "/data", "some-default")
    written = doc["written_by"]
    assert written["command"] == "fiqa-trt calibrate M I" and written["date"].endswith("UTC") and written["machine"]
    assert written["data"] == {"path": "/data", "images": len(keys), "protocol": "synthetic", "split": report["split"],
                               "split_seed": 0, "template_check": report["template_check"]}
    assert written["model_file"] == "fr.onnx" and "commit" in written
    assert doc["recipe"]["name"] == "some-default" and doc["calibrations"] == {"seed": [0.9, 0.99]}
    # another role: a variant beside the default, which is kept as it was, each with what wrote it
    fast = calibrate.package_document(done, "/m/fr.onnx", "ab" * 32, "some-model",
                                      provenance(["fiqa-trt", "calibrate", "M", "I", "--package-role", "fast"]),
                                      "/data", "some-fast", "fast", doc)
    assert {k: fast[k] for k in doc} == doc and fast["variants"]["fast"]["name"] == "some-fast"
    assert fast["variants_written_by"]["fast"]["command"].endswith("--package-role fast")
    again = calibrate.package_document(done, "/m/fr.onnx", "ab" * 32, "some-model", written, "/data",
                                       "some-default", "default", fast)
    assert again["variants"] == fast["variants"] and list(again)[:5] == list(doc)


def test_calibrate_refuses_a_negative_bootstrap_seed_before_reading_the_model(tmp_path):
    from tests.cli_runner import run_cli

    garbage = tmp_path / "garbage.onnx"  # reading it as a model would fail with another message
    garbage.write_bytes(b"not a model")
    proc = run_cli("calibrate", garbage, tmp_path, "--bootstrap-seed", "-1")
    assert proc.returncode == 2 and "--bootstrap-seed -1: give a seed of at least 0" in " ".join(proc.stderr.split())


def test_a_package_role_is_refused_without_write_package_or_a_recipe(tmp_path):
    from tests.cli_runner import run_cli

    garbage = tmp_path / "garbage.onnx"  # reading it as a model would fail with another message
    garbage.write_bytes(b"not a model")
    for extra, message in ((["--package-role", "fast"], "--package-role goes with --write-package"),
                           (["--package-role", "turbo"], "--package-role turbo: use default, fast, froq"),
                           (["--write-package", "--package-role", "fast"], "not in the registry")):
        proc = run_cli("calibrate", garbage, tmp_path, *extra)
        assert proc.returncode == 2 and message in " ".join(proc.stderr.split()), proc.stderr
