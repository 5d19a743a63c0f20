"""The views and cached embeddings behind the selection of the default quality recipes: views made with
OpenCV, embedded once, cached; used by benchmarks/quality_select.py (the selection itself, on the dev half) and
not run on its own.

The 9,164 shared LFW crops of identities with two or more images (the only ones the protocol uses) are embedded by
each model (OpenVINO, `runner.embed` on uint8 batches) in these views, each cached as one .npy (`embedded`):
- `asis`, `asis_seed`: the crop as it is, and the seed's affine view of it (rot 0.5 deg, scale 1.01, flip; the
  DALI pipeline's matrix, in OpenCV's pixel-centre convention);
- `re`: the crop moved 8 px right (the shared crops sit 8 px left of the ArcFace template: README, data README),
  and on it `re_<name>`: mirror, the seed's view, rotations, scales, one-pixel moves, the faces shrunk to n x n
  pixels (the ui centre's views), ...
`degraded_embedded` embeds a sample of dev crops put on the template, degraded (`evaluation.degradations`), then in
an aligned view (`aligned_views`): the degradation check of the selection.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
LFW = SHARED / "data" / "lfw112"


def seed_matrix(rot: float, scale: float, flip: bool, h: int = 112, w: int = 112) -> np.ndarray:
    """The pipeline's affine matrix (output -> source, pixel corners at integers) in OpenCV's centre convention."""
    th = math.radians(rot)
    f = -1.0 if flip else 1.0
    c, s = math.cos(th) / scale, math.sin(th) / scale
    inv = np.array([[f * c, -f * s], [s, c]])
    centre = np.array([w / 2, h / 2])
    b = centre - inv @ centre + inv @ np.array([0.5, 0.5]) - 0.5
    return np.hstack([inv, b[:, None]])


def aligned_views():
    """The views as functions of a crop already on the template (the research names without `re_`; "" is the crop)."""
    import cv2

    def warp(im, m):
        return cv2.warpAffine(im, m, (112, 112), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    def moved(im, dx, dy):  # integer moves with repeated borders: the same pixels as one move from the raw crop
        return cv2.warpAffine(im, np.float64([[1, 0, dx], [0, 1, dy]]), (112, 112), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)

    def low(im, n):
        return cv2.resize(cv2.resize(im, (n, n), interpolation=cv2.INTER_AREA), (112, 112),
                          interpolation=cv2.INTER_LINEAR)

    return {"": lambda im: im, "flip": lambda im: im[:, ::-1],
            "seed": lambda im: warp(im, seed_matrix(0.5, 1.01, True)),
            "rot": lambda im: warp(im, seed_matrix(3.0, 1.0, False)),
            "blur": lambda im: cv2.GaussianBlur(im, (0, 0), 1.5), "low": lambda im: low(im, 28),
            "move": lambda im: moved(im, 3, 0), "flip_move": lambda im: moved(im, 3, 0)[:, ::-1],
            # one pixel off the template (x7: 1 px left, x9: 1 px right, y1 / ym1: down / up), and mirrored
            "x7": lambda im: moved(im, -1, 0), "x9": lambda im: moved(im, 1, 0),
            "y1": lambda im: moved(im, 0, 1), "ym1": lambda im: moved(im, 0, -1),
            "x7f": lambda im: moved(im, -1, 0)[:, ::-1], "x9f": lambda im: moved(im, 1, 0)[:, ::-1],
            "rotm3": lambda im: warp(im, seed_matrix(-3.0, 1.0, False)),
            "rot6": lambda im: warp(im, seed_matrix(6.0, 1.0, False)),
            "flip_rot": lambda im: warp(im, seed_matrix(3.0, 1.0, True)),
            **{f"s{round(100 * s)}": (lambda s: lambda im: warp(im, seed_matrix(0.0, s, False)))(s)
               for s in (0.85, 0.90, 0.95, 1.05)},
            "s95f": lambda im: warp(im, seed_matrix(0.0, 0.95, True)),
            # the faces shrunk to n x n pixels (area average) and back up: their mean embedding is the centre of the
            # ui signals (the unrecognisable identities)
            **{f"low{n}": (lambda n: lambda im: low(im, n))(n) for n in (8, 10, 12)}}


def to_template(im: np.ndarray) -> np.ndarray:
    """A shared crop moved 8 px right: on the ArcFace template (what `--realign auto` finds)."""
    import cv2

    return cv2.warpAffine(im, np.float64([[1, 0, 8], [0, 1, 0]]), (112, 112), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def views():
    """Every view as a function of the shared crop as it is (cached by name: these pixels are the record)."""
    import cv2

    def warp(im, m):
        return cv2.warpAffine(im, m, (112, 112), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    def shift(im, dx=8):
        return cv2.warpAffine(im, np.float64([[1, 0, dx], [0, 1, 0]]), (112, 112), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)

    def moved(im, dx, dy):  # on the template (8 px right), then dx, dy more
        return cv2.warpAffine(im, np.float64([[1, 0, 8 + dx], [0, 1, dy]]), (112, 112), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)

    return {"asis": lambda im: im, "asis_seed": lambda im: warp(im, seed_matrix(0.5, 1.01, True)),
            "re": shift, "re_flip": lambda im: shift(im)[:, ::-1],
            "re_seed": lambda im: warp(shift(im), seed_matrix(0.5, 1.01, True)),
            "re_rot": lambda im: warp(shift(im), seed_matrix(3.0, 1.0, False)),
            "re_blur": lambda im: cv2.GaussianBlur(shift(im), (0, 0), 1.5),
            "re_low": lambda im: cv2.resize(cv2.resize(shift(im), (28, 28), interpolation=cv2.INTER_AREA), (112, 112),
                                            interpolation=cv2.INTER_LINEAR),
            "re_move": lambda im: shift(im, 11), "re_flip_move": lambda im: shift(im, 11)[:, ::-1],
            # one pixel off the template (x7: 1 px left, x9: 1 px right, y1 / ym1: down / up), and mirrored
            "re_x7": lambda im: moved(im, -1, 0), "re_x9": lambda im: moved(im, 1, 0),
            "re_y1": lambda im: moved(im, 0, 1), "re_ym1": lambda im: moved(im, 0, -1),
            "re_x7f": lambda im: moved(im, -1, 0)[:, ::-1], "re_x9f": lambda im: moved(im, 1, 0)[:, ::-1],
            "re_rotm3": lambda im: warp(shift(im), seed_matrix(-3.0, 1.0, False)),
            "re_rot6": lambda im: warp(shift(im), seed_matrix(6.0, 1.0, False)),
            "re_flip_rot": lambda im: warp(shift(im), seed_matrix(3.0, 1.0, True)),
            **{f"re_s{round(100 * s)}": (lambda s: lambda im: warp(shift(im), seed_matrix(0.0, s, False)))(s)
               for s in (0.85, 0.90, 0.95, 1.05)},
            "re_s95f": lambda im: warp(shift(im), seed_matrix(0.0, 0.95, True)),
            # the faces shrunk to n x n pixels (area average) and back up: their mean embedding is the centre of the
            # ui signals (the unrecognisable identities)
            **{f"re_low{n}": (lambda n: lambda im: cv2.resize(cv2.resize(shift(im), (n, n), interpolation=cv2.INTER_AREA),
                                                              (112, 112), interpolation=cv2.INTER_LINEAR))(n)
               for n in (8, 10, 12)}}


def embedded(model: str, path: Path, keys: list[str], view: str, cache: Path, precision: str) -> np.ndarray:
    import cv2

    from fiqa_trt.engine.runners import load_runner

    f = cache / f"{model}_{precision}_{view}_multi.npy"
    if f.is_file():
        return np.load(f)
    runner = load_runner(str(path), "openvino", precision)
    make, out, started = views()[view], [], time.perf_counter()
    for s in range(0, len(keys), 64):
        batch = [make(cv2.cvtColor(cv2.imread(str(LFW / k)), cv2.COLOR_BGR2RGB)) for k in keys[s : s + 64]]
        out.append(runner.embed(np.ascontiguousarray(np.stack(batch))).astype(np.float32))
    emb = np.concatenate(out)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(f, emb)
    print(f"  {model} {view}: {len(keys)} images in {time.perf_counter() - started:.0f} s", flush=True)
    return emb


def degraded_embedded(model: str, path: Path, keys: list[str], kind: str, view: str, cache: Path,
                      precision: str) -> np.ndarray:
    """Embeddings of the crops `keys` put on the template, degraded (`evaluation.degradations`; "clean": not) and
    then seen in the aligned view `view` ("" the crop itself), cached."""
    import cv2

    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.evaluation import degradations

    import hashlib

    sample = hashlib.blake2b("\n".join(keys).encode(), digest_size=6).hexdigest()
    f = cache / f"{model}_{precision}_degraded{len(keys)}-{sample}_{kind}_{view or 'crop'}.npy"
    if f.is_file():
        return np.load(f)
    runner, make = load_runner(str(path), "openvino", precision), aligned_views()[view]
    out = []
    for s in range(0, len(keys), 64):
        batch = []
        for k in keys[s : s + 64]:
            crop = to_template(cv2.cvtColor(cv2.imread(str(LFW / k)), cv2.COLOR_BGR2RGB))
            batch.append(make(crop if kind == "clean" else degradations.degrade(crop, kind, k, 0)))
        out.append(runner.embed(np.ascontiguousarray(np.stack(batch))).astype(np.float32))
    cache.mkdir(parents=True, exist_ok=True)
    np.save(f, np.concatenate(out))
    return np.load(f)
