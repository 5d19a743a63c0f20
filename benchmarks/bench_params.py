"""Host-side cost of the per-view parameters: how many (image, view) parameter sets one thread makes per second.

    python benchmarks/bench_params.py [--views 4] [--batch 256] [--seconds 1.0] [--out FILE]

What is timed is what the scorer's producer thread does on the host per batch before DALI runs: for every view of
the plan, the arrays fed to the pipeline for every image of the batch (the keyed draws included, and for mixup the
partner choice). One thread (OpenCV and BLAS held to one), timed by its CPU time. Prints one JSON line: `view_params_per_s` for the default
spec, then the same per kind (each kind's default parameters, `--views` views where the kind is random).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fiqa_trt.benchmark import provenance  # noqa: E402
from fiqa_trt.engine import pipeline  # noqa: E402
from fiqa_trt.engine.perturbations import DEFAULT_SPEC, KINDS, parse_spec, plan_views  # noqa: E402


def keys(n: int) -> list[str]:
    """LFW-like relative paths (the image keys the draws are seeded by)."""
    return [f"Person_{i // 4:05d}/Person_{i // 4:05d}_{i % 4 + 1:04d}.jpg" for i in range(n)]


def host_inputs(views, batch_keys: list[str], seed: int, h: int, w: int) -> int:
    """Everything the producer computes on the host for one batch; returns the number of (image, view) sets."""
    pipeline.host_inputs(views, batch_keys, seed, h, w)
    for view in views:
        if view.spec.kind.needs_partner:  # the partner choice (the scorer draws it over the whole input list)
            pipeline.mixup_partners(range(len(batch_keys)), batch_keys, view, seed)
    return len(views) * len(batch_keys)


def rate(spec: str, views: int, batch: int, seconds: float) -> float:
    """(image, view) sets per second of this thread's CPU time (time.thread_time: what one thread with a core of its
    own would do; wall time on a shared machine measures the other jobs too)."""
    plan = plan_views([parse_spec(spec)], views)
    batch_keys = keys(batch)
    host_inputs(plan, batch_keys, 0, 112, 112)  # warm-up (imports, caches)
    done, t0, seed = 0, time.thread_time(), 1
    while (elapsed := time.thread_time() - t0) < seconds or done == 0:
        done += host_inputs(plan, batch_keys, seed, 112, 112)
        seed += 1  # new draws every round, as new images would give
    return done / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum timed seconds per spec")
    parser.add_argument("--out", type=Path, help="also write the JSON line to this file")
    args = parser.parse_args()
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    result = {"benchmark": "view_params", "views": args.views, "batch": args.batch, "threads": 1,
              "view_params_per_s": round(rate(DEFAULT_SPEC, args.views, args.batch, args.seconds)),
              "per_kind": {k: round(rate(k, args.views, args.batch, args.seconds)) for k in KINDS},
              "clock": "thread CPU time", "load_average": os.getloadavg(), **provenance()}
    line = json.dumps(result)
    print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
