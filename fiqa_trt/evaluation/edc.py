"""EDC and pAUC in NumPy: the threshold at a target FMR, and FNMR as the lowest-quality pairs are discarded.

Every pair has a similarity (higher = more alike), a label (mated or not) and a pair quality (higher = better).

- Decision: a pair is a match when its similarity is strictly above the threshold t.
- Threshold for a target FMR over m non-mated similarities: k = floor(target * m) false matches are allowed and t
  is the (k+1)-th highest non-mated similarity. At most k non-mated pairs lie strictly above t (exactly k without
  a tie at t), so the achieved FMR never exceeds the target. When target * m < 1, t is the highest non-mated
  similarity (achieved FMR 0): the pair set is too small to resolve the target; the achieved FMR and the number
  of non-mated pairs are reported with every result so that this shows.
- Pair quality: min (default), max or mean of the two images' qualities (`pair_quality`).
- Discarding (ISO/IEC 29794-1:2024, and the reference code of its editors, github.com/dasec/
  quality-assessment-evaluation): the FNMR EDC is a curve over the MATED comparisons. They are ranked by pair
  quality and discarded from the lowest; the discard fraction is the fraction of mated comparisons discarded
  (`discard="mated"`, the default). `discard="all"` ranks and counts every pair instead, mated and
  non-mated; with a fixed threshold it changes only the x axis. Pairs of equal quality
  are discarded together, so the curve has one step per distinct quality, at the fraction actually discarded.
  FNMR(f) at any fraction f is the value after discarding the largest run of whole tie groups whose fraction does
  not exceed f (a right-continuous step function). With no mated pair left, FNMR is 0.
- Mode "fixed" (the EDC definition of ISO/IEC 29794-1): the threshold is set once, at 0% discard.
  Mode "recomputed" (a compatibility mode, the convention of some published code): the threshold is derived again
  from the non-mated pairs that remain at every step (those whose pair quality is above the last discarded one);
  its FNMR is NaN where no non-mated pair remains.
- pAUC(L) is the area under the step curve FNMR(f) from f = 0 to L. normalised pAUC = pAUC / (FNMR(0) * L): the
  ratio to random discarding, whose expected FNMR stays at FNMR(0). 1.0 = no better than random, lower is better;
  NaN when FNMR(0) = 0.
- Theoretical best (`Curve.best_fnmr`, `Curve.best_pauc`): the curve of a quality that discards the false
  non-matches first. After discarding d comparisons of the discard pool, with E false non-matches and M mated
  comparisons at 0% discard, FNMR = max(E - d, 0) / (M - d): for the mated pool, (FNMR(0) - f) / (1 - f) until
  f = FNMR(0), then 0. (The dasec reference code draws the straight line FNMR(0) - f, a slightly lower bound.)
  Its area is the floor no quality can go below; `best_pauc(L) / (FNMR(0) * L)` is the normalised floor.

Fast paths: `edc()` sorts only the discard pool (27,726 mated pairs of the all-mated protocol, not the 2M
non-mated ones) and finds the threshold with one partition; `weighted_threshold` and `fixed_paucs` do the same on
integer pair weights for many bootstrap resamples at once (`evaluation.bootstrap`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fiqa_trt.errors import FiqaError

PAIR_RULES = ("min", "max", "mean")
MODES = ("fixed", "recomputed")
DISCARD_POOLS = ("mated", "all")


def reject_nan(values: np.ndarray, what: str, names: list[str] | None = None) -> None:
    """Raise FiqaError naming how many `values` are NaN (or infinite) and which (by name or by index)."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=np.float64)))
    if len(bad) == 0:
        return
    shown = [names[i] if names is not None else f"#{i}" for i in bad[:5]]
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    verb = "is" if len(bad) == 1 else "are"
    raise FiqaError(f"{len(bad)} of {len(values)} {what} {verb} NaN or infinite ({', '.join(shown)}{more}): "
                    "every image needs a finite quality; fix or remove them before evaluating")


def pair_quality(qa: np.ndarray, qb: np.ndarray, rule: str = "min") -> np.ndarray:
    """The quality of a pair from its two images' qualities: min, max or mean."""
    if rule not in PAIR_RULES:
        raise FiqaError(f"unknown pair-quality rule '{rule}'; use one of: {', '.join(PAIR_RULES)}")
    qa, qb = np.asarray(qa, np.float64), np.asarray(qb, np.float64)
    if rule == "min":
        return np.minimum(qa, qb)
    if rule == "max":
        return np.maximum(qa, qb)
    return (qa + qb) / 2


def _check_target(target: float) -> None:
    if not 0 < target < 1:
        raise FiqaError(f"target FMR {target:g} must be strictly between 0 and 1 (e.g. 1e-3)")


def threshold_at_fmr(nonmated: np.ndarray, target: float) -> tuple[float, float]:
    """(threshold, achieved FMR) for `target` over the non-mated similarities; see the module's convention."""
    _check_target(target)
    scores = np.asarray(nonmated, np.float64)
    if len(scores) == 0:
        raise FiqaError("no non-mated pairs: a threshold at a target FMR needs impostor pairs")
    k = int(math.floor(target * len(scores) + 1e-9))  # false matches allowed (1e-9: 0.29 * 100 is 28.999...)
    t = float(-np.partition(-scores, k)[k])  # the (k+1)-th highest
    return t, float(np.count_nonzero(scores > t) / len(scores))


@dataclass
class Curve:
    """One EDC: FNMR after discarding `discard[j]` of the pairs, for the steps j (discard[0] = 0)."""

    discard: np.ndarray  # fractions at which the steps begin, increasing from 0
    fnmr: np.ndarray  # FNMR from discard[j] up to discard[j + 1]
    threshold: np.ndarray  # the threshold used at each step (constant in fixed mode)
    target_fmr: float
    achieved_fmr: float  # at 0% discard
    mode: str  # "fixed" or "recomputed"
    n_mated: int
    n_nonmated: int
    complete: float  # the curve is known up to this discard fraction (1.0 unless limited by max_discard)
    discard_over: str = "mated"  # "mated": fractions of the mated comparisons; "all": of all pairs
    n_errors: int = 0  # false non-matches at 0% discard (fixed threshold)

    @property
    def pool(self) -> int:
        """How many comparisons the discard fraction counts: the mated ones, or all pairs."""
        return self.n_mated if self.discard_over == "mated" else self.n_mated + self.n_nonmated

    @property
    def fnmr0(self) -> float:
        return float(self.fnmr[0])

    def at(self, fraction: float | np.ndarray) -> float | np.ndarray:
        """FNMR at discard fraction(s) `fraction` (the step function; NaN beyond the computed range)."""
        f = np.asarray(fraction, np.float64)
        j = np.searchsorted(self.discard, f, side="right") - 1
        out = np.where(f <= self.complete, self.fnmr[np.clip(j, 0, len(self.fnmr) - 1)], np.nan)
        return float(out) if out.ndim == 0 else out

    def pauc(self, limit: float) -> float:
        """Area under FNMR(f) for f in [0, limit]."""
        if not 0 < limit <= 1:
            raise FiqaError(f"pAUC limit {limit:g} must be in (0, 1]")
        if limit > self.complete + 1e-12:
            raise ValueError(f"the curve was computed up to {self.complete:g} discard, not {limit:g}")
        ends = np.append(self.discard[1:], max(1.0, limit))
        widths = np.clip(np.minimum(ends, limit) - self.discard, 0.0, None)
        return float(np.sum(np.where(widths > 0, self.fnmr * widths, 0.0)))

    def normalised_pauc(self, limit: float) -> float:
        """pAUC / (FNMR(0) * limit): 1.0 = no better than random discarding; NaN when FNMR(0) is 0."""
        base = self.fnmr0 * limit
        return self.pauc(limit) / base if base > 0 else float("nan")

    def best_fnmr(self, fraction: float | np.ndarray) -> float | np.ndarray:
        """The theoretical-best FNMR at discard fraction(s) `fraction` (see the module docstring)."""
        f = np.asarray(fraction, np.float64)
        d = np.floor(f * self.pool + 1e-9)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(d < self.n_errors, (self.n_errors - d) / (self.n_mated - d), 0.0)
        return float(out) if out.ndim == 0 else out

    def best_pauc(self, limit: float) -> float:
        """Area under the theoretical-best curve from 0 to `limit`."""
        if not 0 < limit <= 1:
            raise FiqaError(f"pAUC limit {limit:g} must be in (0, 1]")
        return best_pauc(self.n_errors, self.n_mated, self.pool, limit)


def best_pauc(errors: int, n_mated: int, pool: int, limit: float) -> float:
    """Area from 0 to `limit` under the theoretical-best step curve: after d of `pool` comparisons discarded,
    FNMR = max(errors - d, 0) / (n_mated - d)."""
    d = np.arange(int(errors), dtype=np.float64)
    widths = np.clip(np.minimum((d + 1) / pool, limit) - d / pool, 0.0, None)
    return float(np.sum((errors - d) / (n_mated - d) * widths))


def _checked(similarity, mated, quality, names):
    sim = np.asarray(similarity, np.float64)
    lab = np.asarray(mated, bool)
    q = np.asarray(quality, np.float64)
    if not (len(sim) == len(lab) == len(q)):
        raise ValueError(f"similarity, mated and quality differ in length ({len(sim)}, {len(lab)}, {len(q)})")
    reject_nan(q, "pair qualities", names)
    reject_nan(sim, "similarities", names)
    n_mated = int(lab.sum())
    if n_mated == 0 or n_mated == len(sim):
        raise FiqaError(f"an EDC needs both mated and non-mated pairs; got {n_mated} mated of {len(sim)}")
    return sim, lab, q, n_mated


def group_ends(sorted_values: np.ndarray) -> np.ndarray:
    """Discarded counts at each step of an EDC over values sorted ascending: 0, then the end of every tie group."""
    v = np.asarray(sorted_values)
    return np.concatenate([[0], np.flatnonzero(np.append(v[1:] != v[:-1], True)) + 1]) if len(v) else np.zeros(1, int)


def edc(similarity: np.ndarray, mated: np.ndarray, quality: np.ndarray, target_fmr: float, mode: str = "fixed",
        names: list[str] | None = None, max_discard: float = 1.0, discard: str = "mated") -> Curve:
    """The error-versus-discard curve of pair qualities `quality` (see the module docstring for the convention).

    `discard` is the pool the discard fraction counts: "mated" (ISO/IEC 29794-1) or "all" pairs. `names` (one per
    pair) only serve the message when a quality is NaN. `max_discard` limits how far the recomputed mode is
    evaluated (its cost grows with every step); the fixed mode is always complete.
    """
    if mode not in MODES:
        raise FiqaError(f"unknown EDC mode '{mode}'; use one of: {', '.join(MODES)}")
    if discard not in DISCARD_POOLS:
        raise FiqaError(f"unknown discard pool '{discard}'; use one of: {', '.join(DISCARD_POOLS)}")
    _check_target(target_fmr)
    sim, lab, q, n_mated = _checked(similarity, mated, quality, names)
    n = len(sim)
    t0, fmr0 = threshold_at_fmr(sim[~lab], target_fmr)
    pool = np.flatnonzero(lab) if discard == "mated" else np.arange(n)
    order = pool[np.argsort(q[pool], kind="stable")]
    qs, ls, ss = q[order], lab[order], sim[order]
    counts = group_ends(qs)
    mated_left = n_mated - np.concatenate([[0], np.cumsum(ls)])[counts]
    n_errors = int(np.count_nonzero(sim[lab] <= t0))
    common = dict(target_fmr=target_fmr, achieved_fmr=fmr0, n_mated=n_mated, n_nonmated=n - n_mated,
                  discard_over=discard, n_errors=n_errors)

    if mode == "fixed":
        errors = ls & (ss <= t0)
        errors_left = n_errors - np.concatenate([[0], np.cumsum(errors)])[counts]
        fnmr = np.divide(errors_left, mated_left, out=np.zeros(len(counts)), where=mated_left > 0)
        return Curve(counts / len(order), fnmr, np.full(len(counts), t0), mode=mode, complete=1.0, **common)

    steps = int(np.searchsorted(counts / len(order), max_discard, side="right"))  # steps with fraction <= max
    steps = min(len(counts), steps + 1)  # and the next one, which closes the last step
    fnmr, thresholds = np.empty(steps), np.empty(steps)
    genuine_sorted = ss[ls]  # mated similarities in discard order
    mated_done = np.concatenate([[0], np.cumsum(ls)])[counts]
    nonmated_q = q[~lab]
    by_quality = np.argsort(nonmated_q, kind="stable")
    nonmated_sorted_q, nonmated_sorted_s = nonmated_q[by_quality], sim[~lab][by_quality]
    for j in range(steps):
        genuine = genuine_sorted[mated_done[j]:]
        if discard == "all":
            rest = slice(counts[j], n)
            impostors = ss[rest][~ls[rest]]
        else:  # the non-mated pairs whose quality is above the last discarded mated group's
            cut = -np.inf if counts[j] == 0 else qs[counts[j] - 1]
            impostors = nonmated_sorted_s[np.searchsorted(nonmated_sorted_q, cut, side="right"):]
        if len(genuine) == 0:
            fnmr[j], thresholds[j] = 0.0, np.nan
            continue
        if len(impostors) == 0:
            fnmr[j], thresholds[j] = np.nan, np.nan
            continue
        thresholds[j] = threshold_at_fmr(impostors, target_fmr)[0]
        fnmr[j] = np.count_nonzero(genuine <= thresholds[j]) / len(genuine)
    fractions = counts[:steps] / len(order)
    complete = 1.0 if steps == len(counts) else float(fractions[-1])
    return Curve(fractions, fnmr, thresholds, mode=mode, complete=complete, **common)


def weighted_threshold(nonmated_desc: np.ndarray, weights: np.ndarray, target: float,
                       cumulative: bool = False) -> float:
    """`threshold_at_fmr` of a multiset: `nonmated_desc` (similarities sorted descending), each counted
    `weights[i]` times (integers, e.g. bootstrap counts; `cumulative`: `weights` is already their cumulative sum).
    The (k+1)-th highest with k = floor(target * total)."""
    cum = weights if cumulative else np.cumsum(weights)
    k = math.floor(target * float(cum[-1]) + 1e-9)
    return float(nonmated_desc[int(np.searchsorted(cum, k, side="right"))])


def fixed_paucs(errors_sorted: np.ndarray, weights_sorted: np.ndarray, counts: np.ndarray, limit: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """(pAUC(limit), FNMR(0)) of fixed-threshold EDCs over the mated pool, one per row of weights.

    `errors_sorted` (R, M) or (M,) bool: false non-matches of the mated comparisons in ascending pair-quality
    order; `weights_sorted` (R, M): how often each comparison counts in each row (bootstrap resamples); `counts`:
    `group_ends` of the sorted qualities (ties are discarded together). Discard fractions are weighted counts.
    """
    w = np.atleast_2d(np.asarray(weights_sorted, np.float64))
    e = np.broadcast_to(np.asarray(errors_sorted, bool), w.shape)
    zero = np.zeros((len(w), 1))
    cum_w = np.concatenate([zero, np.cumsum(w, axis=1)], axis=1)[:, counts]
    cum_e = np.concatenate([zero, np.cumsum(w * e, axis=1)], axis=1)[:, counts]
    total_w, total_e = cum_w[:, -1:], cum_e[:, -1:]
    left = total_w - cum_w
    fnmr = np.divide(total_e - cum_e, left, out=np.zeros_like(left), where=left > 0)
    x = cum_w / np.where(total_w > 0, total_w, 1.0)
    ends = np.concatenate([x[:, 1:], np.ones((len(w), 1))], axis=1)
    widths = np.clip(np.minimum(ends, limit) - x, 0.0, None)
    return np.sum(fnmr * widths, axis=1), fnmr[:, 0]


def mated_npauc(pair_quality: np.ndarray, errors: np.ndarray, limit: float) -> float:
    """Normalised pAUC up to `limit` of the fixed-threshold EDC over mated comparisons whose false non-matches at 0%
    discard are known (`errors`, one per comparison): `fixed_paucs` with every weight 1, what `edc(...)
    .normalised_pauc(limit)` gives without setting the threshold again (a weight search evaluates it many times).
    NaN when there is no false non-match."""
    q = np.asarray(pair_quality, np.float64)
    order = np.argsort(q, kind="stable")
    pauc, fnmr0 = fixed_paucs(np.asarray(errors, bool)[order], np.ones((1, len(q))), group_ends(q[order]), limit)
    return float(pauc[0] / (fnmr0[0] * limit)) if fnmr0[0] > 0 else float("nan")


def best_accuracy(similarity: np.ndarray, mated: np.ndarray) -> tuple[float, float]:
    """(accuracy, threshold) of the single best threshold (match when similarity > threshold) over these pairs."""
    sim = np.asarray(similarity, np.float64)
    lab = np.asarray(mated, bool)
    reject_nan(sim, "similarities")
    order = np.argsort(sim, kind="stable")
    s, m = sim[order], lab[order]
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))  # last index of every tie group
    rejected_mated = np.cumsum(m)[ends]
    rejected_nonmated = np.cumsum(~m)[ends]
    correct = rejected_nonmated + (int(m.sum()) - rejected_mated)
    best = int(np.argmax(correct))
    if correct[best] <= m.sum():  # accepting everything is at least as good
        return float(m.sum() / len(s)), float("-inf")
    return float(correct[best] / len(s)), float(s[ends[best]])
