"""Fitting a quality recipe's weights on a development split of identities, and the held-out report.

Protocol (the all-mated protocol of issue 15): identities are split in two halves by a seeded permutation (`split`);
in each half, every identity keeps at most `cap` images (a seeded sample) and every pair of them is a mated
comparison; `nonmated` non-mated comparisons are drawn at random (seeded) over the same images. Pair quality is
the min of the two images' qualities. The decision threshold is fixed at 0% discard for each target FMR; the EDC
discards the lowest-quality mated comparisons (the discard fraction counted over mated comparisons, as ISO/IEC
29794-1:2024) and its normalised pAUC up to `limit` is the area divided by FNMR(0) * limit (1.0 = no better than
random discarding, lower is better).

`fit` searches the weights on the dev half only (coordinate descent over a grid of weights, the first signal's weight
fixed at 1 so that the scale is fixed; objective: the mean normalised pAUC over the target FMRs) and then reports
the test half, with a bootstrap over test identities of the difference to reference qualities. Nothing of the test
half enters the search (tests/test_recipes.py checks that the fitted weights do not move when the test half's
signals are replaced).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from fiqa_trt.errors import FiqaError

FMRS = (1e-3, 1e-4)
LIMIT = 0.3
GRID = (0.0, 0.0625, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0, 16.0)  # relative, on standardised signals


def split(identities: np.ndarray, seed: int = 0) -> np.ndarray:
    """A seeded half split of the distinct identities: True for the images whose identity is in the dev half."""
    names = np.unique(identities)
    rng = np.random.default_rng([seed, 0x5EED])
    dev_names = names[rng.permutation(len(names))[: len(names) // 2]]
    return np.isin(identities, dev_names)


@dataclass
class Protocol:
    """The comparisons of one half: mated pairs (ma, mb), their identities, and per target FMR which mated
    comparison is a false non-match at the threshold fixed at 0% discard."""

    ma: np.ndarray
    mb: np.ndarray
    identity: np.ndarray  # (n_mated,) identity index of each mated pair
    errors: dict[float, np.ndarray]
    thresholds: dict[float, float]
    n_nonmated: int

    def pair_quality(self, quality: np.ndarray) -> np.ndarray:
        return np.minimum(quality[self.ma], quality[self.mb])

    def npauc(self, quality: np.ndarray, fmr: float, limit: float = LIMIT,
              pick: np.ndarray | None = None) -> float:
        pq = self.pair_quality(quality)
        err = self.errors[fmr]
        if pick is not None:
            pq, err = pq[pick], err[pick]
        return mated_npauc(pq, err, limit)

    def report(self, quality: np.ndarray, limit: float = LIMIT) -> dict[str, float]:
        return {f"{fmr:.0e}": self.npauc(quality, fmr, limit) for fmr in self.errors}


def mated_npauc(pair_quality: np.ndarray, errors: np.ndarray, limit: float = LIMIT) -> float:
    """Normalised pAUC of the EDC over mated comparisons: discard the lowest pair qualities first (ties discarded
    together), FNMR of the rest against the fixed threshold; area up to `limit` / (FNMR(0) * limit)."""
    n = len(errors)
    if n == 0 or not errors.any():
        return float("nan")
    order = np.argsort(pair_quality, kind="stable")
    q, e = np.asarray(pair_quality, np.float64)[order], errors[order].astype(np.float64)
    ends = np.flatnonzero(np.append(q[1:] != q[:-1], True)) + 1  # discarded counts after each tie group
    counts = np.concatenate([[0], ends])
    left = n - counts
    err_left = e.sum() - np.concatenate([[0], np.cumsum(e)])[counts]
    fnmr = np.divide(err_left, left, out=np.zeros(len(counts)), where=left > 0)
    starts = counts / n
    stops = np.append(starts[1:], 1.0)
    width = np.clip(np.minimum(stops, limit) - starts, 0.0, None)
    return float(np.sum(fnmr * width) / (fnmr[0] * limit))


def protocol(embeddings: np.ndarray, identities: np.ndarray, mask: np.ndarray, seed: int = 0, cap: int = 20,
             nonmated: int = 1_000_000, fmrs=FMRS) -> Protocol:
    """The all-mated protocol over the images in `mask` (see the module docstring); `embeddings` give the
    verification similarities (cosine)."""
    names, inverse = np.unique(identities, return_inverse=True)
    rng = np.random.default_rng([seed, 0xA11])
    ma, mb, used = [], [], []
    for ident in np.unique(inverse[mask]):
        idx = np.flatnonzero((inverse == ident) & mask)
        if len(idx) < 2:
            continue
        if len(idx) > cap:
            idx = np.sort(rng.choice(idx, cap, replace=False))
        used.append(idx)
        pairs = np.array(list(itertools.combinations(idx, 2)))
        ma.append(pairs[:, 0])
        mb.append(pairs[:, 1])
    if not ma:
        raise FiqaError("no identity with two images in this split: no mated comparison")
    ma, mb, used = np.concatenate(ma), np.concatenate(mb), np.concatenate(used)
    na, nb = rng.choice(used, 2 * nonmated + 64), rng.choice(used, 2 * nonmated + 64)
    keep = inverse[na] != inverse[nb]
    na, nb = na[keep][:nonmated], nb[keep][:nonmated]
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    mated_sim = np.einsum("ij,ij->i", unit[ma], unit[mb])
    non_sim = np.einsum("ij,ij->i", unit[na], unit[nb])
    errors, thresholds = {}, {}
    for fmr in fmrs:
        k = int(np.floor(fmr * len(non_sim) + 1e-9))
        t = float(-np.partition(-non_sim, k)[k])
        thresholds[fmr], errors[fmr] = t, mated_sim <= t
    return Protocol(ma, mb, inverse[ma], errors, thresholds, len(non_sim))


def fuse(signals: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """sum_i w_i * s_i over per-image signal values (already logs: log-norm, log-cosine)."""
    return sum(w * signals[name] for name, w in weights.items())


@dataclass
class Fit:
    weights: dict[str, float]
    dev: dict[str, float]
    test: dict[str, float]
    references: dict[str, dict] = field(default_factory=dict)  # name -> test figures and bootstrap of the difference

    def figures(self) -> dict:
        return {"dev": self.dev, "test": self.test, "references": self.references}


def objective(proto: Protocol, quality: np.ndarray) -> float:
    return float(np.mean([proto.npauc(quality, fmr) for fmr in proto.errors]))


def search(signals: dict[str, np.ndarray], proto: Protocol, grid=GRID, rounds: int = 3) -> dict[str, float]:
    """Coordinate descent over `grid` for every weight but the first (fixed at 1), on one protocol. The grid applies
    to the signals divided by their standard deviation over the protocol's images (so that a log-cosine, whose
    spread is a few hundredths, and a log-norm weigh alike); the weights returned apply to the raw signals."""
    names = list(signals)
    used = np.unique(np.concatenate([proto.ma, proto.mb]))  # the protocol's own images only
    spread = {n: float(np.std(signals[n][used])) or 1.0 for n in names}
    z = {n: signals[n] / spread[n] for n in names}
    weights = {n: 1.0 for n in names}
    best = objective(proto, fuse(z, weights))
    for _ in range(rounds):
        moved = False
        for name in names[1:]:
            for value in grid:
                trial = {**weights, name: value}
                score = objective(proto, fuse(z, trial))
                if score < best - 1e-12:
                    best, weights, moved = score, trial, True
        if not moved:
            break
    first = spread[names[0]]  # scale so that the first signal keeps weight 1 on the raw scale
    return {n: float(np.float32(weights[n] * first / spread[n])) for n in names}


def bootstrap_difference(proto: Protocol, qa: np.ndarray, qb: np.ndarray, n: int = 1000, seed: int = 0,
                         level: float = 0.90) -> dict[str, list[float]]:
    """Per target FMR: the `level` bootstrap interval (resampling identities) of npAUC(qa) - npAUC(qb)."""
    groups = [np.flatnonzero(proto.identity == i) for i in np.unique(proto.identity)]
    rng = np.random.default_rng([seed, 0xB007])
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {}
    pa, pb = proto.pair_quality(qa), proto.pair_quality(qb)
    draws = [np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))]) for _ in range(n)]
    for fmr, err in proto.errors.items():
        diffs = [mated_npauc(pa[d], err[d]) - mated_npauc(pb[d], err[d]) for d in draws if err[d].any()]
        out[f"{fmr:.0e}"] = [round(float(np.percentile(diffs, lo)), 4), round(float(np.percentile(diffs, hi)), 4)]
    return out


def fit(signals: dict[str, np.ndarray], embeddings: np.ndarray, identities: np.ndarray, seed: int = 0,
        references: dict[str, np.ndarray] | None = None, bootstrap: int = 1000, cap: int = 20,
        nonmated: int = 1_000_000) -> Fit:
    """Fit the weights of `signals` (name -> per-image values) on the dev half of a seeded identity split and
    report both halves; `references` (name -> per-image qualities) are reported on the test half with the
    bootstrap interval of the fitted quality's npAUC minus theirs (negative: the fit is better)."""
    dev_mask = split(identities, seed)
    dev = protocol(embeddings, identities, dev_mask, seed, cap, nonmated)
    weights = search({k: v for k, v in signals.items()}, dev)
    test = protocol(embeddings, identities, ~dev_mask, seed, cap, nonmated)
    fused = fuse(signals, weights)
    result = Fit(weights, dev.report(fused), test.report(fused))
    for name, q in (references or {}).items():
        result.references[name] = {"test": test.report(q),
                                   "difference_90": bootstrap_difference(test, fused, q, n=bootstrap, seed=seed)}
    return result


def protocol_from_pairs(embeddings: np.ndarray, identities: np.ndarray, mask: np.ndarray, a: np.ndarray,
                        b: np.ndarray, mated: np.ndarray, fmrs=FMRS) -> Protocol:
    """A Protocol from a given pair list, keeping the pairs whose two images are both in `mask`."""
    keep = mask[a] & mask[b]
    a, b, mated = a[keep], b[keep], mated[keep]
    if not mated.any() or mated.all():
        raise FiqaError("this split of the pair list holds no mated or no non-mated pair")
    _, inverse = np.unique(identities, return_inverse=True)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sim = np.einsum("ij,ij->i", unit[a], unit[b])
    errors, thresholds = {}, {}
    for fmr in fmrs:
        non = sim[~mated]
        k = int(np.floor(fmr * len(non) + 1e-9))
        thresholds[fmr] = float(-np.partition(-non, k)[k])
        errors[fmr] = sim[mated] <= thresholds[fmr]
    return Protocol(a[mated], b[mated], inverse[a[mated]], errors, thresholds, int((~mated).sum()))


def signals_of(recipe, norms: np.ndarray, cosines: np.ndarray, view_specs: list[int]) -> dict[str, np.ndarray]:
    """The per-image values of a recipe's signals (log-norm, log-cosine), as its weighted_log fusion reads them."""
    from dataclasses import replace

    return {name: replace(recipe, signals=((name, 1.0),)).fuse(norms, cosines, view_specs)
            for name, _ in recipe.signals}


def calibrate_model(runner, root, recipe, aligner=None, seed: int = 0, batch_size: int = 32,
                    threads: int | None = None, pair_file: str | None = None, progress=None, bootstrap: int = 1000,
                    cap: int = 20, nonmated: int = 1_000_000):
    """One embedding pass over the identity folders under `root` with `recipe`'s views (realigned by `aligner`),
    the recipe's weights fitted on the dev half of a seeded identity split and reported on the test half, and its
    0-100 calibration (p1, p99 of the fitted quality over every image). Returns (fitted recipe, report)."""
    from dataclasses import replace
    from pathlib import Path

    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.engine.recipes import forward_norms
    from fiqa_trt.engine.scorer import Scorer
    from fiqa_trt.evaluation.protocols import identities as identity_folders, read_pairs

    if recipe.fusion != "weighted_log":
        raise FiqaError(f"recipe '{recipe.name}' has no weights to fit (fusion {recipe.fusion}); calibrate a "
                        "weighted_log recipe, e.g. --recipe norm-flip")
    root = Path(root)
    keys = [k for ks in identity_folders(root).values() for k in ks]
    ident = np.array([k.split("/")[0] for k in keys])
    scorer = Scorer(runner, recipe=recipe, seed=seed, batch_size=batch_size, threads=threads, aligner=aligner)
    originals, norms, cosines, ok = [], [], [], np.zeros(len(keys), bool)
    row = 0
    for batch in scorer.embed([Item(str(root / k), k) for k in keys], progress):
        good = [row + i for i, it in enumerate(batch.items) if it.error is None]
        if batch.embeddings is not None:
            originals.append(batch.embeddings[:, 0].astype(np.float64))
            norms.append(forward_norms(batch.embeddings))
            cosines.append(scorer._quality(batch.embeddings)[0])
            ok[good] = True
        row += len(batch.items)
    if not ok.any():
        raise FiqaError(f"none of the {len(keys)} images under {root} could be embedded")
    keys, ident = [k for k, g in zip(keys, ok) if g], ident[ok]
    emb, cos = np.concatenate(originals), np.concatenate(cosines)
    sig = signals_of(recipe, np.concatenate(norms), cos, scorer.view_specs)
    finite = np.all([np.isfinite(v) for v in sig.values()], axis=0)
    if not finite.all():
        raise FiqaError(f"{int((~finite).sum())} images gave a non-finite signal (zero embedding?); remove them")
    dev_mask = split(ident, seed)
    if pair_file:
        pairs = read_pairs(pair_file, root)
        index = {k: i for i, k in enumerate(keys)}
        usable = [(index[pairs.keys[x]], index[pairs.keys[y]], m) for x, y, m in zip(pairs.a, pairs.b, pairs.mated)
                  if pairs.keys[x] in index and pairs.keys[y] in index]
        a, b, m = (np.array(v) for v in zip(*usable))
        dev = protocol_from_pairs(emb, ident, dev_mask, a, b, m.astype(bool))
        test = protocol_from_pairs(emb, ident, ~dev_mask, a, b, m.astype(bool))
        source = f"pair file {Path(pair_file).name}"
    else:
        dev = protocol(emb, ident, dev_mask, seed, cap, nonmated)
        test = protocol(emb, ident, ~dev_mask, seed, cap, nonmated)
        source = f"generated all-mated protocol (at most {cap} images per identity, {nonmated} non-mated)"
    weights = search(sig, dev)
    fused = fuse(sig, weights)
    report = {"images": len(keys), "protocol": source, "split_seed": seed,
              "dev": {"identities": int(len(np.unique(ident[dev_mask]))), "mated": int(len(dev.ma)),
                      "npauc30": dev.report(fused)},
              "test": {"identities": int(len(np.unique(ident[~dev_mask]))), "mated": int(len(test.ma)),
                       "npauc30": test.report(fused)},
              "weights": weights, "references": {}}
    for name, values in sig.items():
        report["references"][name] = {"test_npauc30": test.report(values), "difference_90":
                                      bootstrap_difference(test, fused, values, n=bootstrap, seed=seed)}
    p1, p99 = (float(v) for v in np.percentile(fused, [1, 99]))
    fitted = replace(recipe.with_weights(weights), name=f"{recipe.name}-calibrated",
                     calibration=(round(p1, 6), round(p99, 6)),
                     figures={k: report[k] for k in ("protocol", "split_seed", "dev", "test", "references")})
    return fitted, report
