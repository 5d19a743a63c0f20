"""Ray Data scale-out on this machine: the same job with 1 and 2 CPU workers, quality scores/s, as JSON.

    python benchmarks/bench_ray.py [--images 1000] [--backend onnxruntime] [--out benchmarks/results/ray_cpu.json]

Each measurement scores the first N shared LFW images into a fresh output folder with a fresh local Ray instance;
the time includes starting the actors (each loads the model once) but not starting Ray itself.
"""

import argparse
import json
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    import ray

    from fiqa_trt.benchmark import provenance
    from fiqa_trt.engine.settings import ScoringSettings
    from fiqa_trt.scaleout import ray_score

    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--out")
    args = ap.parse_args()
    model = str(SHARED / "models/faceplugin-mobilefacenet/fr_feature.onnx")
    files = sorted((SHARED / "data/lfw112").glob("*/*.jpg"))[: args.images]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "images.txt"
        listing.write_text("\n".join(map(str, files)))
        for workers in (1, 2):
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            settings = ScoringSettings(model=model, backend=args.backend, precision=args.precision, device="cpu")
            summary = ray_score(str(listing), str(Path(tmp) / f"out{workers}"), settings, workers=workers)
            ray.shutdown()
            rows.append({"workers": workers, "images": summary["scored"] + summary["failed"],
                         "seconds": summary["seconds"],
                         "quality_scores_per_s": round(summary["scored"] / summary["seconds"], 1)})
            print(rows[-1], flush=True)
    report = {"benchmark": "ray_score", **provenance(), "model": Path(model).name, "backend": args.backend,
              "precision": args.precision, "cpus_per_worker": 1, "rows": rows,
              "speedup_2_vs_1": round(rows[1]["quality_scores_per_s"] / rows[0]["quality_scores_per_s"], 3)}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
