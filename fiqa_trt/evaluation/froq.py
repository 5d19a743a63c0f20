"""FROQ (Babnik, Jain, Peer, Struc: "FROQ: Observing Face Recognition Models for Efficient Quality Assessment",
IJCB 2025), re-implemented from its paper and the description of its public code: a training-free quality read off
one forward pass of the frozen FR model, the mean L2 norm of a few intermediate activations chosen on a small
unlabelled calibration set.

1. Pseudo-quality labels (`pseudo_labels`): the method's auxiliary perturbation-based FIQA, on each calibration
   image: the cosine of its embedding with that of its mirror image, and the mean cosine with the embeddings of the
   image with one square of a grid blacked out (14 x 14 px squares at 112 x 112, 64 occluded copies), averaged.
   Its third component, additive Gaussian noise mixed in at 0.1% of the normalised pixel range, moves a pixel by
   less than one 8-bit grey level: on the uint8 images every runner takes it is no change at all, a constant
   cosine of 1, which leaves the ranking of the mean (all the method uses) unchanged; it is left out.
2. Layer utility (`utilities`): the Spearman rank correlation between each observable layer's L2 norm
   (`onnx_export.observers`, reduced inside the graph) and the pseudo-labels over the calibration set.
3. Greedy selection (`select`): of the `TOP` (10) layers with the highest utility, start from the best and add, one
   at a time, the layer whose addition gives the highest correlation of the set's mean norm with the labels, until
   all are in; the set kept is the prefix at which that correlation was highest.
4. Quality (`quality`): the mean of the selected layers' L2 norms (raw, as the method aggregates them).

`choose_layers(runner, crops)` runs 1-3 on a runner: the calibration crops' pseudo-labels, every observable layer's
L2 norm of the same crops (one observing runner, `onnx_export.observers`), the selection; `fiqa-trt calibrate
--recipe froq` (`evaluation.calibrate`, `evaluation.labelfree`) calls it on its sampled faces.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from fiqa_trt.engine.precision import spearman
from fiqa_trt.errors import FiqaError

CELL = 14  # occlusion square side in pixels at 112 x 112 (the method's mpx)
TOP = 10  # layers considered by the greedy selection
SAMPLE = 1000  # calibration faces `fiqa-trt calibrate --recipe froq` chooses the layers on


@dataclass
class Selection:
    layers: list[str]  # the selected layers, in the order the greedy search added them
    correlation: float  # Spearman of their mean norm with the pseudo-labels, on the calibration set
    steps: list[tuple[str, float]] = field(default_factory=list)  # every greedy step: (layer added, correlation)
    utilities: dict[str, float] = field(default_factory=dict)  # each layer's own correlation
    faces: int = 0  # the calibration set's size

    def to_dict(self) -> dict:
        return {"layers": self.layers, "faces": self.faces, "correlation": round(self.correlation, 6),
                "steps": [[n, round(c, 6)] for n, c in self.steps],
                "utilities": {n: round(u, 6) for n, u in self.utilities.items()}}


def occlusion_cells(h: int, w: int, cell: int = CELL) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of the grid squares, the square side scaled from 112 px (8 x 8 squares at any size)."""
    side = max(1, int(round(cell * min(h, w) / 112)))
    return [(y, min(y + side, h), x, min(x + side, w)) for y in range(0, side * (h // side), side)
            for x in range(0, side * (w // side), side)]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("...d,...d->...", a, b) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def perturbed_embeddings(runner, crops: np.ndarray, batch: int = 4):
    """Per batch of `batch` aligned crops (N, H, W, 3) uint8 in the model's colour order, the (n, 2 + cells, D)
    float64 embeddings of each crop, its mirror and its copies with one grid square blacked out, from one runner
    call: what the pseudo-labels read."""
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.dtype != np.uint8:
        raise FiqaError("pseudo_labels takes uint8 crops (N, H, W, 3)")
    h, w = crops.shape[1:3]
    cells = occlusion_cells(h, w)
    for start in range(0, len(crops), batch):
        part = crops[start : start + batch]
        copies = [part, part[:, :, ::-1]]
        for y0, y1, x0, x1 in cells:
            occluded = part.copy()
            occluded[:, y0:y1, x0:x1] = 0
            copies.append(occluded)
        stack = np.ascontiguousarray(np.stack(copies, axis=1))  # (n, 2 + cells, H, W, 3)
        n, k = stack.shape[:2]
        yield np.asarray(runner.embed(stack.reshape(n * k, h, w, 3)), np.float64).reshape(n, k, -1)


def label_of(embeddings: np.ndarray) -> np.ndarray:
    """(n,) the pseudo-label of `perturbed_embeddings`' (n, 2 + cells, D) embeddings: the mean of the mirror cosine
    and the mean occluded-copy cosine."""
    flip = _cos(embeddings[:, 0], embeddings[:, 1])
    occlusion = _cos(embeddings[:, :1], embeddings[:, 2:]).mean(axis=1)
    return (flip + occlusion) / 2.0


def pseudo_labels(runner, crops: np.ndarray, batch: int = 4) -> np.ndarray:
    """(N,) pseudo-quality labels of aligned crops (N, H, W, 3) uint8 in the model's colour order: the mean of the
    mirror cosine and the mean occluded-copy cosine (see the module docstring). `batch` crops per runner call (each
    with its 1 + 1 + 64 copies)."""
    out = [label_of(emb) for emb in perturbed_embeddings(runner, crops, batch)]
    return np.concatenate(out) if out else np.zeros(0)


def layer_norms(runner, crops: np.ndarray, names: list[str], batch: int = 32) -> np.ndarray:
    """(N, L) float64 L2 norms of the layers `names` for aligned crops (N, H, W, 3) uint8, from a runner on the same
    model that observes them."""
    from fiqa_trt.onnx_export.observers import Observers

    observing = runner.observing(Observers(tuple(names), ("l2",)))
    parts = []
    for start in range(0, len(crops), batch):
        observed = observing.forward(np.ascontiguousarray(crops[start : start + batch])).observed
        parts.append(np.asarray(observed if isinstance(observed, np.ndarray) else observed.get(), np.float64))
    return np.concatenate(parts)


def choose_layers(runner, crops: np.ndarray, progress=None, labels: np.ndarray | None = None) -> Selection:
    """FROQ's layers for the model of `runner` from aligned calibration crops (N, H, W, 3) uint8 in its colour order
    (a few hundred, no label): pseudo-labels (`labels`, where already computed for these crops), every observable
    layer's norm, the greedy selection."""
    names = [layer.name for layer in runner.layers()]
    if not names:
        raise FiqaError("the model has no observable layer")
    labels = pseudo_labels(runner, crops) if labels is None else np.asarray(labels, np.float64)
    if progress is not None:
        progress(len(crops))
    return replace(select(layer_norms(runner, crops, names), labels, names), faces=len(crops))


def utilities(norms: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(L,) Spearman correlation of each layer's norms (column of (N, L)) with the labels (NaN for a constant one)."""
    norms, labels = np.asarray(norms, np.float64), np.asarray(labels, np.float64)
    if norms.ndim != 2 or len(norms) != len(labels):
        raise FiqaError("utilities: norms (N, L) and labels (N,) of the same images")
    return np.array([spearman(norms[:, j], labels) for j in range(norms.shape[1])])


def quality(norms: np.ndarray) -> np.ndarray:
    """The FROQ quality of images from the selected layers' L2 norms (N, S): their mean."""
    return np.asarray(norms, np.float64).mean(axis=1)


def select(norms: np.ndarray, labels: np.ndarray, names: list[str], top: int = TOP) -> Selection:
    """The greedy layer selection on calibration norms (N, L) of the layers `names` and pseudo-labels (N,)."""
    if len(names) != np.shape(norms)[1]:
        raise FiqaError("select: one name per column of norms")
    if len(labels) < 3:
        raise FiqaError("FROQ needs a calibration set of at least 3 images (a few hundred in practice)")
    util = utilities(norms, labels)
    ranked = [int(j) for j in np.argsort(-np.nan_to_num(util, nan=-np.inf), kind="stable") if np.isfinite(util[j])]
    if not ranked:
        raise FiqaError("no layer's norm varies over the calibration set")
    pool = ranked[:top]
    chosen = [pool[0]]
    steps = [(names[pool[0]], float(util[pool[0]]))]
    left = pool[1:]
    while left:
        trials = [(spearman(quality(norms[:, chosen + [j]]), labels), j) for j in left]
        best, j = max(trials, key=lambda t: (np.nan_to_num(t[0], nan=-np.inf), -left.index(t[1])))
        chosen.append(j)
        left.remove(j)
        steps.append((names[j], float(best)))
    stop = int(np.argmax([np.nan_to_num(c, nan=-np.inf) for _, c in steps]))
    return Selection([names[j] for j in chosen[: stop + 1]], steps[stop][1], steps,
                     {names[j]: float(util[j]) for j in range(len(names))})
