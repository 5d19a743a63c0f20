"""Bootstrap intervals over identities for EDC pAUCs, and for the difference between two methods.

One resample draws the pair set's identities with replacement (as many as there are); an identity drawn c times
counts c times: each of its mated comparisons gets weight c, a non-mated comparison of identities i and j gets
c_i * c_j (the comparisons a resampled population would hold). In every resample the fixed threshold is set
again at 0% discard (at the target FMR of the weighted non-mated similarities), and the EDC runs over the
weighted mated comparisons, discard fractions counted in weights (`edc.fixed_paucs`). The interval is the
percentile interval of the resampled values (90% by default: the 5th and 95th percentiles); resamples without a
value (no non-mated pair, or no false non-match at 0% discard, in a resample of very few identities) are left
out. Two methods are
compared on the SAME resamples, so the interval of their difference accounts for their correlation; a
difference interval that excludes 0 is a difference beyond the identity sampling noise.

Cost: the non-mated similarities are sorted once; per resample one weighted cumulative sum over them (2M
pairs: tens of ms) gives the threshold of every target FMR; the mated side (27,726 pairs) is done for all
resamples at once per method, in blocks. The default of 200 resamples keeps a whole-LFW run in seconds.

API (what a recipe fitter or a report calls):

    from fiqa_trt.evaluation import bootstrap
    res = bootstrap.identity_resamples(pairs, count=200, seed=0)                       # -> Resamples
    values = bootstrap.resampled_paucs(res, pairs, similarity, {"name": image_q, ...},
                                       fmrs=(1e-3, 1e-4), limits=(0.3,), rule="min")
    # values[(name, fmr, limit)] -> (count,) normalised pAUCs (NaN where FNMR(0) is 0)
    lo, hi = bootstrap.interval(values[("a", 1e-3, 0.3)], level=0.9)
    lo, hi = bootstrap.interval(values[("a", 1e-3, 0.3)] - values[("b", 1e-3, 0.3)])   # the difference
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fiqa_trt.errors import FiqaError
from fiqa_trt.evaluation import edc
from fiqa_trt.evaluation.protocols import Pairs

DEFAULT_COUNT = 200
DEFAULT_LEVEL = 0.9
BLOCK = 50  # resamples per block on the mated side (block x mated pairs float64 arrays)


@dataclass
class Resamples:
    """`counts[r, i]`: how often identity `names[i]` is drawn in resample r."""

    names: list[str]
    counts: np.ndarray  # (count, identities) int32
    seed: int

    def __len__(self) -> int:
        return len(self.counts)


def identity_resamples(pairs: Pairs, count: int = DEFAULT_COUNT, seed: int = 0) -> Resamples:
    """`count` resamples of the identities of `pairs`, reproducible from `seed`."""
    if count < 2:
        raise FiqaError("--bootstrap needs at least 2 resamples (0 turns it off)")
    names = sorted(set(pairs.identities()))
    rng = np.random.default_rng([seed, 0xB0075])
    draws = rng.integers(0, len(names), size=(count, len(names)))
    counts = np.stack([np.bincount(d, minlength=len(names)) for d in draws]).astype(np.int32)
    return Resamples(names, counts, seed)


def _pair_identities(pairs: Pairs, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    index = {n: i for i, n in enumerate(names)}
    per_key = np.array([index[n] for n in pairs.identities()], dtype=np.int64)
    return per_key[pairs.a], per_key[pairs.b]


def resampled_thresholds(res: Resamples, pairs: Pairs, similarity: np.ndarray, fmrs) -> np.ndarray:
    """(len(fmrs), count) fixed thresholds at 0% discard, one per target FMR and resample."""
    ida, idb = _pair_identities(pairs, res.names)
    non = ~pairs.mated
    order = np.argsort(-similarity[non], kind="stable")
    desc = similarity[non][order]
    na, nb = ida[non][order], idb[non][order]
    out = np.empty((len(fmrs), len(res)))
    for r, c in enumerate(res.counts):
        cum = np.cumsum(c[na] * c[nb], dtype=np.int64)  # int32 counts: products stay small
        if cum[-1] == 0:  # a resample of very few identities may hold no non-mated pair: no value
            out[:, r] = np.nan
            continue
        for f, fmr in enumerate(fmrs):
            out[f, r] = edc.weighted_threshold(desc, cum, fmr, cumulative=True)
    return out


def resampled_paucs(res: Resamples, pairs: Pairs, similarity: np.ndarray, qualities: dict[str, np.ndarray],
                    fmrs=(1e-3,), limits=(0.3,), rule: str = "min", thresholds: np.ndarray | None = None
                    ) -> dict[tuple[str, float, float], np.ndarray]:
    """Normalised pAUC of every method (image qualities in the order of `pairs.keys`) in every resample:
    {(method, fmr, limit): (count,) array}. `thresholds` from `resampled_thresholds` may be passed to share them."""
    similarity = np.asarray(similarity, np.float64)
    if thresholds is None:
        thresholds = resampled_thresholds(res, pairs, similarity, fmrs)
    ida, _ = _pair_identities(pairs, res.names)
    mated = np.flatnonzero(pairs.mated)
    out: dict[tuple[str, float, float], np.ndarray] = {}
    for name, q in qualities.items():
        pq = edc.pair_quality(q[pairs.a[mated]], q[pairs.b[mated]], rule)
        order = np.argsort(pq, kind="stable")
        counts = edc.group_ends(pq[order])
        sim_sorted = similarity[mated][order]
        ident_sorted = ida[mated][order]
        for f, fmr in enumerate(fmrs):
            values = {lim: np.empty(len(res)) for lim in limits}
            for start in range(0, len(res), BLOCK):
                block = slice(start, start + BLOCK)
                weights = res.counts[block][:, ident_sorted]
                errors = sim_sorted[None, :] <= thresholds[f, block][:, None]
                for lim in limits:
                    pauc, fnmr0 = edc.fixed_paucs(errors, weights, counts, lim)
                    with np.errstate(invalid="ignore", divide="ignore"):
                        values[lim][block] = np.where(fnmr0 > 0, pauc / (fnmr0 * lim), np.nan)
            for lim in limits:
                out[(name, fmr, lim)] = values[lim]
    return out


def interval(values: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The percentile interval of resampled values at `level` (NaN resamples left out)."""
    if not 0 < level < 1:
        raise FiqaError(f"the interval level {level:g} must be strictly between 0 and 1")
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
