"""Each model's default recipe refitted and measured by what `fiqa-trt calibrate` runs, on the shared LFW, with the
shipped ISO/IEC 29794-1 protocol: the figures of the README's quality table.

    python benchmarks/quality_iso.py [--models mobilefacenet,dlib] [--bootstrap 1000] [--data IDENTITY_FOLDERS]
                                     [--out benchmarks/results/quality_iso.json]

Per model, `evaluation.calibrate.calibrate_model` (the function behind `fiqa-trt calibrate MODEL lfw112 --seed 0
--write-package`, OpenVINO at the precision `auto` picks) with the model's registry recipe: every shared LFW crop
(13,233) put on the template as the recipe says, the centre of a ui signal from dev-half crops, one engine pass
with the recipe's views, the weights refitted on the dev half of the identity split (seed 0) under the degradation
check, the 0-100 calibrations of the recipe and of the named stability recipes (`seed` on the crops as they are,
`stability` realigned). Protocol (`evaluation.protocols.all_mated_pairs` over every identity folder): at most 20
crops per identity, every mated pair, 2,000,000 random non-mated pairs (seed 0). Reported by the evaluation stack of
`fiqa-trt eval` on the test half (normalised pAUC@0.3 of the EDC over mated comparisons at the threshold fixed at
0% discard, FMR 1e-3 and 1e-4, 90% bootstrap intervals over identities of each value and of the default's
difference to each reference): the default, the log-norm, and for the MobileFaceNet the seed recipe's score and the
norm on the crops as they are (for dlib the seed view's cosine); verification on the template-aligned crops, as `eval
--realign auto` compares, and for the MobileFaceNet also on the crops as they are (only the recogniser's input
differs); and every pair of the protocol, dev half included (the setting of published tables of trained methods:
not a held-out figure). The packaged recipe files are written by `fiqa-trt calibrate ... --write-package`, not by
this script.
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


def figures(pairs, originals, keys, qualities: dict, bootstrap: int) -> dict:
    """The evaluation stack on `pairs`: each method's normalised pAUC@0.3 (and its 90% interval) per target FMR, and
    the interval of the first method (`default`) minus each other one."""
    from fiqa_trt.evaluation import calibrate
    from fiqa_trt.evaluation.report import Method, evaluate, fmr_key
    from fiqa_trt.evaluation.sweep import pair_similarities

    rows = calibrate.rows_of(pairs, keys)
    sim = pair_similarities(originals[rows], pairs.a, pairs.b)
    first = next(iter(qualities))
    report = evaluate(pairs, sim, [Method(n, "engine", n, np.asarray(q, np.float64)[rows]) for n, q in
                                   qualities.items()], fmrs=calibrate.FMRS, limits=(calibrate.LIMIT,),
                      grid_max=calibrate.LIMIT, bootstrap=bootstrap, bootstrap_seed=0,
                      compare=[(first, n) for n in qualities if n != first] if bootstrap else [])
    out: dict = {"test_npauc30": {}, "test_npauc30_90": {}, "difference_default_minus_90": {}}
    for r in report["results"]:
        out["test_npauc30"].setdefault(r["method"], {})[fmr_key(r["target_fmr"])] = round(r["pauc30_norm"], 4)
        if "pauc30_norm_lo" in r:
            out["test_npauc30_90"].setdefault(r["method"], {})[fmr_key(r["target_fmr"])] = [
                round(r["pauc30_norm_lo"], 4), round(r["pauc30_norm_hi"], 4)]
    for d in report["differences"]:
        if "lo" in d:
            out["difference_default_minus_90"].setdefault(d["b"], {})[fmr_key(d["target_fmr"])] = [
                round(d["lo"], 4), round(d["hi"], 4)]
    return out


def main() -> None:
    from benchmarks.harness.models import packaged
    from fiqa_trt.benchmark import provenance
    from fiqa_trt.evaluation import calibrate
    from fiqa_trt.files import sha256_of

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilefacenet,dlib")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", default="benchmarks/results/quality_iso.json")
    ap.add_argument("--data", default=str(LFW), help="identity folders (default: the shared LFW crops)")
    args = ap.parse_args()
    report = {"benchmark": "benchmarks/quality_iso.py", **provenance(), "data": args.data, "models": {}}
    for model in args.models.split(","):
        path, recipe, source, runner = packaged(model)
        print(f"{model}: {recipe.describe()} ({source})", flush=True)
        done = calibrate.calibrate_model(runner, args.data, recipe, seed=0, bootstrap=args.bootstrap, named=True)
        fit, aligned, asis = done.fit, done.passes["recipe"], done.passes["seed"]
        report |= {"pairs": fit.pairs.describe(), "split": fit.split.describe(), "dev_pairs": fit.dev_pairs.describe(),
                   "test_pairs": fit.test_pairs.describe()}
        qualities = {"default": fit.quality, "norm (template-aligned)": aligned.signals["lognorm"]}
        if model == "mobilefacenet":  # the seed's own score and the norm on the crops as they are
            qualities |= {"seed recipe (as-is)": asis.quality, "norm (as-is)": asis.signals["lognorm"]}
        else:  # the recipe's first view is the seed's
            qualities |= {"seed view (template-aligned)": aligned.signals["cos:0"]}
        bases = {"template-aligned": aligned} | ({"as-is": asis} if model == "mobilefacenet" else {})
        out = {"sha256": sha256_of(path), "recipe_source": source, "template_check": done.report["template_check"],
               "centre": done.report["centre"], "forwards_per_image": 1 + len(recipe.perturb),
               "weights_fitted_on_dev": {k: round(w, 6) for k, w in fit.weights.items()},
               "calibration_p1_p99": list(done.recipe.calibration),
               "calibrations_of_named_recipes_p1_p99": {k: list(v) for k, v in done.calibrations.items()},
               "degradation_check": done.report["degradation_check"], "verification": {}}
        for basis, embedded in bases.items():  # the same qualities; only the recogniser's input differs
            out["verification"][basis] = figures(fit.test_pairs, embedded.originals, embedded.keys, qualities,
                                                 args.bootstrap)
            # every pair of the protocol, both halves: the setting of published tables of trained FIQA models. The
            # dev half is where the weights and the centre were fitted: not a held-out figure, for that comparison
            out["verification"][basis]["all_pairs_npauc30_dev_included"] = figures(
                fit.pairs, embedded.originals, embedded.keys, qualities, 0)["test_npauc30"]
            print(model, basis, json.dumps(out["verification"][basis]["test_npauc30"]), flush=True)
        report["models"][model] = out
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
