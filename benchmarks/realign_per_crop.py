"""What the per-crop template check does to the quality ranking, on the dev half of the shared LFW, and what each crop's
score depends on.

    python benchmarks/realign_per_crop.py [--models mobilefacenet,dlib] [--variants run_median,auto,on,off]
                                          [--bootstrap 1000] [--out benchmarks/results/realign_per_crop.json]

Protocol (as `fiqa-trt eval --half dev` and the recipe selection): the crops of identities with two or more images,
all mated pairs (at most 20 images per identity), 2,000,000 random non-mated pairs (seed 0), identity split seed 0,
the dev half only. Each model's default recipe with its packaged weights scores every dev crop through the engine
(`engine.scorer.Scorer`, OpenVINO fp32, else ONNX Runtime fp32), verification on the same realigned crops (as
`eval --realign` does), under four realignments:
- `off`: the crops as they are;
- `run_median`: one transform for every crop, the element-wise median of the own transforms of a seeded sample of
  256 crops of the run (the scale and rotation kept a similarity): a crop's transform depends on the run;
- `auto` (shipped): each crop on a known template (ArcFace's, SphereFace's in a 112-wide canvas) moved by the exact
  transform between the two, the others by their own points;
- `on`: every crop by its own points.
Normalised pAUC@0.3 of the EDC (threshold fixed at 0% discard, pair quality min) at FMR 1e-3 and 1e-4, with 90%
bootstrap intervals (dev identities resampled) of each variant's difference to `run_median`, the verification's FNMR
at those FMRs before any discard, and the 1st and 99th percentile of the quality (the ends of the 0-100 score).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
LFW = SHARED / "data" / "lfw112"
MODELS = {"mobilefacenet": SHARED / "models" / "faceplugin-mobilefacenet" / "fr_feature.onnx", "dlib": None}
FMRS = (1e-3, 1e-4)
SAMPLE = 256


def run_median_realigner(items, size):
    """A realigner moving every crop by one transform: the median of the own transforms of a seeded sample."""
    import cv2

    from fiqa_trt.engine import geometry
    from fiqa_trt.engine.template import Landmarks, Realigner

    pick = np.sort(np.random.default_rng([0, 0x7E3]).choice(len(items), min(SAMPLE, len(items)), replace=False))
    crops = np.stack([cv2.resize(cv2.cvtColor(cv2.imread(items[i].path), cv2.COLOR_BGR2RGB), size[::-1],
                                 interpolation=cv2.INTER_AREA) for i in pick])
    points, face = Landmarks()(crops)
    own = np.stack([geometry.similarity_transform(p, geometry.template(size)) for p in points[face >= 0.5]])
    median = np.median(own, axis=0)
    a, b = np.median(own[:, 0, 0] + own[:, 1, 1]) / 2, np.median(own[:, 1, 0] - own[:, 0, 1]) / 2
    median[:, :2] = [[a, -b], [b, a]]

    class RunMedian(Realigner):
        def matrices(self, batch):
            return np.repeat(median[None], len(batch), axis=0)

    return RunMedian(size)


def engine_pass(runner, recipe, items, aligner):
    """(originals (N, D), fused quality (N,), seconds) of the default recipe with its packaged weights."""
    from fiqa_trt.engine.scorer import Scorer
    from fiqa_trt.quality import Pass

    scorer = Scorer(runner, recipe=recipe, aligner=aligner, batch_size=32)
    originals, quality, start = [], [], time.perf_counter()
    for batch in scorer.embed(items):
        if batch.embeddings is None or any(it.error for it in batch.items):
            raise SystemExit(f"an LFW crop failed: {next(it for it in batch.items if it.error)}")
        originals.append(batch.embeddings[:, 0].astype(np.float32))
        quality.append(recipe.evaluate(Pass(batch.embeddings, scorer.view_specs)).quality)
    return np.concatenate(originals), np.concatenate(quality), time.perf_counter() - start


def main() -> None:
    from fiqa_trt.benchmark import provenance
    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.engine.models import default_model_path
    from fiqa_trt.engine.runners import available_backends, load_runner
    from fiqa_trt.engine.resolve import resolve_recipe
    from fiqa_trt.engine.template import realigner_for
    from fiqa_trt.evaluation import bootstrap, edc, protocols, split, sweep

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilefacenet")
    ap.add_argument("--variants", default="run_median,auto,on,off", help="realignments, run_median first")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", default="benchmarks/results/realign_per_crop.json")
    args = ap.parse_args()
    folders = protocols.identities(LFW)
    keys = [k for ks in folders.values() if len(ks) >= 2 for k in ks]
    pairs = protocols.all_mated_pairs(LFW, max_images=20, nonmated=2_000_000, seed=0, keys=keys)
    dev, _ = split.split_pairs(pairs, split.identity_split(pairs.identities(), seed=0))
    items = [Item(str(LFW / k), k) for k in dev.keys]
    resamples = bootstrap.identity_resamples(dev, count=args.bootstrap, seed=0)
    report = {"benchmark": "benchmarks/realign_per_crop.py", **provenance(), "protocol": dev.describe(),
              "images": len(items), "models": {}}
    for model in args.models.split(","):
        path = MODELS[model] or default_model_path()
        runner = load_runner(str(path), "openvino" if "openvino" in available_backends() else "onnxruntime", "fp32")
        recipe, source = resolve_recipe(None, path)
        size = runner.config.input_size
        out = {"recipe": recipe.name, "recipe_source": source, "variants": {}}
        paucs = {}
        for variant in args.variants.split(","):
            aligner = run_median_realigner(items, size) if variant == "run_median" else \
                realigner_for(size, variant)[0]
            originals, quality, seconds = engine_pass(runner, recipe, items, aligner)
            sim = sweep.pair_similarities(originals, dev.a, dev.b)
            figures = {f"{f:.0e}": round(edc.edc(sim, dev.mated, edc.pair_quality(quality[dev.a], quality[dev.b]),
                                                 f).normalised_pauc(0.3), 4) for f in FMRS}
            paucs[variant] = bootstrap.resampled_paucs(resamples, dev, sim, {variant: quality}, fmrs=FMRS)
            fnmr = {f"{f:.0e}": round(float((sim[dev.mated] <= edc.threshold_at_fmr(sim[~dev.mated], f)[0]).mean()),
                                      4) for f in FMRS}
            out["variants"][variant] = {"dev_npauc30": figures, "dev_fnmr_at_0_discard": fnmr,
                                        "engine_pass_seconds": round(seconds, 1),
                                        "quality_p1_p99": [round(float(x), 6) for x in np.percentile(quality, [1, 99])],
                                        "crops": dict(aligner.counts) if aligner is not None else None}
            if variant != "run_median":
                out["variants"][variant]["minus_run_median_90"] = {
                    f"{f:.0e}": [round(x, 4) for x in bootstrap.interval(
                        paucs[variant][(variant, f, 0.3)] - paucs["run_median"][("run_median", f, 0.3)])]
                    for f in FMRS}
            print(model, variant, json.dumps(out["variants"][variant]), flush=True)
        report["models"][model] = out
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
