"""Calibration of the gate's 0-100 score: the 1st and 99th percentiles of a model's qualities on the shared LFW.

    python benchmarks/calibrate_gate.py [--model M.onnx ...] [--step 4] [--out benchmarks/results/gate_calibration.json]

Scores every `step`-th shared LFW crop (sorted paths) with the default perturbation and mean aggregation, fp32 on
ONNX Runtime, and prints the `calibration` of each model's record in fiqa_trt/weights/registry.py (keyed by the ONNX file's sha256).
Without --model: the shared MobileFaceNet and the default model (dlib's ResNet, converted).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    from fiqa_trt.engine.inputs import list_items
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.files import sha256_of
    from fiqa_trt.engine.scorer import Scorer
    from fiqa_trt.engine.models import default_model_path

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append")
    ap.add_argument("--step", type=int, default=4)
    ap.add_argument("--out", default="benchmarks/results/gate_calibration.json")
    args = ap.parse_args()
    models = args.model or [str(SHARED / "models/faceplugin-mobilefacenet/fr_feature.onnx"), str(default_model_path())]
    items = list_items(str(SHARED / "data/lfw112"))[:: args.step]
    report = {"images": len(items), "step": args.step, "perturb": "default", "agg": "mean", "models": []}
    for model in models:
        runner = load_runner(model, "onnxruntime", "fp32")
        started = time.perf_counter()
        q = np.array([r.quality for r in Scorer(runner, batch_size=32).score(items) if r.error is None])
        p1, p99 = (float(v) for v in np.percentile(q, [1, 99]))
        row = {"model": Path(model).name, "name": runner.config.name, "sha256": sha256_of(Path(model)),
               "scored": int(len(q)), "p1": round(p1, 4), "p50": round(float(np.median(q)), 4),
               "p99": round(p99, 4), "seconds": round(time.perf_counter() - started, 1)}
        report["models"].append(row)
        print(json.dumps(row))
        print(f'    "{row["sha256"]}": ("{row["name"]}", {row["p1"]}, {row["p99"]}),')
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
