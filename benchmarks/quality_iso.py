"""Each model's default recipe refitted and measured by what `fiqa-trt calibrate` runs, on the shared LFW, with the
shipped ISO/IEC 29794-1 protocol: the figures of the README's quality table.

    python benchmarks/quality_iso.py [--models mobilefacenet,dlib] [--bootstrap 1000] [--data IDENTITY_FOLDERS]
                                     [--out benchmarks/results/quality_iso.json]

Per model, `evaluation.calibrate.calibrate_model` (the function behind `fiqa-trt calibrate MODEL lfw112 --seed 0
--write-package`, OpenVINO at the precision `auto` picks) with the model's registry recipe: every shared LFW crop
(13,233) put on the template as the recipe says, the centre of a ui signal from dev-half crops, one engine pass
with the recipe's views, the weights refitted on the dev half of the identity split (seed 0) under the degradation
check, the test half reported by the evaluation stack of `fiqa-trt eval` (normalised pAUC@0.3 of the EDC over
mated comparisons at the threshold fixed at 0% discard, FMR 1e-3 and 1e-4, 90% bootstrap intervals over
identities of each value and of the difference to each signal alone and to the log-norm), the 0-100 calibrations
of the recipe and of the named stability recipes (`seed` on the crops as they are, `stability` realigned).
Protocol (`evaluation.protocols.all_mated_pairs`): at most 20 crops per identity, every mated pair, 2,000,000
random non-mated pairs (seed 0). Added here: the same test half with verification on the crops as they are (the
`seed` pass's originals: only the recogniser's input differs) and every pair of the protocol, dev half included
(the setting of published tables of trained methods: not a held-out figure). The packaged recipe files are written
by `fiqa-trt calibrate ... --write-package`, not by this script.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
LFW = SHARED / "data" / "lfw112"


def figures(pairs, originals, keys, qualities: dict, fitted: str, bootstrap: int) -> dict:
    """The evaluation stack on `pairs`: each method's normalised pAUC@0.3 (and its 90% interval) per target FMR, and
    the interval of `fitted` minus each other method."""
    from fiqa_trt.evaluation import calibrate
    from fiqa_trt.evaluation.report import Method, evaluate, fmr_key
    from fiqa_trt.evaluation.sweep import pair_similarities

    rows = calibrate.rows_of(pairs, keys)
    sim = pair_similarities(originals[rows], pairs.a, pairs.b)
    report = evaluate(pairs, sim, [Method(n, "engine", n, np.asarray(q, np.float64)[rows]) for n, q in
                                   qualities.items()], fmrs=calibrate.FMRS, limits=(calibrate.LIMIT,),
                      grid_max=calibrate.LIMIT, bootstrap=bootstrap, bootstrap_seed=0,
                      compare=[(fitted, n) for n in qualities if n != fitted] if bootstrap else [])
    out = {"npauc30": {}, "npauc30_90": {}, "difference_minus_90": {}}
    for r in report["results"]:
        out["npauc30"].setdefault(r["method"], {})[fmr_key(r["target_fmr"])] = round(r["pauc30_norm"], 4)
        if "pauc30_norm_lo" in r:
            out["npauc30_90"].setdefault(r["method"], {})[fmr_key(r["target_fmr"])] = [
                round(r["pauc30_norm_lo"], 4), round(r["pauc30_norm_hi"], 4)]
    for d in report["differences"]:
        if "lo" in d:
            out["difference_minus_90"].setdefault(d["b"], {})[fmr_key(d["target_fmr"])] = [round(d["lo"], 4),
                                                                                          round(d["hi"], 4)]
    return out


def main() -> None:
    from fiqa_trt.benchmark import machine
    from fiqa_trt.engine import recipes
    from fiqa_trt.engine.models import default_model_path
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.evaluation import calibrate
    from fiqa_trt.files import sha256_of

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilefacenet,dlib")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", default="benchmarks/results/quality_iso.json")
    ap.add_argument("--data", default=str(LFW), help="identity folders (default: the shared LFW crops)")
    args = ap.parse_args()
    report = {"benchmark": "benchmarks/quality_iso.py", "machine": machine(), "data": args.data, "models": {}}
    paths = {"mobilefacenet": SHARED / "models/faceplugin-mobilefacenet/fr_feature.onnx"}
    for model in args.models.split(","):
        path = paths.get(model) or default_model_path()
        recipe, source = recipes.resolve(None, path)
        if source != "model registry":  # a recipe the user calibrated would otherwise be measured instead
            raise SystemExit(f"{model}: the default recipe comes from {source}, not the model registry: move it away")
        runner = load_runner(str(path), "openvino", "auto")
        print(f"{model}: {recipe.describe()} ({source})", flush=True)
        done = calibrate.calibrate_model(runner, args.data, recipe, seed=0, bootstrap=args.bootstrap, named=True)
        main_pass, asis = done.passes["recipe"], done.passes["seed"]
        fitted = f"recipe:{done.recipe.name}"
        qualities = {fitted: done.fit.quality} | {n: v for n, v in main_pass.signals.items()}
        out = {"sha256": sha256_of(path), "recipe": done.recipe.to_dict(), "report": done.report,
               "calibration_p1_p99": list(done.recipe.calibration),
               "calibrations_of_named_recipes_p1_p99": {k: list(v) for k, v in done.calibrations.items()},
               "forwards_per_image": 1 + len(recipe.perturb)}
        if model == "mobilefacenet":  # the crops as they are: verification and the seed's own score
            out["test_as_is"] = figures(done.fit.test_pairs, asis.originals, asis.keys,
                                        qualities | {"seed recipe (as-is)": asis.quality,
                                                     "lognorm (as-is)": asis.signals["lognorm"]},
                                        fitted, args.bootstrap)
        out["all_pairs_dev_included"] = figures(done.fit.pairs, main_pass.originals, main_pass.keys, qualities,
                                                fitted, 0)
        report["models"][model] = out
        print(model, json.dumps({k: out["report"][k] for k in ("test", "references")}), flush=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
