"""Throughput of quality recipes next to the seed recipe, same run, same runner: quality scores/s end to end and
forward passes per score (the original plus the recipe's views), the template check timed apart.

    python benchmarks/bench_recipes.py [--images 512] [--out benchmarks/results/bench_recipes_cpu.json]

The shared MobileFaceNet (OpenVINO, precision auto) and the default model (dlib's ResNet), each with the seed
recipe and its own default recipe, on the first N shared LFW crops (`fiqa_trt.benchmark.recipe_rows`; also
`fiqa-trt bench --recipe default`).
"""

import argparse
import json
import platform
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"

if __name__ == "__main__":
    from fiqa_trt.benchmark import provenance, recipe_rows
    from fiqa_trt.engine.inputs import list_items
    from fiqa_trt.engine.models import default_model_path
    from fiqa_trt.engine.runners import load_runner

    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--out", default="benchmarks/results/bench_recipes_cpu.json")
    args = ap.parse_args()
    items = list_items(str(SHARED / "data/lfw112"))[: args.images]
    report = {"benchmark": "benchmarks/bench_recipes.py", **provenance(), "images": len(items),
              "python": platform.python_version(), "models": {}}
    for name, model in (("faceplugin-mobilefacenet", SHARED / "models/faceplugin-mobilefacenet/fr_feature.onnx"),
                        ("dlib-resnet-v1-arcface112", default_model_path())):
        runner = load_runner(str(model), "auto", "auto")
        rows = recipe_rows(runner, items, ["seed", None], str(model), 32)
        base = rows[0]["quality_scores_per_s"]
        for r in rows:
            r["vs_seed"] = round(r["quality_scores_per_s"] / base, 3)
        report["models"][name] = rows
        print(name, json.dumps(rows, indent=1))
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
