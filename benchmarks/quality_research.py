"""The research behind the default quality recipes (issue 15): views made with OpenCV, embedded once, cached.

    python benchmarks/quality_research.py [--cache /tmp/fiqa-quality-research] [--bootstrap 1000]
                                          [--out benchmarks/results/quality_research.json]

The 9,164 shared LFW crops of identities with two or more images (the only ones the protocol uses) are embedded by
each model (OpenVINO bf16, `runner.embed` on uint8 batches) in these views, each cached as one .npy:
- `asis`, `asis_seed`: the crop as it is, and the seed's affine view of it (rot 0.5 deg, scale 1.01, flip; the
  DALI pipeline's matrix, in OpenCV's pixel-centre convention): the seed recipe;
- `re`: the crop moved 8 px right (the shared crops sit 8 px left of the ArcFace template: README, data README),
  and on it `re_flip` (mirror), `re_seed` (the seed's view), `re_rot` (rotation 3 deg).
The engine's own path (`--realign auto`: one O-Net similarity transform, the views in DALI) is measured by
benchmarks/quality_recipes.py, slower; on this machine it did not fit in the session, see the README.

Analysis: `benchmarks/quality_recipes.analyse` (seeded identity split, all-mated protocol per half, EDC over mated
comparisons at a fixed threshold, normalised pAUC@0.3, weights fitted on the dev half, test half reported with 90%
bootstrap intervals over identities).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
LFW = SHARED / "data" / "lfw112"


def _recipes_module():
    spec = importlib.util.spec_from_file_location("quality_recipes", Path(__file__).parent / "quality_recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_matrix(rot: float, scale: float, flip: bool, h: int = 112, w: int = 112) -> np.ndarray:
    """The pipeline's affine matrix (output -> source, pixel corners at integers) in OpenCV's centre convention."""
    th = math.radians(rot)
    f = -1.0 if flip else 1.0
    c, s = math.cos(th) / scale, math.sin(th) / scale
    inv = np.array([[f * c, -f * s], [s, c]])
    centre = np.array([w / 2, h / 2])
    b = centre - inv @ centre + inv @ np.array([0.5, 0.5]) - 0.5
    return np.hstack([inv, b[:, None]])


def views():
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


def main() -> None:
    from fiqa_trt.engine.models import default_model_path
    from fiqa_trt.evaluation.protocols import identities
    from fiqa_trt.files import sha256_of

    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/tmp/fiqa-quality-research")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/quality_research.json")
    ap.add_argument("--models", default="mobilefacenet,dlib")
    args = ap.parse_args()
    qr = _recipes_module()
    keys = [k for ks in identities(LFW).values() if len(ks) >= 2 for k in ks]
    ident = np.array([k.split("/")[0] for k in keys])
    cache = Path(args.cache)
    report = {"benchmark": "benchmarks/quality_research.py", "images": len(keys), "split_seed": args.seed,
              "machine": platform.processor() or platform.machine(), "precision": args.precision,
              "views": "OpenCV: crops moved 8 px right (exact), mirror, seed affine, 3-degree rotation", "models": {}}
    plan = {"mobilefacenet": (SHARED / "models/faceplugin-mobilefacenet/fr_feature.onnx",
                              ["asis", "asis_seed", "re", "re_flip", "re_seed"],
                              [["lognorm"], ["cos:flip"], ["lognorm", "cos:flip"], ["lognorm", "cos:flip", "cos:seed"],
                               ["lognorm", "cos:seed"]]),
            "dlib": (default_model_path(), ["re", "re_flip", "re_seed", "re_rot"],
                     [["cos:seed"], ["cos:flip"], ["cos:seed", "cos:rot3"], ["cos:flip", "cos:rot3"],
                      ["cos:seed", "cos:flip", "cos:rot3"], ["lognorm", "cos:seed", "cos:rot3"]])}
    names = {"re_flip": "flip", "re_seed": "seed", "re_rot": "rot3"}
    for model in args.models.split(","):
        path, needed, candidates = plan[model]
        e = {v: embedded(model, path, keys, v, cache, args.precision) for v in needed}
        asis = (e["asis"], e["asis_seed"]) if "asis" in e else None
        out, best, fused = qr.analyse(model, ident, e["re"], {names[v]: e[v] for v in names if v in e}, asis,
                                      args.seed, args.bootstrap, candidates)
        out["sha256"] = sha256_of(path)
        qualities = {"default": fused}
        if "re_seed" in e:
            qualities["seed"] = qualities["stability"] = qr.cosine(e["re"], e["re_seed"])
        out["calibrations_p1_p99_template_aligned"] = {
            label: [round(float(v), 6) for v in np.percentile(q, [1, 99])] for label, q in qualities.items()}
        out["default_recipe"] = {"signals": best["signals"], "weights": best["weights"]}
        report["models"][model] = out
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
