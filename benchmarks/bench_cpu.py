"""CPU throughput of the scoring path on the shared LFW data: decode+perturb, inference, and the whole run.

    python benchmarks/bench_cpu.py [--images 1024] [--views 1] [--perturb SPEC ...] [--out results.json]

Prints one JSON document (machine description included). Rates are images/s, where one image means its original
plus its K perturbed views; `end_to_end_vs_inference` is the ratio of the whole run to inference alone, measured
in the same run. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fiqa_trt.engine.inputs import check_item, list_items  # noqa: E402
from fiqa_trt.engine.pipeline import PerturbPipeline  # noqa: E402
from fiqa_trt.engine.runners import load_runner  # noqa: E402
from fiqa_trt.engine.scorer import Scorer  # noqa: E402

SHARED = ROOT.parent / "shared"


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import nvidia.dali
    import onnxruntime

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "dali": nvidia.dali.__version__, "onnxruntime": onnxruntime.__version__, "platform": platform.platform()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "lfw112"))
    ap.add_argument("--model", default=str(SHARED / "models" / "faceplugin-mobilefacenet" / "fr_feature.onnx"))
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--perturb", action="append")
    ap.add_argument("--out")
    args = ap.parse_args()

    items = list_items(args.data)[: args.images]
    runner = load_runner(args.model)
    scorer = Scorer(runner, args.perturb, views=args.views, batch_size=args.batch_size)
    k = len(scorer.views)
    checked = [check_item(it) for it in items]

    pipe = PerturbPipeline(scorer.views, runner.config, batch_size=args.batch_size, num_threads=os.cpu_count())
    pipe.run(checked[: args.batch_size])  # warm-up
    start = time.perf_counter()
    tensors = [pipe.run(checked[i : i + args.batch_size]) for i in range(0, len(checked), args.batch_size)]
    decode_perturb = len(checked) / (time.perf_counter() - start)

    runner.embed(tensors[0].reshape(-1, *tensors[0].shape[2:]))  # warm-up
    start = time.perf_counter()
    for t in tensors:
        runner.embed(t.reshape(-1, *t.shape[2:]))
    inference = len(checked) / (time.perf_counter() - start)
    del tensors

    start = time.perf_counter()
    results = list(scorer.score(items))
    whole = len(items) / (time.perf_counter() - start)
    assert not any(r.error for r in results)

    report = {
        "benchmark": "cpu_scoring", "machine": machine(), "model": Path(args.model).name,
        "backend": runner.name, "precision": "fp32", "images": len(items), "batch_size": args.batch_size,
        "views_per_image": k, "perturb": [s.label() for s in scorer.specs],
        "images_per_s": {"decode_perturb": round(decode_perturb, 1), "inference": round(inference, 1),
                         "end_to_end": round(whole, 1)},
        "forward_passes_per_s": {"inference": round(inference * (1 + k), 1), "end_to_end": round(whole * (1 + k), 1)},
        "end_to_end_vs_inference": round(whole / inference, 3),
        "mean_quality": float(np.mean([r.quality for r in results])),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
