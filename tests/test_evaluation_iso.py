"""The ISO/IEC 29794-1 conventions of the evaluation: EDC over the mated comparisons, the theoretical-best curve,
weighted (bootstrap) EDCs against replicated pairs, bootstrap intervals over identities, the identity split and
the all-mated protocol. Hand-computed cases and independent computations; the shared-LFW checks skip without it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fiqa_trt.errors import FiqaError
from fiqa_trt.evaluation import bootstrap, edc, protocols, split
from tests.test_evaluation import case

# ---- EDC over the mated comparisons (the default) --------------------------------------------------------------


def test_mated_pool_hand_computed():
    # threshold 0.3 (see tests/test_evaluation.py); the one false non-match (mated 0.2) has the lowest quality.
    sim, mated, q = case([0.2, 0.35, 0.5, 0.9], [0.1, 0.5, 0.6, 0.7])
    c = edc.edc(sim, mated, q, 0.25)
    assert c.discard_over == "mated" and c.pool == 4 and c.n_errors == 1
    np.testing.assert_allclose(c.discard, [0, 0.25, 0.5, 0.75, 1])  # quarters of the 4 mated comparisons
    np.testing.assert_allclose(c.fnmr, [0.25, 0, 0, 0, 0])
    assert c.pauc(0.3) == pytest.approx(0.25 * 0.25) and c.normalised_pauc(0.3) == pytest.approx(0.0625 / 0.075)
    assert c.best_pauc(0.3) == pytest.approx(c.pauc(0.3))  # this quality is the best possible one
    # the false non-match is now second lowest: 1/4, then 1/3 after the first discard, then 0
    sim, mated, q = case([0.35, 0.2, 0.5, 0.9], [0.1, 0.5, 0.6, 0.7])
    c = edc.edc(sim, mated, q, 0.25)
    np.testing.assert_allclose(c.fnmr, [0.25, 1 / 3, 0, 0, 0])
    assert c.pauc(0.3) == pytest.approx(0.25 * 0.25 + (1 / 3) * 0.05)
    assert c.pauc(0.3) > c.best_pauc(0.3) == pytest.approx(0.0625)


def test_nonmated_qualities_do_not_move_the_mated_curve():
    sim, mated, q = case([0.35, 0.2, 0.5, 0.9], [0.1, 0.5, 0.6, 0.7])
    base = edc.edc(sim, mated, q, 0.25)
    q2 = q.copy()
    q2[~mated] = [0.0, 0.99, 0.3, 0.55]
    moved = edc.edc(sim, mated, q2, 0.25)
    np.testing.assert_array_equal(base.discard, moved.discard)
    np.testing.assert_array_equal(base.fnmr, moved.fnmr)
    old_axis = [edc.edc(sim, mated, x, 0.25, discard="all") for x in (q, q2)]
    assert old_axis[0].pauc(0.2) != old_axis[1].pauc(0.2)  # over all pairs, the non-mated qualities move it
    with pytest.raises(FiqaError, match="unknown discard pool"):
        edc.edc(sim, mated, q, 0.25, discard="nonmated")


def test_recomputed_mode_over_the_mated_pool():
    # After the lowest mated comparison (q 0.5) is discarded, only the non-mated pairs above q 0.5 remain
    # (similarities 0.1 and 0.2): k = 0, the threshold drops to 0.2 and no mated comparison left is an error.
    sim, mated, q = case([0.25, 0.35, 0.5, 0.9], [0.5, 0.6, 0.7, 0.95], nonmated_q=[0.9, 0.8, 0.2, 0.15])
    compat = edc.edc(sim, mated, q, 0.25, mode="recomputed")
    np.testing.assert_allclose(compat.threshold[:4], [0.3, 0.2, 0.2, 0.2])
    np.testing.assert_allclose(compat.fnmr, [0.25, 0, 0, 0, 0])
    # the 0.25 false non-match is no longer the lowest: with the fixed threshold it stays until discarded
    sim, mated, q = case([0.35, 0.25, 0.5, 0.9], [0.5, 0.6, 0.7, 0.95], nonmated_q=[0.9, 0.8, 0.55, 0.15])
    fixed = edc.edc(sim, mated, q, 0.25)
    compat = edc.edc(sim, mated, q, 0.25, mode="recomputed")
    np.testing.assert_allclose(fixed.fnmr, [0.25, 1 / 3, 0, 0, 0])
    np.testing.assert_allclose(compat.threshold[:2], [0.3, 0.3])  # 0.3 (q 0.55) is above the cut at 0.5
    np.testing.assert_allclose(compat.fnmr[:3], [0.25, 1 / 3, 0])


# ---- the theoretical-best curve -----------------------------------------------------------------------------------


def test_theoretical_best_known_case():
    # 10 mated comparisons, 2 false non-matches: 2/10 until one is discarded, 1/9, then 0.
    assert edc.best_pauc(2, 10, 10, 0.3) == pytest.approx(0.1 * 0.2 + 0.1 / 9)
    assert edc.best_pauc(2, 10, 10, 0.05) == pytest.approx(0.05 * 0.2)
    assert edc.best_pauc(0, 10, 10, 0.3) == 0.0
    # over all pairs (pool 20) each discard step is 1/20 wide
    assert edc.best_pauc(2, 10, 20, 0.3) == pytest.approx(0.05 * 0.2 + 0.05 / 9)
    # a large pool: the step curve tends to (e0 - f) / (1 - f), whose integral to a = min(L, e0) is
    # a + (1 - e0) ln(1 - a)
    e0, m = 0.05, 100_000
    for limit in (0.02, 0.3):
        a = min(limit, e0)
        assert edc.best_pauc(int(e0 * m), m, m, limit) == pytest.approx(a + (1 - e0) * math.log(1 - a), rel=1e-3)


def test_no_quality_beats_the_theoretical_best():
    rng = np.random.default_rng(3)
    sim = np.concatenate([rng.normal(0.6, 0.2, 300), rng.normal(0.1, 0.1, 3000)])
    mated = np.arange(3300) < 300
    c0 = edc.edc(sim, mated, np.zeros(3300), 1e-2)
    errors = mated & (sim <= c0.threshold[0])
    oracle = np.where(errors, 0.0, 1.0) + rng.random(3300) * 1e-3  # false non-matches first
    best = edc.edc(sim, mated, oracle, 1e-2)
    for limit in (0.05, 0.2, 0.3):
        assert best.pauc(limit) == pytest.approx(best.best_pauc(limit), rel=1e-12)
        for seed in range(20):
            c = edc.edc(sim, mated, np.random.default_rng(seed).random(3300), 1e-2)
            assert c.pauc(limit) >= c.best_pauc(limit) - 1e-15
    grid = np.linspace(0, 0.3, 61)
    np.testing.assert_allclose(best.at(grid), best.best_fnmr(grid), atol=1e-12)


# ---- weighted EDCs (bootstrap) against replicated pairs ------------------------------------------------------------


def test_weighted_threshold_equals_the_replicated_threshold():
    rng = np.random.default_rng(5)
    for _ in range(30):
        s = np.round(rng.normal(0, 1, 400), 2)  # with ties
        w = rng.integers(0, 4, 400)
        w[0] = 1
        order = np.argsort(-s, kind="stable")
        for target in (1e-3, 1e-2, 0.1):
            expected = edc.threshold_at_fmr(np.repeat(s, w), target)[0]
            assert edc.weighted_threshold(s[order], w[order].astype(float), target) == expected


def test_fixed_paucs_equal_the_edc_of_replicated_pairs():
    rng = np.random.default_rng(11)
    m = 500
    sim = np.concatenate([rng.normal(0.5, 0.2, m), rng.normal(0.1, 0.1, 2000)])
    mated = np.arange(len(sim)) < m
    q = np.round(rng.random(len(sim)), 2)  # ties
    t = edc.threshold_at_fmr(sim[~mated], 1e-2)[0]
    order = np.argsort(q[:m], kind="stable")
    counts = edc.group_ends(q[:m][order])
    errors = sim[:m][order] <= t
    weights = rng.integers(0, 3, (6, m))
    weights[0] = 1
    for limit in (0.1, 0.3):
        pauc, fnmr0 = edc.fixed_paucs(errors, weights[:, order], counts, limit)
        for r in range(6):
            keep = np.concatenate([np.repeat(np.arange(m), weights[r]), np.arange(m, len(sim))])
            c = edc.edc(sim[keep], mated[keep], q[keep], 1e-2)  # the non-mated side unchanged: same threshold
            assert c.threshold[0] == t
            assert pauc[r] == pytest.approx(c.pauc(limit), abs=1e-12) and fnmr0[r] == pytest.approx(c.fnmr0)


# ---- bootstrap intervals over identities ----------------------------------------------------------------------


def synthetic_pairs(identities: int, seed: int = 0, images: int = 4, nonmated: int = 20_000):
    """Identity folders id<i>/<j>.jpg; image quality u ~ U(0,1); mated similarity grows with the pair's quality."""
    rng = np.random.default_rng(seed)
    keys = [f"id{i:05d}/{j}.jpg" for i in range(identities) for j in range(images)]
    label = np.repeat(np.arange(identities), images)
    ia, ib = np.triu_indices(images, 1)
    ma = (np.arange(identities)[:, None] * images + ia).ravel()
    mb = (np.arange(identities)[:, None] * images + ib).ravel()
    na, nb = protocols.sample_nonmated(label, nonmated, rng)
    pairs = protocols.Pairs(None, keys, np.concatenate([ma, na]), np.concatenate([mb, nb]),
                            np.arange(len(ma) + len(na)) < len(ma), "synthetic")
    quality = rng.random(len(keys))
    pq = np.minimum(quality[pairs.a], quality[pairs.b])
    sim = np.where(pairs.mated, 0.25 + 0.6 * pq + rng.normal(0, 0.12, len(pairs)), rng.normal(0.0, 0.08, len(pairs)))
    return pairs, sim, quality


def test_bootstrap_interval_covers_the_estimate_and_shrinks_with_more_identities():
    widths = []
    for n in (100, 1600):
        pairs, sim, quality = synthetic_pairs(n)
        noise = np.random.default_rng(1).random(len(quality))
        point = edc.edc(sim, pairs.mated, edc.pair_quality(quality[pairs.a], quality[pairs.b]), 1e-2)
        res = bootstrap.identity_resamples(pairs, count=200, seed=0)
        values = bootstrap.resampled_paucs(res, pairs, sim, {"good": quality, "noise": noise}, fmrs=(1e-2,),
                                           limits=(0.3,))
        lo, hi = bootstrap.interval(values[("good", 1e-2, 0.3)])
        assert lo <= point.normalised_pauc(0.3) <= hi
        assert hi < 1.0  # a quality that predicts errors is better than random discarding
        _, d_hi = bootstrap.interval(values[("good", 1e-2, 0.3)] - values[("noise", 1e-2, 0.3)])
        assert d_hi < 0  # better than noise on the same resamples: the difference interval excludes 0
        np.testing.assert_array_equal(values[("good", 1e-2, 0.3)] - values[("good", 1e-2, 0.3)], 0)
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # 16x the identities: about 4x narrower


def test_bootstrap_is_seeded_and_checks_its_arguments():
    pairs, _, _ = synthetic_pairs(50, nonmated=2000)
    a = bootstrap.identity_resamples(pairs, 20, seed=4)
    b = bootstrap.identity_resamples(pairs, 20, seed=4)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert (a.counts.sum(axis=1) == 50).all() and a.names[0] == "id00000"
    assert not np.array_equal(a.counts, bootstrap.identity_resamples(pairs, 20, seed=5).counts)
    with pytest.raises(FiqaError, match="at least 2"):
        bootstrap.identity_resamples(pairs, 1)
    with pytest.raises(FiqaError, match="level"):
        bootstrap.interval(np.ones(3), 1.5)


# ---- identity split ------------------------------------------------------------------------------------------------


def test_identity_split_is_disjoint_seeded_and_stable():
    names = [f"person{i}" for i in range(2000)]
    s = split.identity_split(names + names[:10], seed=7)  # repeats (one per image) are fine
    assert s.dev.isdisjoint(s.test) and s.dev | s.test == set(names)
    assert 900 < len(s.test) < 1100  # about half
    assert split.identity_split(names, seed=7) == s
    other = split.identity_split(names, seed=8)
    assert other.test != s.test and 0.35 < len(other.test & s.test) / len(s.test) < 0.65  # independent halves
    grown = split.identity_split(names + [f"new{i}" for i in range(500)], seed=7)
    assert {n for n in grown.test if n.startswith("person")} == s.test  # adding identities moves none
    assert all(s.side(n) == ("test" if n in s.test else "dev") for n in names)
    quarter = split.identity_split(names, seed=7, test_fraction=0.25)
    assert quarter.test <= s.test and 400 < len(quarter.test) < 600
    with pytest.raises(FiqaError, match="strictly between 0 and 1"):
        split.identity_split(names, test_fraction=1.0)


def test_split_pairs_keep_each_half_to_itself():
    pairs, _, _ = synthetic_pairs(200, nonmated=5000)
    halves = split.identity_split(pairs.identities(), seed=1)
    dev, test = split.split_pairs(pairs, halves)
    for half, members in ((dev, halves.dev), (test, halves.test)):
        ids = half.identities()
        assert set(ids) <= members
        assert all(ids[a].startswith("id") and (ids[a] == ids[b]) == m for a, b, m in zip(half.a, half.b, half.mated))
    assert int(dev.mated.sum()) + int(test.mated.sum()) == int(pairs.mated.sum())  # no mated pair lost
    assert len(dev) + len(test) < len(pairs)  # the non-mated pairs across the halves are dropped
    assert set(dev.keys).isdisjoint(test.keys)


# ---- the all-mated protocol ------------------------------------------------------------------------------------


@pytest.fixture
def lfw_like(tmp_path):
    """identity folders of empty .jpg files: A has 5 images, B 3, C 1, D 2."""
    root = tmp_path / "faces"
    for name, n in (("A", 5), ("B", 3), ("C", 1), ("D", 2)):
        (root / name).mkdir(parents=True)
        for i in range(1, n + 1):
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(b"x")
    return root


def named(p):
    return [(p.keys[a], p.keys[b], bool(m)) for a, b, m in zip(p.a, p.b, p.mated)]


def test_all_mated_protocol(lfw_like):
    p = protocols.all_mated_pairs(lfw_like, max_images=4, nonmated=None, seed=1)
    pairs = named(p)
    mated = [x for x in pairs if x[2]]
    a_images = {k for x in mated for k in x[:2] if k.startswith("A/")}
    assert len(a_images) == 4 and len(mated) == 6 + 3 + 1  # A: all pairs of its 4 kept images; B: 3; D: 1
    assert all(a.split("/")[0] == b.split("/")[0] for a, b, _ in mated)
    nonmated = [x for x in pairs if not x[2]]
    # every non-mated pair of the 4 + 3 + 1 + 2 kept images: (10^2 - 16 - 9 - 1 - 4) / 2
    assert len(nonmated) == 35 == len({frozenset(x[:2]) for x in nonmated})
    assert all(a.split("/")[0] != b.split("/")[0] for a, b, _ in nonmated)
    assert p.keys == sorted(p.keys) and "C/C_0001.jpg" in p.keys
    assert named(protocols.all_mated_pairs(lfw_like, 4, None, seed=1)) == pairs  # seeded
    kept = {frozenset(k for k in protocols.all_mated_pairs(lfw_like, 4, None, seed=s).keys if k.startswith("A/"))
            for s in range(10)}
    assert len(kept) > 1  # the kept 4 of A's 5 images depend on the seed
    some = protocols.all_mated_pairs(lfw_like, None, nonmated=7, seed=0)
    assert int(some.mated.sum()) == 10 + 3 + 1 and int((~some.mated).sum()) == 7
    with pytest.raises(FiqaError, match="allow only 35"):
        protocols.all_mated_pairs(lfw_like, 4, nonmated=36)
    with pytest.raises(FiqaError, match="at least 2"):
        protocols.all_mated_pairs(lfw_like, 1)


def test_sample_nonmated_is_uniform_and_without_repeats():
    label = np.array([0, 0, 1, 1, 1, 2])
    a, b = protocols.sample_nonmated(label, 11, np.random.default_rng(0))  # 11 = every possible pair
    assert len(set(zip(a.tolist(), b.tolist()))) == 11 and (a < b).all() and (label[a] != label[b]).all()
    hits = np.zeros((6, 6))
    for seed in range(400):
        a, b = protocols.sample_nonmated(label, 3, np.random.default_rng(seed))
        hits[a, b] += 1
    chosen = hits[hits > 0]
    assert len(chosen) == 11 and chosen.min() > 0.6 * chosen.mean()  # each pair about 400 * 3 / 11 times


def test_all_mated_protocol_on_the_shared_lfw(lfw):
    p = protocols.all_mated_pairs(lfw, max_images=20, nonmated=2_000_000, seed=0)
    assert int(p.mated.sum()) == 27_726 and int((~p.mated).sum()) == 2_000_000
    ids = np.array(p.identities())
    assert (ids[p.a] == ids[p.b]).tolist() == p.mated.tolist()
    codes = p.a.astype(np.int64) * len(p.keys) + p.b
    assert len(np.unique(codes)) == len(p)
    halves = split.identity_split(p.identities(), seed=0)
    dev, test = split.split_pairs(p, halves)
    print(dev.describe(), test.describe())
    assert 0.4 < dev.mated.sum() / p.mated.sum() < 0.6


def test_compare_splits_method_names_that_hold_colons():
    from fiqa_trt.evaluation.report import Method, evaluate

    pairs, sim, quality = synthetic_pairs(60, nonmated=3000)
    noise = np.random.default_rng(2).random(len(quality))
    methods = [Method("recipe:model-default", "engine", "", quality), Method("norm", "engine", "", noise),
               Method("affine:seed", "engine", "", noise)]
    report = evaluate(pairs, sim, methods, fmrs=(1e-2,), limits=(0.3,), bootstrap=20,
                      compare=["recipe:model-default:affine:seed", ("norm", "affine:seed")])
    got = [(d["a"], d["b"]) for d in report["differences"]]
    assert got == [("recipe:model-default", "affine:seed"), ("norm", "affine:seed")]
    assert report["differences"][1]["point"] == 0 and report["differences"][0]["point"] < 0
    with pytest.raises(FiqaError, match="among the methods"):
        evaluate(pairs, sim, methods, fmrs=(1e-2,), limits=(0.3,), compare=["recipe:norm:x"])
    twice = methods + [Method("a", "engine", "", noise), Method("a:b", "engine", "", noise),
                       Method("b:c", "engine", "", noise), Method("c", "engine", "", noise)]
    with pytest.raises(FiqaError, match="more than one way"):  # a | b:c  or  a:b | c
        evaluate(pairs, sim, twice, fmrs=(1e-2,), limits=(0.3,), compare=["a:b:c"])


def test_no_interval_around_an_undefined_normalised_pauc():
    """At an FMR where no mated comparison is a false non-match the normalised pAUC is undefined: no interval is
    given, although resamples that draw the highest non-mated pair twice set a higher threshold and have one."""
    from fiqa_trt.cli.console import err
    from fiqa_trt.cli.eval import _summary
    from fiqa_trt.evaluation.report import Method, evaluate

    pairs, sim, quality = synthetic_pairs(40, nonmated=1000)
    sim = np.where(pairs.mated, 0.9, sim)
    top = np.argsort(np.where(pairs.mated, -np.inf, sim))[-2:]  # k = 1: the threshold is the 2nd highest
    sim[np.flatnonzero(pairs.mated)[0]] = (sim[top[0]] + sim[top[1]]) / 2  # a match, below the highest
    report = evaluate(pairs, sim, [Method("q", "engine", "", quality)], fmrs=(1e-3,), limits=(0.3,), bootstrap=200)
    row = report["results"][0]
    assert row["fnmr_0"] == 0 and math.isnan(row["pauc30_norm"]) and "pauc30_norm_lo" not in row
    with err.capture() as shown:
        _summary(report)
    text = " ".join(shown.get().split())
    assert "nan [" not in text and "no false non-match" in text


def test_fmrs_a_small_pair_set_cannot_resolve_are_said_to_repeat():
    """With 300 non-mated pairs neither FMR 1e-3 nor 1e-4 allows one false match: both thresholds are the highest
    non-mated similarity and their rows are the same; the report and the eval summary say so."""
    from fiqa_trt.cli.console import err
    from fiqa_trt.cli.eval import _summary
    from fiqa_trt.evaluation.report import Method, evaluate, markdown_table, unresolved_note

    pairs, sim, quality = synthetic_pairs(30, nonmated=300)
    report = evaluate(pairs, sim, [Method("q", "engine", "", quality)], fmrs=(1e-2, 1e-3, 1e-4), limits=(0.3,))
    rows = {r["target_fmr"]: r for r in report["results"]}
    assert rows[1e-3]["threshold"] == rows[1e-4]["threshold"] != rows[1e-2]["threshold"]
    note = unresolved_note(report)
    assert "FMR 1e-03, 1e-04" in note and "the same figures" in note and "at least 10,000 non-mated pairs resolve them" in note
    assert note in markdown_table(report)
    with err.capture() as shown:
        _summary(report)
    text = " ".join(shown.get().split())
    assert "warning: FMR 1e-03, 1e-04" in text and "300 non-mated pairs" in text
    report = evaluate(pairs, sim, [Method("q", "engine", "", quality)], fmrs=(1e-2,), limits=(0.3,))
    assert unresolved_note(report) is None
