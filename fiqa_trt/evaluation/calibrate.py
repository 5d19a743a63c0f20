"""Fitting a quality recipe for one model: its unrecognisable-identity centre, its weights on the development half
of a seeded identity split, its 0-100 calibration, and the held-out report.

Protocol (the all-mated protocol `evaluation.protocols.all_mated_pairs`, or a pair file): identities are split in
two halves by `evaluation.split.identity_split` (the split `fiqa-trt eval --half` uses); a pair belongs to a half
when both its images do. Everything reported is computed by the evaluation stack of `fiqa-trt eval`
(`evaluation.report.evaluate`: EDC over mated comparisons at the threshold fixed at 0% discard, min pair quality,
normalised pAUC, bootstrap intervals over identities with the threshold set again in every resample), so a recipe
calibrated with seed S reports on its test half exactly what `fiqa-trt eval IMAGES --generate --half test --seed S
--split-seed S --recipe FITTED.json` prints for it (same bootstrap count and seed).

The fit works on arrays (`fit`): per-image signal values and original embeddings in the order of the image keys.
`search` does coordinate descent over a grid of weights (the first signal's weight fixed at 1, so the scale is
fixed) on the dev half only, minimising the mean normalised pAUC@0.3 over the target FMRs (`Protocol`: the dev
half's false non-matches at the fixed thresholds, scored by `edc.mated_npauc`), optionally under the degradation
check's floor. `calibrate_model` is the engine side that `fiqa-trt calibrate` and benchmarks/quality_iso.py run:
the template check, the centre from dev-half images (`ui_centre`), one embedding pass with the recipe's views, the
degradation check's signals, `fit`, the calibration (`quality.scale.fit_calibration`), and with `named=True` the
0-100 calibrations of the named stability recipes that a packaged recipe file carries (`package_document`).
Nothing of the test half enters the centre or the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fiqa_trt.errors import FiqaError
from fiqa_trt.evaluation import degradations, edc, froq
from fiqa_trt.evaluation.protocols import Pairs
from fiqa_trt.quality import Pass, fuse  # the recipes' weighted sum: the fit weighs signals as scoring fuses them
from fiqa_trt.quality import scale

FMRS = (1e-3, 1e-4)
LIMIT = 0.3
GRID = (0.0, 0.0625, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0, 16.0)  # relative, on standardised signals
CENTRE_SAMPLE = 2000  # dev images whose low-resolution views give the centre (its direction is stable from ~300)
BOOTSTRAP = 200  # resamples of the test identities, as `fiqa-trt eval` draws them by default
REFERENCE_SIGNALS = ("lognorm",)  # read off the pass besides the recipe's signals, reported against the fit


@dataclass
class Protocol:
    """The comparisons the weight search scores: mated pairs (ma, mb: indices into the half's images) and, per target
    FMR, which of them is a false non-match at the threshold fixed at 0% discard."""

    ma: np.ndarray
    mb: np.ndarray
    errors: dict[float, np.ndarray]

    @classmethod
    def of(cls, pairs: Pairs, similarity: np.ndarray, fmrs=FMRS) -> "Protocol":
        """The protocol of a pair set with these pair similarities (thresholds by `edc.threshold_at_fmr`)."""
        sim = np.asarray(similarity, np.float64)
        genuine, impostor = sim[pairs.mated], sim[~pairs.mated]
        errors = {fmr: genuine <= edc.threshold_at_fmr(impostor, fmr)[0] for fmr in fmrs}
        return cls(pairs.a[pairs.mated], pairs.b[pairs.mated], errors)

    def npauc(self, quality: np.ndarray, fmr: float, limit: float = LIMIT) -> float:
        return edc.mated_npauc(edc.pair_quality(quality[self.ma], quality[self.mb]), self.errors[fmr], limit)


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
    """The weights of `signals` that minimise the mean normalised pAUC of one protocol (`objective`): `descend`
    over the protocol's own images. Raises FiqaError when no target FMR has a false non-match to discard."""
    if not any(errors.any() for errors in proto.errors.values()):
        raise FiqaError("the dev half has no false non-match at any target FMR: there is nothing for a quality to "
                        "discard, so no weight can be fitted (more identities, or harder images)")
    used = np.unique(np.concatenate([proto.ma, proto.mb]))  # the protocol's own images only
    return descend(signals, lambda quality: objective(proto, quality), used, grid, rounds, degraded, floor)


def reachable(degraded: dict[str, dict[str, np.ndarray]], floor: float) -> list[str]:
    """The degradation kinds of `degraded` (as `descend` takes it) for which at least one signal alone ranks the
    degraded copy below the face for `floor` of the faces."""
    clean = degraded["clean"]
    return [k for k, v in degraded.items() if k != "clean"
            and max(degradations.agreement(clean[n], {k: v[n]})[k] for n in clean) >= floor]


def out_of_reach(degraded: dict[str, dict[str, np.ndarray]], floor: float) -> list[str]:
    """The degradation kinds no signal alone ranks below the face for `floor` of the faces (not fitted against)."""
    within = reachable(degraded, floor)
    return [k for k in degraded if k != "clean" and k not in within]


def descend(signals: dict[str, np.ndarray], cost_of, rows: np.ndarray | None = None, grid=GRID, rounds: int = 3,
            degraded: dict[str, dict[str, np.ndarray]] | None = None, floor: float | None = None) -> dict[str, float]:
    """Coordinate descent over `grid` for every weight but the first (fixed at 1), minimising `cost_of(fused
    quality)` (over every image of `signals`; `rows`, the images it reads, None for all). The grid applies to the
    signals divided by their standard deviation over `rows` (so that a log-cosine, whose spread is a few hundredths,
    and a log-norm weigh alike); the weights returned apply to the raw signals.

    `degraded` (`"clean"` and each degradation kind -> signal -> values over the same faces, e.g. dev faces and their
    `evaluation.degradations` copies) with `floor`: the fused quality must drop for at least `floor` of the faces
    under every kind within reach (`reachable`: a kind for which some signal alone reaches the floor; one that no
    signal can rank would only pull the weights away from the cost without meeting the floor). A fit below it pays
    10 x its shortfall, plus 10 x the shortfall of a smooth share (`soft_agreement`, which still moves where a grid
    step moves no face across), on top of its cost, and the descent goes on for up to 10 rounds while it is below; a
    fit at or above the floor is judged by its cost alone. The floor may still be out of reach of the weighted
    signals (then the result misses it: callers check with `degradations.agreement`)."""
    names = list(signals)
    if (degraded is None) != (floor is None):
        raise ValueError("give both degraded and floor, or neither")
    if degraded is not None and ("clean" not in degraded or len(degraded) < 2):
        raise ValueError("degraded needs 'clean' and at least one degradation kind")
    signals = {n: np.asarray(v, np.float64) for n, v in signals.items()}  # (float32 sums move with alignment)
    spread = {n: float(np.std(signals[n] if rows is None else signals[n][rows])) or 1.0 for n in names}
    z = {n: signals[n] / spread[n] for n in names}
    checked = degraded is not None
    zd = {kind: {n: np.asarray(v[n], np.float64) / spread[n] for n in names} for kind, v in degraded.items()} \
        if checked else {}
    if checked:
        zd = {k: v for k, v in zd.items() if k == "clean" or k in reachable(degraded, floor)}
        checked = len(zd) > 1

    def shortfall(weights: dict[str, float], soft: bool) -> float:
        clean = fuse(zd["clean"], weights)
        drops = [soft_agreement(clean, fuse(v, weights)) if soft else
                 degradations.agreement(clean, {k: fuse(v, weights)})[k] for k, v in zd.items() if k != "clean"]
        return max(0.0, floor - min(drops))

    def cost(weights: dict[str, float]) -> float:
        value = cost_of(fuse(z, weights))
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


def halves(pairs: Pairs, seed: int = 0):
    """(dev, test) pairs of the seeded identity split (`evaluation.split`, as `eval --half`) and the split."""
    from fiqa_trt.evaluation import split

    cut = split.identity_split(pairs.identities(), seed)
    dev, test = split.split_pairs(pairs, cut)
    return dev, test, cut


def rows_of(pairs: Pairs, keys: list[str]) -> np.ndarray:
    """The rows of `pairs.keys` among images in the order of `keys`."""
    index = {k: i for i, k in enumerate(keys)}
    return np.array([index[k] for k in pairs.keys], np.int64)


@dataclass
class Fit:
    """A fit on arrays: the weights, the fused quality of every image, and the dev and test halves' reports
    (`evaluation.report.evaluate` documents: the fitted quality as method `name`, the signals alone as references
    on the test half, with bootstrap intervals and the differences fitted - signal)."""

    name: str
    weights: dict[str, float]
    quality: np.ndarray
    dev: dict
    test: dict
    pairs: Pairs  # the whole protocol
    dev_pairs: Pairs
    test_pairs: Pairs
    split: object  # evaluation.split.IdentitySplit
    references: list[str] = field(default_factory=list)

    def half(self, which: str) -> dict:
        """The figures of one half (`dev` or `test`) of the fitted quality: identities, mated comparisons, false
        non-matches, normalised pAUC@0.3 and, with a bootstrap, its 90% interval, per target FMR."""
        from fiqa_trt.evaluation.report import fmr_key, limit_key

        report, pairs = (self.dev, self.dev_pairs) if which == "dev" else (self.test, self.test_pairs)
        key = limit_key(LIMIT)
        rows = {r["target_fmr"]: r for r in report["results"] if r["method"] == self.name and r["mode"] == "fixed"}
        out = {"identities": len(set(pairs.identities())), "mated": report["pairs"]["mated"],
               "false_non_matches": {fmr_key(f): report["verification"]["at_fmr"][fmr_key(f)]["false_non_matches"]
                                     for f in rows},
               "npauc30": {fmr_key(f): r[key + "_norm"] for f, r in rows.items()}}
        if "bootstrap" in report:
            out["npauc30_90"] = {fmr_key(f): [r[key + "_norm_lo"], r[key + "_norm_hi"]] for f, r in rows.items()}
        return out

    def reference_figures(self) -> dict:
        """Per reference signal: its test-half normalised pAUC@0.3 and the 90% interval of fitted - it."""
        from fiqa_trt.evaluation.report import fmr_key, limit_key

        key = limit_key(LIMIT)
        out = {}
        for ref in self.references:
            rows = [r for r in self.test["results"] if r["method"] == ref and r["mode"] == "fixed"]
            diffs = [d for d in self.test["differences"] if d["a"] == self.name and d["b"] == ref and "lo" in d]
            out[ref] = {"test_npauc30": {fmr_key(r["target_fmr"]): r[key + "_norm"] for r in rows},
                        "difference_90": {fmr_key(d["target_fmr"]): [d["lo"], d["hi"]] for d in diffs}}
        return out


def fit(signals: dict[str, np.ndarray], originals: np.ndarray, keys: list[str], pairs: Pairs, seed: int = 0,
        bootstrap: int = BOOTSTRAP, bootstrap_seed: int = 0, degraded: dict | None = None,
        floor: float | None = None, references: dict[str, np.ndarray] | None = None, name: str = "fitted") -> Fit:
    """Fit the weights of `signals` (name -> per-image values in the order of `keys`; the first keeps weight 1) on
    the dev half of the seeded identity split of `pairs`, verification by the `originals` (N, D) embeddings, under
    the degradation check (`degraded`, `floor`: see `search`); report both halves with `evaluation.report.evaluate`
    (the test half with `bootstrap` resamples of its identities, seed `bootstrap_seed`, as `fiqa-trt eval`): the
    fused quality as method `name` and, on the test half, each signal and each of `references` (name -> per-image
    qualities) alone, with the interval of the difference fused - it (negative: the fit is better)."""
    from fiqa_trt.evaluation.report import Method, evaluate
    from fiqa_trt.evaluation.sweep import pair_similarities

    dev_pairs, test_pairs, cut = halves(pairs, seed)
    dev_rows, test_rows = rows_of(dev_pairs, keys), rows_of(test_pairs, keys)
    dev_sim = pair_similarities(originals[dev_rows], dev_pairs.a, dev_pairs.b)
    test_sim = pair_similarities(originals[test_rows], test_pairs.a, test_pairs.b)
    weights = search({k: np.asarray(v)[dev_rows] for k, v in signals.items()}, Protocol.of(dev_pairs, dev_sim),
                     degraded=degraded, floor=floor)
    fused = fuse(signals, weights)
    alone = {**signals, **(references or {})}
    if name in alone:
        raise ValueError(f"the fitted method's name '{name}' is one of the signals")
    settings = dict(fmrs=FMRS, limits=(LIMIT,), grid_max=LIMIT)
    dev = evaluate(dev_pairs, dev_sim, [Method(name, "engine", "fitted on this half", fused[dev_rows])], **settings)
    test = evaluate(test_pairs, test_sim, [Method(name, "engine", "weights fitted on the dev half", fused[test_rows])]
                    + [Method(n, "engine", "one signal alone", np.asarray(v, np.float64)[test_rows])
                       for n, v in alone.items()], bootstrap=bootstrap, bootstrap_seed=bootstrap_seed,
                    compare=[(name, n) for n in alone] if bootstrap else [], **settings)
    return Fit(name, weights, fused, dev, test, pairs, dev_pairs, test_pairs, cut, list(alone))


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


def ui_centre(scorer, root, keys: list[str], progress=None) -> tuple[float, ...]:
    """The unrecognisable-identity centre of a model: the unit mean of the embeddings of the one view of `scorer`
    (a session whose --perturb is the recipe's `centre_view`, e.g. `lowres:size=10`: the faces shrunk to 10 x 10
    pixels) of the images `root/key` (the dev images: `dev_sample`), realigned first as scoring does."""
    from pathlib import Path

    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.quality.signals import unit_centre

    views = [b.embeddings[:, 1] for b in scorer.embed([Item(str(Path(root) / k), k) for k in keys], progress)
             if b.embeddings is not None]
    if not views:
        raise FiqaError(f"none of the {len(keys)} dev images could be embedded: no centre")
    return unit_centre(np.concatenate(views))


def crop_signals(scorer, recipe, crops: list[np.ndarray], keys: list[str]) -> dict[str, np.ndarray]:
    """The recipe's signals (name -> (N,)) of in-memory aligned crops, through `scorer` (built with `recipe`)."""
    return recipe.read_signals(scorer.crop_pass(crops, keys))


def aligned_crops(scorer, root, keys: list[str], aligner=None) -> tuple[list[np.ndarray], list[str]]:
    """The images `root/key` that can be read, put on the template (`aligner`, else resized to the model's input):
    (RGB crops, their keys)."""
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
    return crops, names


def degraded_copies(crops: list[np.ndarray], names: list[str], seed: int = 0) -> dict[str, list[np.ndarray]]:
    """`"clean"` (the crops as they are) and each `evaluation.degradations` kind -> the crops degraded so (keyed by
    `names` and `seed` where a kind draws noise)."""
    return {"clean": list(crops)} | {kind: [degradations.degrade(c, kind, k, seed) for c, k in zip(crops, names)]
                                     for kind in degradations.KINDS}


def degradation_signals(scorer, recipe, root, keys: list[str], aligner=None, seed: int = 0) -> dict[str, dict]:
    """`"clean"` and each `evaluation.degradations` kind -> the recipe's signals of the images `root/key` (dev
    faces: `dev_sample(..., count=degradations.SAMPLE)`) put on the template (`aligner`) and then degraded: what
    `search(degraded=..., floor=...)` checks its weights against."""
    crops, names = aligned_crops(scorer, root, keys, aligner)
    if not crops:
        raise FiqaError("none of the dev images for the degradation check could be read")
    return {kind: crop_signals(scorer, recipe, copies, names)
            for kind, copies in degraded_copies(crops, names, seed).items()}


def check_layer_of(runner, scorer, root, keys: list[str], seed: int = 0, phase=None) -> dict:
    """The check layer of the model of `runner` (`degradations.check_layer` over every observable layer) on the faces
    `root/key` put on the template by `scorer`'s aligner and their copies of every check kind: {"check_layer",
    "check_faces", "check_agreement" (kind -> the share of faces whose copy lowers its norm)}."""
    faces, names = aligned_crops(scorer, root, keys, scorer.aligner)
    if len(faces) < 3:
        raise FiqaError("fewer than 3 faces could be read to choose the check layer")
    if phase is not None:
        phase(f"the check layer: every layer's norm of {len(faces)} faces and their degraded copies", None)
    every = [layer.name for layer in runner.layers()]
    norms = {kind: froq.layer_norms(runner, np.stack(copies), every)
             for kind, copies in degraded_copies(faces, names, seed).items()}
    clean = norms.pop("clean")
    layer, agreed = degradations.check_layer(clean, norms, every)
    return {"check_layer": layer, "check_faces": len(faces), "check_agreement": {k: round(v, 3) for k, v in
                                                                                 agreed.items()}}


@dataclass
class EnginePass:
    """One embedding pass over the images of a calibration: the original embeddings (N, D) float32, each signal's
    values and the recipe's quality (N,), in the order of `keys`; `errors`: the images that could not be embedded
    (left out)."""

    keys: list[str]
    originals: np.ndarray
    signals: dict[str, np.ndarray]
    quality: np.ndarray
    errors: dict[str, str] = field(default_factory=dict)


def engine_pass(scorer, recipe, root, keys: list[str], progress=None, extra: tuple[str, ...] = ()) -> EnginePass:
    """Every image `root/key` through `scorer` (built with `recipe`): its original embedding, the recipe's signals
    and `extra` signals read off the pass (`quality.Recipe.read_signals`), and its quality (`Recipe.evaluate`).
    Images that cannot be decoded are left out (`errors`); FiqaError when none is left or one gives a non-finite
    signal."""
    from fiqa_trt.engine.inputs import Item

    root = Path(root)
    names = [n for n, _ in recipe.signals] + [n for n in extra if n not in dict(recipe.signals)]
    originals, parts, quality, ok, errors = [], [], [], [], {}
    for batch in scorer.embed([Item(str(root / k), k) for k in keys], progress):
        errors |= {it.key: it.error for it in batch.items if it.error is not None}
        ok += [it.key for it in batch.items if it.error is None]
        if batch.embeddings is not None:
            embedded = Pass(batch.embeddings, scorer.view_specs, batch.observed,
                            scorer.layers if batch.observed is not None else None)
            originals.append(batch.embeddings[:, 0].astype(np.float32))
            parts.append(recipe.read_signals(embedded, names))
            quality.append(recipe.evaluate(embedded).quality)
    if not ok:
        raise FiqaError(f"none of the {len(keys)} images under {root} could be embedded")
    signals = {n: np.concatenate([p[n] for p in parts]) for n in names}
    quality = np.concatenate(quality)
    finite = np.all([np.isfinite(v) for v in signals.values()] + [np.isfinite(quality)], axis=0)
    if not finite.all():
        raise FiqaError(f"{int((~finite).sum())} images gave a non-finite signal (a zero embedding?), e.g. "
                        f"{ok[int(np.flatnonzero(~finite)[0])]}; remove them")
    return EnginePass(ok, np.concatenate(originals), signals, quality, errors)


@dataclass
class Calibration:
    """What `calibrate_model` fitted and measured: the fitted recipe (weights, centre, calibration, figures), the
    report, the fit on arrays, the main pass, and with `named=True` each named stability recipe's pass and its
    0-100 calibration."""

    recipe: object  # quality.Recipe
    report: dict
    fit: Fit
    passes: dict[str, EnginePass]  # "recipe" (the fitted recipe's signals), and the named recipes' ("seed", ...)
    calibrations: dict[str, tuple[float, float]]  # of the named recipes (named=True)


def with_layers(runner, scorer, recipe, root, keys: list[str], progress=None, phase=None, labelled=None,
                check_keys: list[str] | None = None, seed: int = 0):
    """(`recipe`, None), or where it reads observer signals but names no layer, (`recipe` with the layers chosen for
    it, what chose them: a dict). FROQ's layers (`froq.choose_layers`) are chosen on the faces `root/key`, put on the
    template by `scorer`'s aligner (`labelled`: those faces' crops and FROQ pseudo-labels, where the caller has
    computed them already); a recipe that reads `froq` gets them. A recipe that reads `obs:<i>` or `obs-all:<i>`
    gets the check layer first (`check_layer_of` the faces `check_keys`, seeded by `seed`), then the layers of
    FROQ's greedy order without it, as many as its signals name: its `obs:0` is the layer whose norm drops under
    the degradations, `obs:1` FROQ's first layer (its second where the first is the check layer)."""
    if not (recipe.uses_layers and not recipe.layers):
        return recipe, None
    if recipe.reads_check_layer and any(n == "froq" for n, _ in recipe.signals):
        raise FiqaError(f"recipe '{recipe.name}' reads froq (the mean of all its layers) and obs signals: the check "
                        "layer would enter FROQ's mean; use one or the other")
    crops, labels = labelled if labelled is not None else (aligned_crops(scorer, root, keys, scorer.aligner)[0], None)
    if len(crops) < 3:
        raise FiqaError("fewer than 3 faces could be read to choose FROQ's layers")
    if phase is not None:
        phase(f"FROQ's layers: {'' if labels is not None else 'pseudo-labels and '}every layer's norm of "
              f"{len(crops)} faces", len(crops))
    selection = froq.choose_layers(runner, np.stack(crops), progress, labels)
    chosen, info = tuple(selection.layers), selection.to_dict()
    if recipe.reads_check_layer:
        info |= check_layer_of(runner, scorer, root, check_keys if check_keys is not None else keys, seed, phase)
        ranked = [info["check_layer"]] + [n for n, _ in selection.steps if n != info["check_layer"]]
        named = 1 + max(s.index for s in (recipe.signal(n) for n, _ in recipe.signals)
                        if s.reads_layers and s.indexed)
        if named > len(ranked):
            raise FiqaError(f"recipe '{recipe.name}' names layer {named - 1}, but the check layer and FROQ's "
                            f"ranking hold {len(ranked)}")
        chosen = tuple(ranked[:named])
    return replace(recipe, layers=chosen), info


def fit_session(runner, base, recipe, mode: tuple[str, bool], **changes):
    """A session on `runner` (settings `base`) scoring with `recipe` (or `changes`), each image put on the template
    as `mode` (realign, realign_each) says (the template check is made per crop)."""
    from fiqa_trt.engine.session import open_session

    return open_session(base.with_(**({"recipe": recipe, "perturb": (), "realign": mode[0], "realign_each": mode[1]}
                                      | changes)), runner=runner)


def calibrate_model(runner, root, recipe, seed: int = 0, batch_size: int = 32, threads: int | None = None,
                    pair_file: str | None = None, progress=None, bootstrap: int = BOOTSTRAP, bootstrap_seed: int = 0,
                    cap: int = 20, nonmated: int | None = None, realign: str | None = None,
                    named: bool = False, phase=None) -> Calibration:
    """Fit `recipe` for the model of `runner` on the identity folders under `root` (pairs: `pair_file`, else the
    all-mated protocol with at most `cap` images per identity and `nonmated` non-mated pairs; None: 2,000,000 or
    every possible pair where fewer exist). Every image is put on the model's template as the recipe says
    (`realign`: None for the recipe's own mode; each crop by its own points when the recipe says so); the centre
    (a ui signal) from dev-half images; one embedding pass over every image with the recipe's views; the weights
    fitted on the dev half under the degradation check; the test half reported; the 0-100 calibration (p1, p99 of
    the fitted quality over every image). `named`: also the 0-100 calibrations of the named recipes `seed` (crops
    as they are) and `stability` (realigned as it says), each from a pass of its own. `phase(name, total)`: each
    step as it starts (the passes with their image counts); `progress(n)`: images embedded in the current pass."""
    phase = phase or (lambda name, total=None: None)
    from fiqa_trt.engine.recipes import calibrated_name
    from fiqa_trt.engine.settings import ScoringSettings
    from fiqa_trt.evaluation.protocols import all_mated_pairs, identities as identity_folders, read_pairs
    from fiqa_trt.quality.recipe import SEED, STABILITY

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
    _, _, cut = halves(pairs, seed)
    base = ScoringSettings(seed=seed, batch_size=batch_size, threads=threads)

    def session_for(r, mode=None, **changes):  # the mode of `r`, whatever recipe `changes` name
        mode = mode or (realign or r.realign, r.realign_each)
        return fit_session(runner, base, changes.pop("recipe", r), mode, **changes)

    mode = (realign or recipe.realign, recipe.realign_each)
    centre_note = None
    # the recipe's placement with its centre view alone: for the centre and for FROQ's layers
    plain = session_for(recipe, recipe=None, perturb=(recipe.centre_view,)).scorer
    if recipe.reads_centre:
        sample = dev_sample(keys, cut, seed)
        phase(f"the centre: {recipe.centre_view} views of dev images", len(sample))
        recipe = replace(recipe, centre=ui_centre(plain, root, sample, progress))
        centre_note = f"{recipe.centre_view} views of {len(sample)} dev images"
    recipe, layers = with_layers(runner, plain, recipe, root, dev_sample(keys, cut, seed, froq.SAMPLE), progress,
                                 phase, check_keys=dev_sample(keys, cut, seed, degradations.SAMPLE), seed=seed)
    session = session_for(recipe, mode)
    scorer, aligner = session.scorer, session.scorer.aligner
    phase("embedding", len(keys))
    main = engine_pass(scorer, recipe, root, keys, progress, REFERENCE_SIGNALS)
    failed = sorted(set(main.errors) & set(pairs.keys))
    if failed:
        raise FiqaError(f"{len(failed)} images of the protocol could not be embedded (e.g. {failed[0]}: "
                        f"{main.errors[failed[0]]}); remove them")
    keys = main.keys
    phase("the degradation check", None)
    check = degradation_signals(scorer, recipe, root, dev_sample(keys, cut, seed, degradations.SAMPLE), aligner, seed)
    phase("fitting the weights and the intervals", None)
    own = [n for n, _ in recipe.signals]
    name = f"recipe:{calibrated_name(recipe.name)}"
    result = fit({n: main.signals[n] for n in own}, main.originals, keys, pairs, seed, bootstrap, bootstrap_seed,
                 {k: {n: v[n] for n in own} for k, v in check.items()}, degradations.FLOOR,
                 {n: v for n, v in main.signals.items() if n not in own}, name)
    agreed = degradations.agreement(fuse(check["clean"], result.weights),
                                    {k: fuse(v, result.weights) for k, v in check.items() if k != "clean"})
    report = {"images": len(keys), "protocol": source, "split": cut.describe(), "split_seed": seed,
              "template_check": "; ".join([session.template_report] + ([aligner.describe()] if hasattr(
                  aligner, "counts") else [])), "centre": centre_note,
              "dev": result.half("dev"), "test": result.half("test"), "weights": result.weights,
              "degradation_check": {"faces": int(len(check["clean"][own[0]])), "floor": round(degradations.FLOOR, 4),
                                    "agreement": {k: round(v, 3) for k, v in agreed.items()},
                                    "meets_floor": bool(min(agreed.values()) >= degradations.FLOOR),
                                    "out_of_reach": out_of_reach(check, degradations.FLOOR),
                                    "agreement_of_each_signal": {n: {k: round(v, 3) for k, v in degradations.agreement(
                                        check["clean"][n], {k: c[n] for k, c in check.items() if k != "clean"})
                                        .items()} for n in own}},
              "references": result.reference_figures(),
              "layers": layers,
              "bootstrap": {"resamples": bootstrap, "seed": bootstrap_seed}}
    fitted = replace(recipe.with_weights(result.weights), name=calibrated_name(recipe.name),
                     calibration=scale.fit_calibration(result.quality),
                     figures={k: report[k] for k in ("protocol", "split", "centre", "dev", "test", "degradation_check",
                                                     "references")})
    passes, calibrations = {"recipe": main}, {}
    for other in (SEED, STABILITY) if named else ():
        scorer = session_for(other, None if other.realign != "off" else ("off", False)).scorer
        phase(f"the 0-100 calibration of recipe {other.name}", len(keys))
        passes[other.name] = engine_pass(scorer, other, root, keys, progress, extra=REFERENCE_SIGNALS)
        calibrations[other.name] = scale.fit_calibration(passes[other.name].quality)
    return Calibration(fitted, report, result, passes, calibrations)


def package_document(calibration: Calibration, model: str, sha256: str, record: str, written_by: dict,
                     images: str, name: str | None = None, role: str = "default", previous: dict | None = None) -> dict:
    """The packaged recipe file of a registry model (`weights/recipes/<record>.json`, what the registry serves) with
    the fitted recipe (called `name`) in `role`: `default`, the model's default recipe with the named recipes'
    0-100 calibrations; another role (`fast`, `froq`), one of its `variants`. What wrote each (`written_by`: the
    command line, commit, date and machine, `fiqa_trt.benchmark.provenance`, with the data: its path as given, image
    count, protocol, split and seed, template check, and the model file) is kept beside it. `previous`: the file as
    it is, whose other roles are kept."""
    report = calibration.report
    data = {"path": images, "images": report["images"], "protocol": report["protocol"], "split": report["split"],
            "split_seed": report["split_seed"], "template_check": report["template_check"]}
    wrote = {**written_by, "data": data, "model_file": Path(model).name}
    recipe = replace(calibration.recipe, name=name or calibration.recipe.name).to_dict()
    document = dict(previous or {}) | {"model": record, "sha256": sha256}
    if role == "default":
        document |= {"written_by": wrote, "recipe": recipe,
                     "calibrations": {k: list(v) for k, v in calibration.calibrations.items()}}
    else:
        document["variants"] = {**document.get("variants", {}), role: recipe}
        document["variants_written_by"] = {**document.get("variants_written_by", {}), role: wrote}
    order = ("model", "sha256", "written_by", "recipe", "calibrations", "variants", "variants_written_by")
    return {k: document[k] for k in order if k in document} | {k: v for k, v in document.items() if k not in order}
