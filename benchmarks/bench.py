"""Throughput benchmark on the shared LFW data and model: `fiqa-trt bench` with this repository's defaults.

    python benchmarks/bench.py [--images 512] [--out benchmarks/results/cpu_<name>.json] [other `fiqa-trt bench` options]

Prints a table (and the JSON with --out): quality scores/s end to end, inference alone, decode+perturb, the stage
breakdown, FLOP/s against the measured peak, per backend and precision, for K = 1 and 4.
"""

import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"

if __name__ == "__main__":
    from fiqa_trt.cli.app import main

    sys.argv = [sys.argv[0], "bench", "--model", str(SHARED / "models/faceplugin-mobilefacenet/fr_feature.onnx"),
                "--data", str(SHARED / "data/lfw112"), *sys.argv[1:]]
    main()
