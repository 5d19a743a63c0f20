"""Evaluation: EDC/pAUC on hand-computed cases, pair protocols, the pair generator, score files, the one-pass
embedding sweep, pictures, and `fiqa-trt eval` / `fiqa-trt viz` on synthetic data (no shared data needed)."""

from __future__ import annotations

import json
import math
import pickle
import shutil

import numpy as np
import pytest

from fiqa_trt.errors import FiqaError
from fiqa_trt.evaluation import edc, external, protocols
from fiqa_trt.evaluation.report import Method, evaluate, markdown_table, random_method, write_report
from tests.test_cli import fiqa, read_csv

# ---- EDC / pAUC on hand-computed cases ----------------------------------------------------------------------
# The first cases count the discard fraction over all pairs (discard="all", the project's earlier convention);
# the ISO/IEC 29794-1 convention (over the mated comparisons, the default) follows them.
# Four non-mated pairs (similarities 0.1 .. 0.4) and four mated ones. At a target FMR of 0.25, k = floor(0.25 * 4)
# = 1 false match is allowed, so the threshold is the 2nd highest non-mated similarity, 0.3 (match: > 0.3).
NONMATED_SIM = [0.1, 0.2, 0.3, 0.4]
NONMATED_Q = [0.2, 0.3, 0.8, 0.9]


def case(mated_sim, mated_q, nonmated_sim=NONMATED_SIM, nonmated_q=NONMATED_Q):
    sim = np.array(list(mated_sim) + list(nonmated_sim))
    mated = np.array([True] * len(mated_sim) + [False] * len(nonmated_sim))
    q = np.array(list(mated_q) + list(nonmated_q), dtype=float)
    return sim, mated, q


def test_threshold_and_one_error_discarded_first():
    # mated 0.2 is the only false non-match (0.2 <= 0.3) and has the lowest pair quality: discarded first.
    sim, mated, q = case([0.2, 0.35, 0.5, 0.9], [0.1, 0.5, 0.6, 0.7])
    c = edc.edc(sim, mated, q, 0.25, discard="all")
    assert c.threshold[0] == 0.3 and c.achieved_fmr == 0.25
    np.testing.assert_allclose(c.discard, np.arange(9) / 8)
    np.testing.assert_allclose(c.fnmr, [0.25] + [0.0] * 8)
    assert c.fnmr0 == 0.25 and c.at(0.1) == 0.25 and c.at(0.125) == 0.0
    assert c.pauc(0.2) == pytest.approx(0.25 * 0.125)
    assert c.normalised_pauc(0.2) == pytest.approx(0.03125 / (0.25 * 0.2))  # 0.625
    assert c.pauc(0.3) == pytest.approx(0.03125)
    assert c.normalised_pauc(0.3) == pytest.approx(0.03125 / 0.075)


def test_ties_are_discarded_together():
    # The false non-match now shares its quality (0.5) with a correct mated pair: both go at 4/8, never one alone.
    sim, mated, q = case([0.2, 0.35, 0.5, 0.9], [0.5, 0.5, 0.6, 0.7])
    c = edc.edc(sim, mated, q, 0.25, discard="all")
    np.testing.assert_allclose(c.discard, [0, 1 / 8, 2 / 8, 4 / 8, 5 / 8, 6 / 8, 7 / 8, 1])
    np.testing.assert_allclose(c.fnmr, [0.25, 0.25, 0.25, 0, 0, 0, 0, 0])
    assert c.at(3 / 8) == 0.25 and c.at(0.5) == 0.0  # no step inside the tie group
    assert c.pauc(0.2) == pytest.approx(0.05) and c.normalised_pauc(0.2) == pytest.approx(1.0)
    assert c.pauc(0.3) == pytest.approx(0.075) and c.normalised_pauc(0.3) == pytest.approx(1.0)
    everything_tied = edc.edc(sim, mated, np.ones(8), 0.25, discard="all")  # one quality for all: one step, from 0 to 100%
    np.testing.assert_allclose(everything_tied.discard, [0, 1])
    assert everything_tied.normalised_pauc(0.3) == pytest.approx(1.0)


def test_all_errors():
    sim, mated, q = case([0.0, 0.1, 0.2, 0.3], [0.1, 0.5, 0.6, 0.7])  # every mated similarity <= 0.3
    c = edc.edc(sim, mated, q, 0.25, discard="all")
    np.testing.assert_allclose(c.fnmr, [1, 1, 1, 1, 1, 1, 0, 0, 0])  # 0 once no mated pair is left (6/8)
    assert c.pauc(0.2) == pytest.approx(0.2) and c.normalised_pauc(0.2) == pytest.approx(1.0)
    assert c.pauc(0.3) == pytest.approx(0.3) and c.normalised_pauc(0.3) == pytest.approx(1.0)


def test_no_errors():
    sim, mated, q = case([0.31, 0.5, 0.7, 0.9], [0.1, 0.5, 0.6, 0.7])
    c = edc.edc(sim, mated, q, 0.25)
    assert not c.fnmr.any() and c.pauc(0.2) == 0.0 and c.pauc(0.3) == 0.0
    assert math.isnan(c.normalised_pauc(0.2))  # FNMR(0) = 0: nothing to normalise by


def test_nan_qualities_are_rejected_with_a_clear_message():
    sim, mated, q = case([0.2, 0.35, 0.5, 0.9], [0.1, np.nan, 0.6, 0.7])
    names = [f"pair{i}" for i in range(8)]
    with pytest.raises(FiqaError, match=r"1 of 8 pair qualities is NaN or infinite \(pair1\)"):
        edc.edc(sim, mated, q, 0.25, names=names)
    q[[0, 5]] = np.nan
    with pytest.raises(FiqaError, match=r"3 of 8 pair qualities are NaN.*\(#0, #1, #5\)"):
        edc.edc(sim, mated, q, 0.25)


def test_recomputed_mode_rederives_the_threshold_at_every_step():
    # The two highest non-mated similarities have the lowest qualities. After both are discarded, k = floor(0.25
    # * 2) = 0 and the recomputed threshold drops to 0.2, so mated 0.25 is no longer an error; with the fixed
    # threshold (0.3) it stays one until it is itself discarded at 3/8.
    sim, mated, q = case([0.25, 0.35, 0.5, 0.9], [0.5, 0.6, 0.7, 0.95], nonmated_q=[0.9, 0.8, 0.2, 0.15])
    fixed = edc.edc(sim, mated, q, 0.25, discard="all")
    compat = edc.edc(sim, mated, q, 0.25, mode="recomputed", discard="all")
    np.testing.assert_allclose(fixed.fnmr[:4], [0.25, 0.25, 0.25, 0])
    np.testing.assert_allclose(compat.fnmr[:4], [0.25, 0.25, 0, 0])
    np.testing.assert_allclose(compat.threshold[:3], [0.3, 0.3, 0.2])
    assert fixed.pauc(0.3) == pytest.approx(0.25 * 0.3) and compat.pauc(0.3) == pytest.approx(0.25 * 0.25)
    assert compat.mode == "recomputed" and fixed.mode == "fixed"
    short = edc.edc(sim, mated, q, 0.25, mode="recomputed", max_discard=0.3, discard="all")
    assert short.pauc(0.3) == compat.pauc(0.3) and len(short.fnmr) < len(compat.fnmr)
    with pytest.raises(ValueError):
        short.pauc(0.6)


def test_threshold_quantile_convention_and_ties():
    t, fmr = edc.threshold_at_fmr(np.arange(1000) / 1000, 1e-2)
    assert t == 0.989 and fmr == 0.01  # k = 10 allowed above; t is the 11th highest
    tied = np.array([0.9] * 3 + [0.1] * 97)
    assert edc.threshold_at_fmr(tied, 0.02) == (0.9, 0.0)  # ties at t: the achieved FMR stays below the target
    assert edc.threshold_at_fmr(tied, 0.03) == (0.1, 0.03)
    assert edc.threshold_at_fmr(tied, 1e-4) == (0.9, 0.0)  # target * m < 1: the highest non-mated similarity
    with pytest.raises(FiqaError, match="strictly between 0 and 1"):
        edc.threshold_at_fmr(tied, 0)


def test_pair_quality_rules_and_input_checks():
    qa, qb = np.array([0.2, 0.9]), np.array([0.6, 0.1])
    np.testing.assert_allclose(edc.pair_quality(qa, qb, "min"), [0.2, 0.1])
    np.testing.assert_allclose(edc.pair_quality(qa, qb, "max"), [0.6, 0.9])
    np.testing.assert_allclose(edc.pair_quality(qa, qb, "mean"), [0.4, 0.5])
    with pytest.raises(FiqaError, match="pair-quality rule"):
        edc.pair_quality(qa, qb, "median")
    with pytest.raises(FiqaError, match="both mated and non-mated"):
        edc.edc(np.array([0.1, 0.2]), np.array([True, True]), np.array([0.1, 0.2]), 0.1)


def test_best_accuracy():
    acc, t = edc.best_accuracy(np.array([0.9, 0.8, 0.4, 0.5, 0.1, 0.2]), np.array([1, 1, 1, 0, 0, 0], bool))
    assert acc == pytest.approx(5 / 6) and t in (0.2, 0.5)
    assert edc.best_accuracy(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0], bool)) == (1.0, 0.1)


# ---- pair protocols and the generator ------------------------------------------------------------------------

@pytest.fixture
def lfw_like(tmp_path):
    """identity folders of empty .jpg files: A has 5 images, B 3, C 1, D 2."""
    root = tmp_path / "faces"
    for name, n in (("A", 5), ("B", 3), ("C", 1), ("D", 2)):
        (root / name).mkdir(parents=True)
        for i in range(1, n + 1):
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(b"x")
    return root


def test_shared_format(lfw_like, tmp_path):
    f = tmp_path / "pairs.txt"
    f.write_text("# comment\nA/A_0001.jpg,A/A_0002.jpg,1\n\nA/A_0001.jpg, B/B_0003.jpg ,-1\n"
                 "D/D_0001.jpg,D/D_0002.jpg,1\n")
    p = protocols.read_pairs(f, lfw_like)
    assert p.keys == ["A/A_0001.jpg", "A/A_0002.jpg", "B/B_0003.jpg", "D/D_0001.jpg", "D/D_0002.jpg"]
    assert p.mated.tolist() == [True, False, True]
    assert [(p.keys[a], p.keys[b]) for a, b in zip(p.a, p.b)][1] == ("A/A_0001.jpg", "B/B_0003.jpg")
    assert p.subset(2).keys == ["A/A_0001.jpg", "A/A_0002.jpg", "B/B_0003.jpg"] and len(p.subset(2)) == 2
    f.write_text("A/A_0001.jpg,A/A_0002.jpg,0\n")
    with pytest.raises(FiqaError, match=r"pairs.txt:1: the label must be 1 \(mated\) or -1"):
        protocols.read_pairs(f, lfw_like)
    f.write_text("A/A_0001.jpg,A/A_0009.jpg,1\n")
    with pytest.raises(FiqaError, match="1 of the 2 images named by pairs.txt are not under"):
        protocols.read_pairs(f, lfw_like)


def test_repeated_pairs_count_once_and_contradictions_are_refused(lfw_like, tmp_path, caplog):
    f = tmp_path / "pairs.txt"
    lines = ["A/A_0001.jpg,A/A_0002.jpg,1", "A/A_0001.jpg,B/B_0003.jpg,-1", "D/D_0001.jpg,D/D_0002.jpg,1"]
    f.write_text("\n".join(lines * 3 + ["B/B_0003.jpg,A/A_0001.jpg,-1"]) + "\n")  # every line thrice, one reversed
    with caplog.at_level("WARNING", logger="fiqa_trt"):
        p = protocols.read_pairs(f, lfw_like)
    assert len(p) == 3 and p.mated.tolist() == [True, False, True]  # three comparisons, not ten
    note = "7 repeated pair line(s) of pairs.txt left out: 3 distinct pairs, each counted once"
    assert p.notes == [note] and [r.getMessage() for r in caplog.records] == [note]
    f.write_text("A/A_0001.jpg,A/A_0002.jpg,1\nA/A_0002.jpg,A/A_0001.jpg,-1\n")
    with pytest.raises(FiqaError, match="lists the pair A/A_0002.jpg, A/A_0001.jpg both as mated and as non-mated"):
        protocols.read_pairs(f, lfw_like)


def test_lfw_pairs_txt_layout(lfw_like, tmp_path):
    f = tmp_path / "pairs.txt"
    f.write_text("1\t2\nA\t1\t3\nB\t2\t3\nA\t5\tD\t2\nC\t1\tB\t1\n")
    for protocol in ("auto", "lfw", "xqlfw"):
        p = protocols.read_pairs(f, lfw_like, protocol)
        assert p.mated.tolist() == [True, True, False, False]
        named = [(p.keys[a], p.keys[b]) for a, b in zip(p.a, p.b)]
        assert named[0] == ("A/A_0001.jpg", "A/A_0003.jpg") and named[2] == ("A/A_0005.jpg", "D/D_0002.jpg")
    f.write_text("A\t1\t3\nA\tx\t3\n")  # no header is fine; a bad number is not
    with pytest.raises(FiqaError, match="pairs.txt:2: 'x' is not an image number"):
        protocols.read_pairs(f, lfw_like)
    f.write_text("A 1 3 4 5\n")
    with pytest.raises(FiqaError, match="LFW pairs.txt layout"):
        protocols.read_pairs(f, lfw_like, "lfw")


def test_cplfw_calfw_two_line_layout(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    for n in ("A_1.jpg", "A_2.jpg", "B_1.jpg", "C_4.jpg"):
        (root / n).write_bytes(b"x")
    f = tmp_path / "pairs_CPLFW.txt"
    f.write_text("A_1.jpg 1\nA_2.jpg 1\nB_1.jpg 0\nC_4.jpg 0\n")
    for protocol in ("auto", "cplfw", "calfw"):
        p = protocols.read_pairs(f, root, protocol)
        assert p.mated.tolist() == [True, False] and p.keys == ["A_1.jpg", "A_2.jpg", "B_1.jpg", "C_4.jpg"]
    f.write_text("A_1.jpg 1\nA_2.jpg 1\nB_1.jpg 0\n")
    with pytest.raises(FiqaError, match="two lines per pair; it has 3 lines"):
        protocols.read_pairs(f, root)
    f.write_text("A_1.jpg 1\nB_1.jpg 0\n")
    with pytest.raises(FiqaError, match="same label"):
        protocols.read_pairs(f, root)


def test_protocol_mistakes(lfw_like, tmp_path):
    with pytest.raises(FiqaError, match="pair file not found"):
        protocols.read_pairs(tmp_path / "none.txt", lfw_like)
    (tmp_path / "p.txt").write_text("A/A_0001.jpg,A/A_0002.jpg,1\n")
    with pytest.raises(FiqaError, match="unknown protocol"):
        protocols.read_pairs(tmp_path / "p.txt", lfw_like, "ijbc")
    with pytest.raises(FiqaError, match="image folder not found"):
        protocols.read_pairs(tmp_path / "p.txt", tmp_path / "nowhere")


def test_generator_cap_seed_and_impostors(lfw_like):
    p = protocols.generate_pairs(lfw_like, max_mated_per_identity=4, seed=1)
    mated = [(p.keys[a], p.keys[b]) for a, b, m in zip(p.a, p.b, p.mated) if m]
    by_identity = {i: sum(1 for a, _ in mated if a.startswith(i + "/")) for i in "ABCD"}
    assert by_identity == {"A": 4, "B": 3, "C": 0, "D": 1}  # A: 4 of its 10 pairs; B: all 3; C alone; D: 1
    assert all(a.split("/")[0] == b.split("/")[0] for a, b in mated)
    impostors = [(p.keys[a], p.keys[b]) for a, b, m in zip(p.a, p.b, p.mated) if not m]
    assert len(impostors) == 8 == len(set(impostors))  # as many as mated by default, no repeats
    assert all(a.split("/")[0] != b.split("/")[0] for a, b in impostors)
    again = protocols.generate_pairs(lfw_like, max_mated_per_identity=4, seed=1)
    assert again.keys == p.keys and (again.a == p.a).all() and (again.b == p.b).all()
    other = protocols.generate_pairs(lfw_like, max_mated_per_identity=4, seed=2)
    assert [(other.keys[a], other.keys[b]) for a, b in zip(other.a, other.b)] != mated + impostors
    every = protocols.generate_pairs(lfw_like, max_mated_per_identity=None, impostors=20)
    assert int(every.mated.sum()) == 10 + 3 + 1 and int((~every.mated).sum()) == 20
    # an identity's mated sample depends on (seed, identity) only: adding a folder does not change A's
    (lfw_like / "E").mkdir()
    for i in (1, 2):
        (lfw_like / "E" / f"E_{i:04d}.jpg").write_bytes(b"x")
    grown = protocols.generate_pairs(lfw_like, max_mated_per_identity=4, seed=1)
    grown_a = [(grown.keys[a], grown.keys[b]) for a, b, m in zip(grown.a, grown.b, grown.mated)
               if m and grown.keys[a].startswith("A/")]
    assert grown_a == [x for x in mated if x[0].startswith("A/")]
    with pytest.raises(FiqaError, match="allow only"):
        protocols.generate_pairs(lfw_like, impostors=10_000)
    with pytest.raises(FiqaError, match="at least 1"):
        protocols.generate_pairs(lfw_like, max_mated_per_identity=0)


# ---- external score files ------------------------------------------------------------------------------------

KEYS = ["A/A_0001.jpg", "A/A_0002.jpg", "B/B_0001.jpg"]


def test_score_file_readers(tmp_path):
    (tmp_path / "s.csv").write_text("path,quality,cos_affine,error\n/data/A/A_0001.jpg,0.9,0.9,\n"
                                    "/data/A/A_0002.jpg,0.5,0.5,\n/data/B/B_0001.jpg,0.7,0.7,\n/data/x.jpg,,,broken\n")
    (tmp_path / "plain.csv").write_text("A_0001.jpg,0.9\nA_0002.jpg,0.5\nB_0001.jpg,0.7\n")
    (tmp_path / "s.json").write_text(json.dumps({"A/A_0001.jpg": 0.9, "A/A_0002.jpg": 0.5, "B/B_0001.jpg": 0.7}))
    (tmp_path / "r.json").write_text(json.dumps([{"path": k, "quality": v} for k, v in zip(KEYS, (0.9, 0.5, 0.7))]))
    (tmp_path / "s.jsonl").write_text("\n".join(json.dumps({"path": k, "score": v})
                                                for k, v in zip(KEYS, (0.9, 0.5, 0.7))))
    with open(tmp_path / "s.pkl", "wb") as f:
        pickle.dump({"A_0001": 0.9, "A_0002": np.float32(0.5), "B_0001": 0.7}, f)  # stems only
    for name in ("s.csv", "plain.csv", "s.json", "r.json", "s.jsonl", "s.pkl"):
        scores = external.read_scores(tmp_path / name)
        np.testing.assert_allclose(external.match_scores(scores, KEYS), [0.9, 0.5, 0.7], rtol=1e-6, err_msg=name)


def test_score_file_mistakes(tmp_path):
    with pytest.raises(FiqaError, match="score file not found"):
        external.read_scores(tmp_path / "none.csv")
    (tmp_path / "s.xlsx").write_text("x")
    with pytest.raises(FiqaError, match="unknown score-file type"):
        external.read_scores(tmp_path / "s.xlsx")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FiqaError, match="cannot be read"):
        external.read_scores(tmp_path / "bad.json")
    (tmp_path / "words.csv").write_text("path,quality\nA_0001.jpg,high\n")
    with pytest.raises(FiqaError, match="'high' is not a number"):
        external.read_scores(tmp_path / "words.csv")
    with pytest.raises(FiqaError, match=r"1 of the 3 pair images have no score in the score file: B/B_0001.jpg"):
        external.match_scores({"A_0001.jpg": 1.0, "A_0002.jpg": 2.0}, KEYS)
    with pytest.raises(FiqaError, match="match more than one entry"):
        external.match_scores({"x/A_0001.jpg": 1.0, "y/A_0001.jpg": 2.0, "A_0002.jpg": 1, "B_0001.jpg": 1},
                              ["A_0001.jpg", "A_0002.jpg", "B_0001.jpg"])


# ---- reports and pictures ------------------------------------------------------------------------------------

@pytest.fixture
def synthetic_report(tmp_path):
    rng = np.random.default_rng(0)
    keys = [f"id{i // 4}/img{i}.png" for i in range(80)]
    a = rng.integers(0, 80, 400)
    b = (a + rng.integers(1, 79, 400)) % 80
    mated = rng.random(400) < 0.5
    pairs = protocols.Pairs(tmp_path, keys, a, b, mated, "synthetic")
    quality = rng.random(80)
    good = np.minimum(quality[a], quality[b])
    similarity = np.where(mated, 0.3 + 0.5 * good, 0.1) + rng.normal(0, 0.1, 400)  # low quality: low genuine sim
    methods = [Method("good", "engine", "synthetic", quality), random_method(80)]
    return pairs, evaluate(pairs, similarity, methods, fmrs=(1e-1, 1e-2), compat=True), methods


def test_report_tables(synthetic_report, tmp_path):
    pairs, report, _ = synthetic_report
    rows = {(r["method"], r["mode"], r["target_fmr"]): r for r in report["results"]}
    assert len(rows) == 2 * 2 * 2
    good, rand = rows[("good", "fixed", 0.1)], rows[("random", "fixed", 0.1)]
    assert good["fnmr_0"] == rand["fnmr_0"] > 0 and good["pauc20_norm"] < rand["pauc20_norm"]
    assert "recomputed (COMPAT)" in markdown_table(report)
    paths = write_report(report, tmp_path / "out")
    assert [p.name for p in paths] == ["results.json", "results.csv", "results.md"]
    assert json.loads(paths[0].read_text())["pairs"]["pairs"] == 400
    assert len(read_csv(paths[1])) == 8
    bad = random_method(80)
    bad.quality[pairs.a[0]] = np.nan
    with pytest.raises(FiqaError, match=r"1 of \d+ image qualities of 'random' is NaN or infinite \(id"):
        evaluate(pairs, np.zeros(400), [bad])


def test_pictures_are_written(synthetic_report, face_like, tmp_path):
    pytest.importorskip("matplotlib")
    from fiqa_trt.evaluation import plots

    _, report, methods = synthetic_report
    written = plots.plot_edc(report, 1e-2, tmp_path / "edc")
    written += plots.plot_edc(report, 1e-2, tmp_path / "edc_compat", mode="recomputed", max_discard=0.3)
    written += plots.plot_histograms({m.name: m.quality for m in methods}, tmp_path / "hist")
    q = np.array([0.3, np.nan, 0.9, 0.5])
    written += plots.plot_face_grid([str(p) for p in face_like], q, tmp_path / "grid", count=4, cols=2)
    assert [p.suffix for p in written] == [".png", ".svg"] * 4
    assert all(p.stat().st_size > 1000 for p in written)
    assert plots.pick_faces(q, 4).tolist() == [0, 3, 2]  # NaN left out, lowest first
    assert plots.pick_faces(q, 1, "highest").tolist() == [2]
    with pytest.raises(FiqaError, match="no method nope"):
        plots.plot_edc(report, 1e-2, tmp_path / "x", methods=["nope"])


# ---- the one-pass sweep and the CLI (random-weight model, synthetic faces) -----------------------------------

class CountingRunner:
    """Wraps a runner and counts the samples it embeds."""

    def __init__(self, runner):
        self.inner, self.config, self.name, self.device, self.samples = runner, runner.config, runner.name, "cpu", 0

    def embed(self, batch):
        self.samples += len(batch)
        return self.inner.embed(batch)


@pytest.fixture
def identity_folders(tmp_path, face_like):
    """6 images in identity folders: P0 has 3, P1 2, P2 1 (two images are copies of others)."""
    root = tmp_path / "ids"
    for i, (p, person) in enumerate(zip(face_like + face_like[:2], ["P0", "P0", "P0", "P1", "P1", "P2"])):
        (root / person).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, root / person / f"{person}_{i:04d}.png")
    return root


def test_scorer_embed_and_score_agree(random_model, face_like):
    from fiqa_trt import kernels
    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.engine.scorer import Scorer

    runner = load_runner(str(random_model))
    items = [Item(str(p), p.name) for p in face_like] + [Item(str(face_like[0].parent / "missing.png"), "m")]
    scorer = Scorer(runner, ["affine", "border"], batch_size=3)
    batches = list(scorer.embed(items))
    assert [len(b.items) for b in batches] == [3, 2]
    assert batches[0].embeddings.shape == (3, 3, runner.config.embedding_size)
    assert batches[1].embeddings.shape[0] == 1 and batches[1].items[1].error == "file not found"
    results = list(scorer.score(items))
    _, q = kernels.quality(np.concatenate([b.embeddings for b in batches]), "mean")
    np.testing.assert_allclose([r.quality for r in results[:4]], q, rtol=1e-6)


def test_sweep_embeds_each_image_once_for_all_specs(random_model, identity_folders):
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.engine.scorer import Scorer
    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.evaluation import sweep

    runner = CountingRunner(load_runner(str(random_model)))
    keys = sorted(str(p.relative_to(identity_folders)) for p in identity_folders.glob("*/*.png"))
    result = sweep.embed_specs(runner, identity_folders, keys, ["affine", "border", "gaussian"], views=2,
                               batch_size=4)
    assert runner.samples == len(keys) * (1 + 1 + 1 + 2)  # one original + every view, once
    assert list(result.qualities) == ["affine", "border", "gaussian"] and result.views["gaussian"] == ["gaussian8_0",
                                                                                                       "gaussian8_1"]
    assert result.originals.shape == (len(keys), runner.config.embedding_size) and not result.errors
    alone = [r.quality for r in Scorer(runner, ["affine"]).score([Item(str(identity_folders / k), k) for k in keys])]
    np.testing.assert_allclose(result.qualities["affine"], alone, rtol=1e-5)  # first spec: same keyed draws
    other = sweep.embed_specs(runner, identity_folders, keys, ["border"], batch_size=2)
    np.testing.assert_allclose(other.originals, result.originals, rtol=1e-5, atol=1e-6)
    sim = sweep.pair_similarities(result.originals, np.array([0, 1]), np.array([0, 2]))
    assert sim[0] == pytest.approx(1.0)
    assert sweep.method_names(["gaussian:sigma=4", "gaussian:sigma=8", "border:thickness=8"]) == [
        "gaussian:sigma=4", "gaussian:sigma=8", "border"]
    with pytest.raises(FiqaError, match="given twice"):
        sweep.embed_specs(runner, identity_folders, keys, ["border", "border:thickness=8"])


def test_eval_and_viz_commands(random_model, identity_folders, tmp_path):
    pytest.importorskip("matplotlib")
    scores = tmp_path / "other.csv"
    keys = sorted(str(p.relative_to(identity_folders)) for p in identity_folders.glob("*/*.png"))
    scores.write_text("path,quality\n" + "".join(f"{k},{i / 10}\n" for i, k in enumerate(keys)))
    out = tmp_path / "out"
    proc = fiqa("eval", identity_folders, "--model", random_model, "--generate", "--impostors", "6", "-p", "affine",
                "-p", "border", "--external", f"other={scores}", "--lower-is-better", "other", "--fmr", "0.1",
                "--compat", "--out-dir", out)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in report["methods"]] == ["affine", "border", "other", "random"]
    assert report["pairs"]["mated"] == 4 and report["pairs"]["nonmated"] == 6
    assert {r["mode"] for r in report["results"]} == {"fixed", "recomputed"}
    assert report["settings"]["specs"]["border"] == "border:thickness=8"
    assert "recomputed (COMPAT)" in (out / "results.md").read_text()
    qualities = read_csv(out / "qualities.csv")
    assert len(qualities) == 6 and float(qualities[1]["other"]) == -0.1  # negated: lower is better
    for name in ("edc_fmr1e-01", "edc_fmr1e-01_recomputed", "quality_hist", "faces_affine"):
        for ext in ("png", "svg"):
            assert (out / f"{name}.{ext}").stat().st_size > 1000, name
    proc = fiqa("viz", out, "--out-dir", tmp_path / "pics", "--faces", "4", "--grid-method", "border")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "pics" / "faces_border.svg").stat().st_size > 1000
    (tmp_path / "abs.csv").write_text("path,quality\n" + "".join(f"{identity_folders / k},{i}\n"
                                                                 for i, k in enumerate(keys)))
    proc = fiqa("viz", tmp_path / "abs.csv", "--faces", "3")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "abs_faces.png").is_file() and (tmp_path / "abs_hist.svg").is_file()


@pytest.mark.parametrize("args, fragment", [
    ([], "no pairs: pass --pairs FILE"),
    (["--generate", "--pairs", "{tmp}/p.txt"], "either --pairs FILE or --generate"),
    (["--pairs", "{tmp}/p.txt"], "pair file not found"),
    (["--generate", "--fmr", "0"], "must be strictly between 0 and 1"),
    (["--generate", "--pair-quality", "median"], "unknown --pair-quality"),
    (["--generate", "--external", "{tmp}/nan.csv"], "image qualities of 'nan' is NaN"),
    (["--generate", "--external", "{tmp}/part.csv"], "have no score in the score file part.csv"),
    (["--generate", "--lower-is-better", "x"], "names no --external method"),
    (["--generate", "--generator", "lfw"], "unknown --generator 'lfw'"),
    (["--generate", "--half", "train"], "--half 'train': use dev or test"),
    (["--generate", "--discard", "all"], "intervals are computed over the mated comparisons"),
    (["--generate", "--compare", "affine"], "use A:B"),
])
def test_eval_mistakes_exit_2_with_a_message(random_model, identity_folders, tmp_path, args, fragment):
    keys = sorted(str(p.relative_to(identity_folders)) for p in identity_folders.glob("*/*.png"))
    (tmp_path / "nan.csv").write_text("path,quality\n" + "".join(f"{k},{'nan' if i == 0 else i}\n"
                                                                 for i, k in enumerate(keys)))
    (tmp_path / "part.csv").write_text("path,quality\n" + f"{keys[0]},1\n")
    values = {"tmp": tmp_path}
    proc = fiqa("eval", identity_folders, "--model", random_model, "--impostors", "3", "--out-dir", tmp_path / "o",
                "--no-plots", *[a.format(**values) for a in args])
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr
