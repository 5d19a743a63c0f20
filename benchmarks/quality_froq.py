"""FROQ re-implemented against each model's default recipe, on the test half of the shared LFW.

    python benchmarks/quality_froq.py [--models mobilefacenet,dlib] [--bootstrap 200]
                                      [--out benchmarks/results/quality_froq.json]

Per model (OpenVINO at the precision `auto` picks): `evaluation.calibrate.calibrate_model` with the named recipe
`froq` (what `fiqa-trt calibrate MODEL lfw112 --recipe froq --seed 0` runs): FROQ's layers chosen on 1,000 seeded
dev-half faces (pseudo-labels from the mirror and 64 occluded copies, every observable layer's L2 norm, the greedy
selection), then one forward per image of every crop with those layers observed. The packaged default recipe
scores the test half's crops through the engine as shipped (its weights and centre). Both, and the log-norm of the
same forwards, reported by the evaluation stack of `fiqa-trt eval` on the test half of the all-mated protocol
(identity split seed 0, at most 20 crops per identity, every mated pair, 2,000,000 random non-mated pairs; crops
put on the template as the recipes say, verification on them): normalised pAUC@0.3 at FMR 1e-3 and 1e-4, 90%
bootstrap intervals over identities, and of the default minus each other method.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LFW = ROOT.parent / "shared" / "data" / "lfw112"


def main() -> None:
    from benchmarks.harness.figures import npauc_figures
    from benchmarks.harness.models import packaged
    from fiqa_trt.benchmark import provenance
    from fiqa_trt.engine.settings import ScoringSettings
    from fiqa_trt.evaluation import calibrate
    from fiqa_trt.evaluation.report import Method, evaluate
    from fiqa_trt.evaluation.sweep import pair_similarities
    from fiqa_trt.files import sha256_of
    from fiqa_trt.quality import RECIPES

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilefacenet,dlib")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--out", default="benchmarks/results/quality_froq.json")
    ap.add_argument("--data", default=str(LFW), help="identity folders (default: the shared LFW crops)")
    args = ap.parse_args()
    data = Path(args.data)
    report = {"benchmark": "benchmarks/quality_froq.py", **provenance(), "data": args.data,
              "bootstrap": {"resamples": args.bootstrap, "seed": 0}, "models": {}}
    for model in args.models.split(","):
        path, recipe, source, runner = packaged(model)
        print(f"{model}: default {recipe.describe()} ({source})", flush=True)
        done = calibrate.calibrate_model(runner, data, RECIPES["froq"], seed=0, bootstrap=0)
        fit, main = done.fit, done.passes["recipe"]
        test = fit.test_pairs
        session = calibrate.fit_session(runner, ScoringSettings(seed=0), recipe, (recipe.realign, recipe.realign_each))
        shipped = calibrate.engine_pass(session.scorer, recipe, data, list(test.keys))
        rows = calibrate.rows_of(test, main.keys)
        sim = pair_similarities(main.originals[rows], test.a, test.b)
        default_q = dict(zip(shipped.keys, shipped.quality))
        qualities = {"default": np.array([default_q[k] for k in test.keys]), "froq": fit.quality[rows],
                     "norm": main.signals["lognorm"][rows]}
        result = evaluate(test, sim, [Method(n, "engine", n, q) for n, q in qualities.items()],
                          fmrs=calibrate.FMRS, limits=(calibrate.LIMIT,), grid_max=calibrate.LIMIT,
                          bootstrap=args.bootstrap, bootstrap_seed=0,
                          compare=[("default", "froq"), ("default", "norm")] if args.bootstrap else [])
        out = {"sha256": sha256_of(path), "default_recipe": recipe.name, "default_forwards": recipe.forwards,
               "froq_layers": done.report["layers"], "froq_forwards": 1,
               "test": {"pairs": test.describe()}}
        figures = npauc_figures(result)
        out["test"] |= {"npauc30": figures["npauc30"], "npauc30_90": figures["npauc30_90"],
                        "default_minus_90": figures["minus_90"]}
        report["models"][model] = out
        print(model, json.dumps(out["test"]["npauc30"]), json.dumps(out["test"]["default_minus_90"]), flush=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
