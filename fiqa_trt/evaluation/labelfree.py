"""Calibration without identity labels: pseudo-quality labels of unlabelled faces and the fit of a recipe's weights
to them (what `fiqa-trt calibrate MODEL IMAGES` runs on a folder without identity folders, or with --no-labels).

The images are read under names made of their content (`content_names`: the SHA-256 of each file, its suffix kept,
linked from a temporary folder), so nothing downstream sees a file or folder name: the fit is a function of the
images' pixels and the seed alone, whatever they are called or however they are grouped. A seeded sample of them
(`LABEL_SAMPLE`, drawn by content) is the calibration set.

Pseudo-labels (FROQ's idea, Babnik et al., IJCB 2025: a more expensive quality measured on a small calibration set
teaches a cheap one), from three signals of the project measured on views the recipe does not take
(`components`, one runner call per batch of crops on the model's template):
- `stability`: FROQ's perturbation label (`froq.label_of`): the mean of the cosine of the face's embedding with its
  mirror's and the mean cosine with its 64 copies with one grid square blacked out;
- `norm`: the mean log L2 norm of the face's and its mirror's embeddings;
- `centre`: the log cosine distance of their mean direction to the model's unrecognisable-identity centre (the
  unit mean of the embeddings of the sample's faces shrunk to 10 x 10 pixels, `calibrate.ui_centre`).
The label (`combine`) is the mean of the three signals' standardised ranks. The recipe's weights are those whose
fused quality has the highest Spearman correlation with the labels (`calibrate.descend`), under the degradation
check of the labelled fit (its floor on the same sample; the check needs no label either). The 0-100 calibration
is the fused quality's 1st and 99th percentile over the sample. Its cost: the sample's forwards (66 + the recipe's
per face), whatever the number of images.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fiqa_trt.engine.precision import spearman
from fiqa_trt.errors import FiqaError
from fiqa_trt.evaluation import calibrate, degradations, froq
from fiqa_trt.files import IMAGE_SUFFIXES
from fiqa_trt.quality import fuse, scale
from fiqa_trt.quality.signals import COS_FLOOR

LABEL_SAMPLE = 1000  # calibration faces given pseudo-labels (each costs 66 forwards)
COMPONENTS = ("stability", "norm", "centre")


def image_files(root: str | os.PathLike) -> list[Path]:
    """Every image file under `root`, in any sub-folder, linked folders followed (hidden files and folders left
    out)."""
    root = Path(root)
    if not root.is_dir():
        raise FiqaError(f"image folder not found: {root}")
    out = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(folder) / f for f in sorted(files) if not f.startswith(".")
                and Path(f).suffix.lower() in IMAGE_SUFFIXES and (Path(folder) / f).is_file()]
    if not out:
        raise FiqaError(f"{root} holds no image files")
    return out


def content_names(files: list[Path], folder: Path) -> list[str]:
    """Link each file into `folder` under the SHA-256 of its bytes (its suffix kept, lower-cased); files with the same
    content once. The names, sorted (so in an order of the contents)."""
    names = set()
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        name = f"{digest}{path.suffix.lower()}"
        if name not in names:
            (folder / name).symlink_to(path.resolve())
            names.add(name)
    return sorted(names)


def sample(keys: list[str], count: int, seed: int) -> list[str]:
    """A seeded sample of at most `count` of `keys` (content names), drawn by hashing each with the seed."""
    order = sorted(keys, key=lambda k: hashlib.blake2b(f"{seed}\x1f{k}".encode(), digest_size=8).digest())
    return sorted(order[:count])


def components(runner, crops: np.ndarray, centre, batch: int = 4, progress=None) -> dict[str, np.ndarray]:
    """The pseudo-label signals (`COMPONENTS`) of aligned crops (N, H, W, 3) uint8 RGB, from the runner calls of
    `froq.perturbed_embeddings`: name -> (N,) float64, higher for a better face. `progress(n)`: crops done."""
    c = np.asarray(centre, np.float64)
    out = {n: [] for n in COMPONENTS}
    for emb in froq.perturbed_embeddings(runner, crops, batch):
        pair = emb[:, :2]  # the face and its mirror
        norms = np.linalg.norm(pair, axis=2)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["stability"].append(froq.label_of(emb))
            out["norm"].append(np.log(norms).mean(axis=1))
            cos = ((pair @ c) / norms).mean(axis=1)
            out["centre"].append(np.log(np.clip(1.0 - cos, COS_FLOOR, 2.0)))
        if progress is not None:
            progress(len(emb))
    return {n: np.concatenate(v) if v else np.zeros(0) for n, v in out.items()}


def standard_ranks(values: np.ndarray) -> np.ndarray:
    """The ranks of `values` (average ranks for ties), standardised to mean 0 and deviation 1."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.zeros(len(uniq))
    np.add.at(sums, inverse, ranks)
    ranks = (sums / counts)[inverse]
    spread = ranks.std()
    return (ranks - ranks.mean()) / (spread if spread > 0 else 1.0)


def combine(parts: dict[str, np.ndarray]) -> np.ndarray:
    """The pseudo-label: the mean of the components' standardised ranks."""
    if not parts:
        raise FiqaError("no pseudo-label component")
    return np.mean([standard_ranks(v) for v in parts.values()], axis=0)


@dataclass
class LabelFree:
    """What `calibrate_unlabelled` fitted: the recipe (weights, centre, calibration, figures), the report, the
    calibration sample's pseudo-labels and components (in the order of `sample`), and its embedding pass
    (`calibrate.EnginePass`, keyed by content name)."""

    recipe: object
    report: dict
    sample: list[str]
    labels: np.ndarray
    parts: dict[str, np.ndarray]
    main: calibrate.EnginePass


def calibrate_unlabelled(runner, root, recipe, seed: int = 0, batch_size: int = 32, threads: int | None = None,
                         progress=None, realign: str | None = None, phase=None,
                         count: int = LABEL_SAMPLE) -> LabelFree:
    """Fit `recipe`'s weights for the model of `runner` on the images under `root` (any folders; no name is read)
    from pseudo-labels (see the module docstring): the centre and the labels from a seeded sample of `count` images,
    one embedding pass over the sample with the recipe's views, the weights fitted to the labels under the
    degradation check (on the sample), the 0-100 calibration over the sample."""
    from fiqa_trt.engine.recipes import calibrated_name
    from fiqa_trt.engine.settings import ScoringSettings

    phase = phase or (lambda name, total=None: None)
    if recipe.fusion != "weighted_log":
        raise FiqaError(f"recipe '{recipe.name}' has no weights to fit (fusion {recipe.fusion}); calibrate a "
                        "weighted_log recipe, e.g. --recipe lognorm-ui-flip")
    files = image_files(root)
    with tempfile.TemporaryDirectory(prefix="fiqa-trt-labelfree-") as tmp:
        folder = Path(tmp)
        keys = content_names(files, folder)
        if len(keys) < 3:
            raise FiqaError(f"{root} holds {len(keys)} distinct image(s): a fit without labels needs a few hundred")
        chosen = sample(keys, count, seed)
        base = ScoringSettings(seed=seed, batch_size=batch_size, threads=threads)
        mode = (realign or recipe.realign, recipe.realign_each)
        centre_scorer = calibrate.fit_session(runner, base, None, mode, perturb=(recipe.centre_view,)).scorer
        phase(f"the centre: {recipe.centre_view} views of sampled images", len(chosen))
        centre = calibrate.ui_centre(centre_scorer, folder, chosen, progress)
        if recipe.reads_centre:
            recipe = replace(recipe, centre=centre)
        # the sample put on the template as the recipe's session puts it (the same realignment mode)
        crops, names = calibrate.aligned_crops(centre_scorer, folder, chosen, centre_scorer.aligner)
        if len(crops) < 3:
            raise FiqaError("fewer than 3 sampled images could be read: no pseudo-labels")
        phase("pseudo-labels: each sampled face, its mirror and 64 occluded copies", len(crops))
        parts = components(runner, np.stack(crops), centre, progress=progress)
        recipe, layers = calibrate.with_layers(runner, centre_scorer, recipe, folder, chosen, progress, phase,
                                               labelled=(crops, parts["stability"]),
                                               check_keys=names[: degradations.SAMPLE], seed=seed)
        session = calibrate.fit_session(runner, base, recipe, mode)
        scorer, aligner = session.scorer, session.scorer.aligner
        phase("embedding", len(chosen))
        main = calibrate.engine_pass(scorer, recipe, folder, chosen, progress, calibrate.REFERENCE_SIGNALS)
        embedded = set(main.keys)  # the faces the engine embedded, with finite pseudo-label signals
        keep = np.array([n in embedded for n in names], bool) & np.all([np.isfinite(v) for v in parts.values()], axis=0)
        names = [n for n, ok in zip(names, keep) if ok]
        parts = {n: v[keep] for n, v in parts.items()}
        labels = combine(parts)
        phase("the degradation check", None)
        check = calibrate.degradation_signals(scorer, recipe, folder, names[: degradations.SAMPLE], aligner, seed)
    phase("fitting the weights to the pseudo-labels", None)
    own = [n for n, _ in recipe.signals]
    index = {k: i for i, k in enumerate(main.keys)}
    rows = np.array([index[k] for k in names], np.int64)
    signals = {n: main.signals[n][rows] for n in own}
    weights = calibrate.descend(signals, lambda q: -spearman(q, labels),
                                degraded={k: {n: v[n] for n in own} for k, v in check.items()},
                                floor=degradations.FLOOR)
    fused = fuse({n: main.signals[n] for n in own}, weights)
    agreed = degradations.agreement(fuse(check["clean"], weights),
                                    {k: fuse(v, weights) for k, v in check.items() if k != "clean"})
    report = {"images": len(keys), "labels": {
        "sample": len(names), "seed": seed, "components": list(COMPONENTS),
        "component_correlation": {n: round(spearman(v, labels), 4) for n, v in parts.items()},
        "fitted_correlation": round(spearman(fused[rows], labels), 4)},
        "centre": f"{recipe.centre_view} views of {len(chosen)} sampled images",
        "layers": layers,
        "weights": weights,
        "degradation_check": {"faces": int(len(check["clean"][own[0]])), "floor": round(degradations.FLOOR, 4),
                              "agreement": {k: round(v, 3) for k, v in agreed.items()},
                              "meets_floor": bool(min(agreed.values()) >= degradations.FLOOR),
                              "out_of_reach": calibrate.out_of_reach(check, degradations.FLOOR)}}
    fitted = replace(recipe.with_weights(weights), name=calibrated_name(recipe.name),
                     calibration=scale.fit_calibration(fused),
                     figures={"labels": "none: pseudo-labels (stability, norm, centre) of "
                              f"{len(names)} sampled images", **{k: report[k] for k in ("centre", "degradation_check")}})
    return LabelFree(fitted, report, names, labels, parts, main)
