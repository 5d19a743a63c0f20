"""Fitting a quality recipe for one model: its unrecognisable-identity centre and its weights on a development
split of identities, and the held-out report.

Protocol (the all-mated protocol of issue 15, `evaluation.protocols.all_mated_pairs`, or a pair file): identities are
split in two halves by `evaluation.split.identity_split` (the split `fiqa-trt eval --half` uses, so a recipe
calibrated with seed S is reported on exactly the identities `eval --half test --split-seed S` evaluates); a pair
belongs to a half when both its images do. Pair quality is the min of the two images' qualities. The decision
threshold is fixed at 0% discard for each target FMR; the EDC discards the lowest-quality mated comparisons (the
discard fraction counted over mated comparisons, as ISO/IEC 29794-1:2024) and its normalised pAUC up to `limit` is
the area divided by FNMR(0) * limit (1.0 = no better than random discarding, lower is better).

`fit` searches the weights on the dev half only (coordinate descent over a grid of weights, the first signal's weight
fixed at 1 so that the scale is fixed; objective: the mean normalised pAUC over the target FMRs) and then reports
the test half, with a bootstrap over test identities of the difference to reference qualities. `ui_centre` computes
the centre of the ui signals from dev-half images only. Nothing of the test half enters either (tests/test_recipes.py
checks that the fitted weights and the centre do not move when the test half's images or signals are replaced).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fiqa_trt.errors import FiqaError
from fiqa_trt.evaluation import degradations

FMRS = (1e-3, 1e-4)
LIMIT = 0.3
GRID = (0.0, 0.0625, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0, 16.0)  # relative, on standardised signals
CENTRE_SAMPLE = 2000  # dev images whose low-resolution views give the centre (its direction is stable from ~300)


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
    """The mean normalised pAUC over the target FMRs that have a false non-match to discard (an FMR without any has
    no pAUC to lower); NaN when none has."""
    values = [proto.npauc(quality, fmr) for fmr, errors in proto.errors.items() if errors.any()]
    return float(np.mean(values)) if values else float("nan")


def soft_agreement(clean: np.ndarray, degraded: np.ndarray) -> float:
    """A smooth stand-in for `degradations.agreement` (the share of faces whose quality drops), for the search:
    a logistic of the drop over a 20th of the clean qualities' spread, so that a step too small to move one face
    across still moves the penalty."""
    scale = 0.05 * (float(np.std(clean)) or 1.0)
    return float(np.mean(1.0 / (1.0 + np.exp(-np.clip((clean - degraded) / scale, -50, 50)))))


def search(signals: dict[str, np.ndarray], proto: Protocol, grid=GRID, rounds: int = 3,
           degraded: dict[str, dict[str, np.ndarray]] | None = None, floor: float | None = None) -> dict[str, float]:
    """Coordinate descent over `grid` for every weight but the first (fixed at 1), on one protocol. The grid applies
    to the signals divided by their standard deviation over the protocol's images (so that a log-cosine, whose
    spread is a few hundredths, and a log-norm weigh alike); the weights returned apply to the raw signals.

    `degraded` (`"clean"` and each degradation kind -> signal -> values over the same faces, e.g. dev faces and their
    `evaluation.degradations` copies) with `floor`: the fused quality must drop for at least `floor` of the faces
    under every kind. A fit below it pays 10 x its shortfall, plus 10 x the shortfall of a smooth share
    (`soft_agreement`, which still moves where a grid step moves no face across), on top of its mean normalised
    pAUC, and the descent goes on for up to 10 rounds while it is below; a fit at or above the floor is judged by its
    pAUC alone. The floor may still be out of reach of the signals (then the result misses it: callers check with
    `degradations.agreement`). Raises FiqaError when no target FMR has a false non-match to discard."""
    names = list(signals)
    if not any(errors.any() for errors in proto.errors.values()):
        raise FiqaError("the dev half has no false non-match at any target FMR: there is nothing for a quality to "
                        "discard, so no weight can be fitted (more identities, or harder images)")
    if (degraded is None) != (floor is None):
        raise ValueError("give both degraded and floor, or neither")
    if degraded is not None and ("clean" not in degraded or len(degraded) < 2):
        raise ValueError("degraded needs 'clean' and at least one degradation kind")
    signals = {n: np.asarray(v, np.float64) for n, v in signals.items()}  # (float32 sums move with alignment)
    used = np.unique(np.concatenate([proto.ma, proto.mb]))  # the protocol's own images only
    spread = {n: float(np.std(signals[n][used])) or 1.0 for n in names}
    z = {n: signals[n] / spread[n] for n in names}
    checked = degraded is not None
    zd = {kind: {n: np.asarray(v[n], np.float64) / spread[n] for n in names} for kind, v in degraded.items()} \
        if checked else {}

    def shortfall(weights: dict[str, float], soft: bool) -> float:
        clean = fuse(zd["clean"], weights)
        drops = [soft_agreement(clean, fuse(v, weights)) if soft else
                 degradations.agreement(clean, {k: fuse(v, weights)})[k] for k, v in zd.items() if k != "clean"]
        return max(0.0, floor - min(drops))

    def cost(weights: dict[str, float]) -> float:
        value = objective(proto, fuse(z, weights))
        if checked:  # the count decides feasibility; below the floor the soft share steers where the count is flat
            missing = shortfall(weights, False)
            if missing > 0:
                value += 10.0 * missing + 10.0 * shortfall(weights, True)
        return value

    weights = {n: 1.0 for n in names}
    best = cost(weights)
    for round_ in range(max(rounds, 10) if checked else rounds):
        moved = False
        for name in names[1:]:
            for value in grid:
                trial = {**weights, name: value}
                score = cost(trial)
                if score < best - 1e-12:
                    best, weights, moved = score, trial, True
        if not moved or (round_ + 1 >= rounds and not (checked and shortfall(weights, False) > 0)):
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


def halves(pairs, seed: int = 0):
    """(dev, test) pairs of the seeded identity split (`evaluation.split`, as `eval --half`) and the split."""
    from fiqa_trt.evaluation import split

    cut = split.identity_split(pairs.identities(), seed)
    dev, test = split.split_pairs(pairs, cut)
    return dev, test, cut


def protocol_of(pairs, embeddings: np.ndarray, keys: list[str], fmrs=FMRS) -> tuple[np.ndarray, Protocol]:
    """(rows, Protocol) of a pair set (`evaluation.protocols.Pairs`) over images embedded in the order of `keys`:
    `rows` are the rows of `pairs.keys` among them, the Protocol's indices are into `rows`."""
    index = {k: i for i, k in enumerate(keys)}
    rows = np.array([index[k] for k in pairs.keys], np.int64)
    from fiqa_trt.evaluation.protocols import identity_of

    ident = np.array([identity_of(k) for k in pairs.keys])
    return rows, protocol_from_pairs(embeddings[rows], ident, np.ones(len(rows), bool), pairs.a, pairs.b,
                                     pairs.mated, fmrs)


def fit(signals: dict[str, np.ndarray], embeddings: np.ndarray, keys: list[str], pairs, seed: int = 0,
        references: dict[str, np.ndarray] | None = None, bootstrap: int = 1000) -> Fit:
    """Fit the weights of `signals` (name -> per-image values in the order of `keys`, whose `embeddings` give the
    verification similarities) on the dev half of the seeded identity split of `pairs` and report both halves;
    `references` (name -> per-image qualities) are reported on the test half with the bootstrap interval of the
    fitted quality's npAUC minus theirs (negative: the fit is better)."""
    dev_pairs, test_pairs, _ = halves(pairs, seed)
    dev_rows, dev = protocol_of(dev_pairs, embeddings, keys)
    test_rows, test = protocol_of(test_pairs, embeddings, keys)
    weights = search({k: v[dev_rows] for k, v in signals.items()}, dev)
    fused = fuse(signals, weights)
    result = Fit(weights, dev.report(fused[dev_rows]), test.report(fused[test_rows]))
    for name, q in (references or {}).items():
        result.references[name] = {"test": test.report(q[test_rows]), "difference_90": bootstrap_difference(
            test, fused[test_rows], q[test_rows], n=bootstrap, seed=seed)}
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


def signals_of(recipe, norms: np.ndarray, cosines: np.ndarray, view_specs: list[int],
               centre_cos: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The per-image values of a recipe's signals (log-norm, log-distance to the centre, log-cosine), as its
    weighted_log fusion reads them."""
    from dataclasses import replace

    return {name: replace(recipe, signals=((name, 1.0),)).fuse(norms, cosines, view_specs, centre_cos)
            for name, _ in recipe.signals}


def dev_sample(keys: list[str], cut, seed: int = 0, count: int = CENTRE_SAMPLE) -> list[str]:
    """A seeded sample of at most `count` of the images of `keys` whose identity is on the dev side of `cut`."""
    from fiqa_trt.evaluation.protocols import identity_of

    dev = [k for k in keys if cut.side(identity_of(k)) == "dev"]
    if not dev:
        raise FiqaError("the dev half of the identity split has no image: no centre can be computed")
    if len(dev) <= count:
        return dev
    pick = np.random.default_rng([seed, 0xCE27]).choice(len(dev), count, replace=False)
    return [dev[i] for i in sorted(pick)]


def ui_centre(runner, root, keys: list[str], view: str, aligner=None, seed: int = 0, batch_size: int = 32,
              threads: int | None = None) -> tuple[float, ...]:
    """The unrecognisable-identity centre of a model: the unit mean of the embeddings of the `view` (e.g.
    `lowres:size=10`: the faces shrunk to 10 x 10 pixels) of the images `root/key` (the dev images: `dev_sample`),
    realigned by `aligner` first as scoring does."""
    from pathlib import Path

    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.engine.recipes import unit_centre
    from fiqa_trt.engine.scorer import Scorer

    scorer = Scorer(runner, [view], seed=seed, batch_size=batch_size, threads=threads, aligner=aligner)
    views = [b.embeddings[:, 1] for b in scorer.embed([Item(str(Path(root) / k), k) for k in keys])
             if b.embeddings is not None]
    if not views:
        raise FiqaError(f"none of the {len(keys)} dev images could be embedded: no centre")
    return unit_centre(np.concatenate(views))


def pass_signals(recipe, embeddings: np.ndarray, view_specs: list[int]) -> dict[str, np.ndarray]:
    """The recipe's signals (name -> (n,)) read off one pass's raw embeddings (n, 1+K, D): norms, centre cosines
    and view cosines, as the scorer computes them."""
    from fiqa_trt import kernels

    norms, centre_cos = recipe.forward_stats(embeddings)
    cos, _ = kernels.quality(embeddings, recipe.agg)
    return signals_of(recipe, norms, cos, view_specs, centre_cos)


def crop_signals(scorer, recipe, crops: list[np.ndarray], keys: list[str]) -> dict[str, np.ndarray]:
    """The recipe's signals (name -> (N,)) of in-memory aligned crops, through `scorer` (built with `recipe`)."""
    return pass_signals(recipe, scorer.embed_crops(crops, keys), scorer.view_specs)


def degradation_signals(scorer, recipe, root, keys: list[str], aligner=None, seed: int = 0) -> dict[str, dict]:
    """`"clean"` and each `evaluation.degradations` kind -> the recipe's signals of the images `root/key` (dev
    faces: `dev_sample(..., count=degradations.SAMPLE)`) put on the template (`aligner`) and then degraded: what
    `search(degraded=..., floor=...)` checks its weights against."""
    from pathlib import Path

    import cv2

    size = scorer.runner.config.input_size
    crops, names = [], []
    for key in keys:
        bgr = cv2.imread(str(Path(root) / key))
        if bgr is None:
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        crops.append(aligner.warp(rgb) if aligner is not None and hasattr(aligner, "warp")
                     else cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA))
        names.append(key)
    if not crops:
        raise FiqaError("none of the dev images for the degradation check could be read")
    out = {"clean": crop_signals(scorer, recipe, crops, names)}
    for kind in degradations.KINDS:
        degraded = [degradations.degrade(c, kind, k, seed) for c, k in zip(crops, names)]
        out[kind] = crop_signals(scorer, recipe, degraded, names)
    return out


def calibrate_model(runner, root, recipe, aligner=None, seed: int = 0, batch_size: int = 32,
                    threads: int | None = None, pair_file: str | None = None, progress=None, bootstrap: int = 1000,
                    cap: int = 20, nonmated: int | None = None):
    """Fit `recipe` for the model of `runner` on the identity folders under `root` (`nonmated`: the all-mated
    protocol's count; None: 2,000,000 or every possible pair where fewer exist): its centre (when it reads a ui
    signal) from dev-half images, then one embedding pass over every image with the recipe's views (realigned by
    `aligner`), the weights fitted on the dev half of the seeded identity split and reported on the test half,
    and its 0-100 calibration (p1, p99 of the fitted quality over every image). Returns (fitted recipe, report)."""
    from dataclasses import replace
    from pathlib import Path

    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.engine.scorer import Scorer
    from fiqa_trt.evaluation.protocols import all_mated_pairs, identities as identity_folders, read_pairs

    if recipe.fusion != "weighted_log":
        raise FiqaError(f"recipe '{recipe.name}' has no weights to fit (fusion {recipe.fusion}); calibrate a "
                        "weighted_log recipe, e.g. --recipe lognorm-ui-flip")
    root = Path(root)
    keys = [k for ks in identity_folders(root).values() for k in ks]
    if pair_file:
        pairs = read_pairs(pair_file, root)
        source = f"pair file {Path(pair_file).name}"
    else:
        pairs = all_mated_pairs(root, max_images=cap, nonmated=nonmated, seed=seed, keys=keys)
        source = pairs.source
    missing = sorted(set(pairs.keys) - set(keys))
    if missing:
        raise FiqaError(f"{len(missing)} images of the pairs are not in the identity folders under {root} (e.g. "
                        f"{missing[0]})")
    dev_pairs, test_pairs, cut = halves(pairs, seed)
    centre_note = None
    if recipe.reads_centre:
        sample = dev_sample(keys, cut, seed)
        recipe = replace(recipe, centre=ui_centre(runner, root, sample, recipe.centre_view, aligner, seed,
                                                  batch_size, threads))
        centre_note = f"{recipe.centre_view} views of {len(sample)} dev images"
    scorer = Scorer(runner, recipe=recipe, seed=seed, batch_size=batch_size, threads=threads, aligner=aligner)
    originals, parts, ok = [], [], np.zeros(len(keys), bool)
    row = 0
    for batch in scorer.embed([Item(str(root / k), k) for k in keys], progress):
        good = [row + i for i, it in enumerate(batch.items) if it.error is None]
        if batch.embeddings is not None:
            originals.append(batch.embeddings[:, 0].astype(np.float64))
            parts.append(pass_signals(recipe, batch.embeddings, scorer.view_specs))
            ok[good] = True
        row += len(batch.items)
    if not ok.any():
        raise FiqaError(f"none of the {len(keys)} images under {root} could be embedded")
    failed = {k for k, g in zip(keys, ok) if not g}
    if failed & set(pairs.keys):
        raise FiqaError(f"{len(failed & set(pairs.keys))} images of the protocol could not be embedded (e.g. "
                        f"{sorted(failed & set(pairs.keys))[0]}); remove them")
    keys = [k for k, g in zip(keys, ok) if g]
    emb = np.concatenate(originals)
    sig = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    finite = np.all([np.isfinite(v) for v in sig.values()], axis=0)
    if not finite.all():
        raise FiqaError(f"{int((~finite).sum())} images gave a non-finite signal (zero embedding?); remove them")
    dev_rows, dev = protocol_of(dev_pairs, emb, keys)
    test_rows, test = protocol_of(test_pairs, emb, keys)
    check = degradation_signals(scorer, recipe, root, dev_sample(keys, cut, seed, degradations.SAMPLE), aligner, seed)
    weights = search({k: v[dev_rows] for k, v in sig.items()}, dev, degraded=check, floor=degradations.FLOOR)
    fused = fuse(sig, weights)
    agreed = degradations.agreement(fuse(check["clean"], weights),
                                    {k: fuse(v, weights) for k, v in check.items() if k != "clean"})
    report = {"images": len(keys), "protocol": source, "split": cut.describe(), "split_seed": seed,
              "centre": centre_note,
              "dev": {"identities": len(set(dev_pairs.identities())), "mated": int(len(dev.ma)),
                      "false_non_matches": {f"{f:.0e}": int(e.sum()) for f, e in dev.errors.items()},
                      "npauc30": dev.report(fused[dev_rows])},
              "test": {"identities": len(set(test_pairs.identities())), "mated": int(len(test.ma)),
                       "false_non_matches": {f"{f:.0e}": int(e.sum()) for f, e in test.errors.items()},
                       "npauc30": test.report(fused[test_rows])},
              "weights": weights, "degradation_check": {
                  "faces": int(len(next(iter(check["clean"].values())))), "floor": round(degradations.FLOOR, 4),
                  "agreement": {k: round(v, 3) for k, v in agreed.items()},
                  "meets_floor": bool(min(agreed.values()) >= degradations.FLOOR)}, "references": {}}
    for name, values in sig.items():
        report["references"][name] = {"test_npauc30": test.report(values[test_rows]), "difference_90":
                                      bootstrap_difference(test, fused[test_rows], values[test_rows], n=bootstrap,
                                                           seed=seed)}
    p1, p99 = (float(v) for v in np.percentile(fused, [1, 99]))
    from fiqa_trt.engine.recipes import calibrated_name

    fitted = replace(recipe.with_weights(weights), name=calibrated_name(recipe.name),
                     calibration=(round(p1, 6), round(p99, 6)),
                     figures={k: report[k] for k in ("protocol", "split", "centre", "dev", "test", "degradation_check",
                                                     "references")})
    return fitted, report
