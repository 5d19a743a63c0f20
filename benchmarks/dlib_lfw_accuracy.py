"""LFW verification accuracy of the default model (dlib's ResNet converted to 112x112 ArcFace-crop input).

    python benchmarks/dlib_lfw_accuracy.py [--backend auto] [--batch 64] [--realigned] [--shared-geometry]
                                           [--out benchmarks/results/dlib_lfw_accuracy.json]

Embeds every image of the shared pair list (uint8 RGB crops through `load_runner(...).embed`, batches of 64) and
reports the best single cosine threshold over all 5,474 pairs, printed and written as JSON.

The shared crops sit about 8.6 px left of ArcFace's 112x112 template (benchmarks/dlib_geometry.py: they match the
96x112 template of SphereFace/CosFace, without ArcFace's +8 px in x), so the default warp, made for ArcFace crops,
puts their faces off-centre in dlib's chip. Two more measurements separate the model from that misalignment:
`--realigned`: the default model on the shared crops moved 8 px right (bilinear, border replicated), i.e. onto
ArcFace's template; `--shared-geometry`: the same network behind the warp measured for the shared crops as they are
("shared_crops_to_dlib150" in benchmarks/results/dlib_geometry.json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def best_threshold_accuracy(cos: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The accuracy of the best rule `same person iff cos >= t` over all pairs, and that t (a midpoint)."""
    order = np.argsort(cos)
    c, s = cos[order], same[order]
    # threshold just above position i (i = -1: below everything): pairs 0..i say "different"
    diff_below = np.concatenate([[0], np.cumsum(~s)])
    same_above = s.sum() - np.concatenate([[0], np.cumsum(s)])
    correct = diff_below + same_above
    i = int(np.argmax(correct))
    lo = c[i - 1] if i > 0 else c[0] - 1e-6
    hi = c[i] if i < len(c) else c[-1] + 1e-6
    return float(correct[i] / len(c)), float((lo + hi) / 2)


REALIGN = np.array([[1, 0, 8], [0, 1, 0]], np.float32)  # 96x112-template crop in a 112 frame -> ArcFace template


def load(files: list[str], realign: bool) -> np.ndarray:
    import cv2

    images = [np.asarray(Image.open(SHARED / "lfw112" / f).convert("RGB")) for f in files]
    if realign:
        images = [cv2.warpAffine(i, REALIGN, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                  for i in images]
    return np.stack(images)


def embed_all(model: Path, files: list[str], backend: str, batch: int, realign: bool = False):
    from fiqa_trt.engine.runners import load_runner

    runner = load_runner(str(model), backend, "fp32")
    out = np.empty((len(files), runner.config.embedding_size), np.float32)
    start = time.time()
    for i in range(0, len(files), batch):
        chunk = load(files[i : i + batch], realign)
        out[i : i + len(chunk)] = runner.embed(chunk)
    seconds = time.time() - start
    return out, {"backend": runner.name, "precision": runner.precision, "seconds": round(seconds, 1),
                 "images_per_s": round(len(files) / seconds, 1)}


def evaluate(model: Path, pairs, files, backend, batch, realign: bool = False) -> dict:
    emb, run = embed_all(model, files, backend, batch, realign)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index = {f: i for i, f in enumerate(files)}
    a = np.array([index[p[0]] for p in pairs])
    b = np.array([index[p[1]] for p in pairs])
    same = np.array([p[2] == 1 for p in pairs])
    cos = (emb[a] * emb[b]).sum(1)
    accuracy, threshold = best_threshold_accuracy(cos, same)
    return {"accuracy": round(accuracy, 5), "threshold": round(threshold, 5),
            "mean_cos_same": round(float(cos[same].mean()), 4),
            "mean_cos_different": round(float(cos[~same].mean()), 4),
            **run}


def main() -> None:
    from fiqa_trt.onnx_export import dlib_resnet
    from fiqa_trt.engine.models import default_model_path, dlib_model_file

    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--realigned", action="store_true")
    parser.add_argument("--shared-geometry", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dlib_lfw_accuracy.json"))
    args = parser.parse_args()
    pairs = []
    for line in (SHARED / "lfw112_pairs.txt").read_text().splitlines():
        if line.strip():
            x, y, label = line.strip().split(",")
            pairs.append((x, y, int(label)))
    files = sorted({p[0] for p in pairs} | {p[1] for p in pairs})
    result = {"pairs": len(pairs), "same": sum(p[2] == 1 for p in pairs), "images": len(files),
              "protocol": "best single cosine threshold over all pairs (no folds)",
              "model": "default_model_path(): dlib_face_recognition_resnet_model_v1 -> ONNX, 112x112 ArcFace input",
              "arcface112_to_dlib150": dlib_resnet.ARCFACE112_TO_DLIB150.tolist()}
    result["default_model"] = evaluate(default_model_path(), pairs, files, args.backend, args.batch)
    print(json.dumps(result["default_model"]))
    if args.realigned:
        result["default_model_on_realigned_crops"] = {
            "crop_transform": REALIGN.tolist(),
            **evaluate(default_model_path(), pairs, files, args.backend, args.batch, realign=True)}
        print(json.dumps(result["default_model_on_realigned_crops"]))
    if args.shared_geometry:
        geometry = json.loads((ROOT / "benchmarks" / "results" / "dlib_geometry.json").read_text())
        matrix = np.array(geometry["shared_crops_to_dlib150"]["matrix"])
        with tempfile.TemporaryDirectory() as tmp:
            variant = dlib_resnet.export_arcface_input_model(dlib_model_file(), Path(tmp) / "shared.onnx", matrix)
            result["shared_crop_geometry"] = {"matrix": matrix.tolist(),
                                              **evaluate(variant, pairs, files, args.backend, args.batch)}
        print(json.dumps(result["shared_crop_geometry"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
