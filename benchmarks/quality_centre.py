"""Facts about the unrecognisable-identity centre of the ui signals, as the documentation states them.

    python benchmarks/quality_centre.py [--cache /tmp/fiqa-quality-research] [--out benchmarks/results/quality_centre.json]

On the OpenCV research views of benchmarks/quality_research.py (the 9,164 shared LFW crops of identities with two or
more images, put on the ArcFace template; OpenVINO), per model:
- how much the centre depends on the faces that give it: the dev half's centre against the test half's, and against
  centres of 20 seeded samples of 300 dev faces (identity split seed 0);
- how much on the way they are shrunk: the packaged recipe's centre (the engine's DALI `lowres:size=10` views of 2,000
  dev crops) against the OpenCV one (area average);
- where faces sit: the cosine of the 10-px views and of the real crops with the centre (quantiles);
- what the signal adds: its Pearson correlation with the log-norm over all crops, and its normalised pAUC@0.3 alone on
  the test half (all-mated protocol, verification on the template-aligned crops);
- for dlib: the degradation agreement (`evaluation.degradations`, 400 seeded dev faces) of the previous default
  recipe, stability only (seed view + 1.66 x 6-degree rotation + 2.90 x 0.95 zoom-out), on the same research path.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
LFW = SHARED / "data" / "lfw112"
PREVIOUS_DLIB = {"seed": 1.0, "rot6": 1.659519, "s95": 2.904514}  # the recipe of 2026-12-01 (cos:0, cos:1, cos:2)


def _research():
    spec = importlib.util.spec_from_file_location("quality_research", Path(__file__).parent / "quality_research.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def centre(x: np.ndarray) -> np.ndarray:
    c = unit(x).mean(axis=0)
    return c / np.linalg.norm(c)


def quantiles(x: np.ndarray) -> dict[str, float]:
    return {q: round(float(np.quantile(x, p)), 3) for q, p in (("min", 0), ("p5", 0.05), ("median", 0.5),
                                                                ("p95", 0.95), ("max", 1))}


def main() -> None:
    from fiqa_trt.engine.models import default_model_path
    from fiqa_trt.evaluation import calibrate, degradations, protocols, split, sweep
    from fiqa_trt.weights import registry

    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/tmp/fiqa-quality-research")
    ap.add_argument("--out", default="benchmarks/results/quality_centre.json")
    args = ap.parse_args()
    qr = _research()
    keys = [k for ks in protocols.identities(LFW).values() if len(ks) >= 2 for k in ks]
    index = {k: i for i, k in enumerate(keys)}
    ident = np.array([k.split("/")[0] for k in keys])
    pairs = protocols.all_mated_pairs(LFW, max_images=20, nonmated=2_000_000, seed=0, keys=keys)
    cut = split.identity_split(pairs.identities(), seed=0)
    dev = np.array([cut.side(i) == "dev" for i in ident])
    _, test = split.split_pairs(pairs, cut)
    rows = np.array([index[k] for k in test.keys])
    models = {"mobilefacenet": (SHARED / "models/faceplugin-mobilefacenet/fr_feature.onnx", "faceplugin-mobilefacenet"),
              "dlib": (default_model_path(), "dlib-resnet-v1-arcface112")}
    report = {"benchmark": "benchmarks/quality_centre.py", "images": len(keys), "split": cut.describe(), "models": {}}
    for model, (path, record) in models.items():
        emb = {v: qr.embedded(model, path, keys, v, Path(args.cache), "bf16").astype(np.float64)
               for v in ("re", "re_low10")}
        c_dev, c_test = centre(emb["re_low10"][dev]), centre(emb["re_low10"][~dev])
        rng = np.random.default_rng(0)
        dev_rows = np.flatnonzero(dev)
        samples = [float(centre(emb["re_low10"][rng.choice(dev_rows, 300, replace=False)]) @ c_dev) for _ in range(20)]
        packaged = np.array(registry.packaged_recipe(record)["centre"])
        ui = np.log(np.clip(1 - unit(emb["re"]) @ c_dev, 1e-6, 2))
        lognorm = np.log(np.linalg.norm(emb["re"], axis=1))
        proto = calibrate.Protocol.of(test, sweep.pair_similarities(emb["re"][rows], test.a, test.b))
        out = {"dev_vs_test_centre_cosine": round(float(c_dev @ c_test), 4),
               "samples_of_300_dev_faces_cosine_to_dev_centre": [round(min(samples), 4), round(max(samples), 4)],
               "engine_vs_opencv_centre_cosine": round(float(packaged @ c_dev), 4),
               "cosine_to_centre_of_10px_views": quantiles(unit(emb["re_low10"]) @ c_dev),
               "cosine_to_centre_of_crops": quantiles(unit(emb["re"]) @ c_dev),
               "pearson_ui_vs_lognorm": round(float(np.corrcoef(ui, lognorm)[0, 1]), 3),
               "ui_alone_test_npauc30": {f"{f:.0e}": round(v, 4) for f, v in
                                         ((f, proto.npauc(ui[rows], f)) for f in proto.errors)}}
        if model == "dlib":
            sample = calibrate.dev_sample(keys, cut, seed=0, count=degradations.SAMPLE)
            views = {k: {v: qr.degraded_embedded(model, path, sample, k, v, Path(args.cache), "bf16")
                         .astype(np.float64) for v in ("", *PREVIOUS_DLIB)} for k in ("clean", *degradations.BASE_KINDS)}

            def previous(e):
                return sum(w * np.log(np.clip(np.einsum("ij,ij->i", unit(e[""]), unit(e[v])), 1e-6, 1))
                           for v, w in PREVIOUS_DLIB.items())

            out["previous_default_degradation_agreement"] = {k: round(v, 3) for k, v in degradations.agreement(
                previous(views["clean"]), {k: previous(e) for k, e in views.items() if k != "clean"}).items()}
        report["models"][model] = out
        print(model, json.dumps(out), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
