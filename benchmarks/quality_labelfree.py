"""Calibration without labels against calibration with them, per model, on the test half of the shared LFW.

    python benchmarks/quality_labelfree.py [--models mobilefacenet,dlib] [--bootstrap 200] [--identities N]
                                           [--out benchmarks/results/quality_labelfree.json]

Per model, with its registry recipe (OpenVINO at the precision `auto` picks):
- labelled: `evaluation.calibrate.calibrate_model` (what `fiqa-trt calibrate MODEL lfw112 --seed 0` runs): the
  weights fitted on the dev half of the identity split (seed 0) of the all-mated protocol (at most 20 crops per
  identity, every mated pair, 2,000,000 random non-mated pairs);
- label-free: `evaluation.labelfree.calibrate_unlabelled` (what `fiqa-trt calibrate MODEL FOLDER --seed 0` runs on a
  folder without identity folders) on every LFW crop outside the test half's identities (the dev half's and those
  of the identities with one crop), linked into one flat folder under numbered names: labels withheld, and no test
  image in the fit;
- both recipes scored on the test half's crops and reported by the evaluation stack of `fiqa-trt eval`
  (normalised pAUC@0.3 at FMR 1e-3 and 1e-4 of the EDC over mated comparisons, 90% bootstrap intervals over
  identities of each value and of label-free minus labelled). The target: label-free within 0.03 of labelled.
`--identities N`: a seeded subset of N identity folders instead of all (said in the result).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
LFW = SHARED / "data" / "lfw112"
TARGET = 0.03


def subset(root: Path, count: int | None, seed: int = 0) -> Path:
    """`root`, or a temporary folder linking a seeded subset of `count` of its identity folders."""
    if not count:
        return root
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    pick = np.random.default_rng(seed).choice(len(folders), min(count, len(folders)), replace=False)
    out = Path(tempfile.mkdtemp(prefix="lfw-subset-"))
    for i in sorted(pick):
        (out / folders[i].name).symlink_to(folders[i])
    return out


def main() -> None:
    from benchmarks.harness.figures import npauc_figures
    from benchmarks.harness.models import packaged
    from fiqa_trt.benchmark import provenance
    from fiqa_trt.engine.settings import ScoringSettings
    from fiqa_trt.evaluation import calibrate, labelfree
    from fiqa_trt.evaluation.protocols import identity_of
    from fiqa_trt.evaluation.report import Method, evaluate
    from fiqa_trt.evaluation.sweep import pair_similarities
    from fiqa_trt.files import sha256_of

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilefacenet,dlib")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--identities", type=int, default=0, help="a seeded subset of identity folders (0: all)")
    ap.add_argument("--out", default="benchmarks/results/quality_labelfree.json")
    args = ap.parse_args()
    data = subset(LFW, args.identities)
    report = {"benchmark": "benchmarks/quality_labelfree.py", **provenance(),
              "data": f"shared LFW crops: {'all identity folders' if not args.identities else f'a seeded subset of {args.identities} identity folders (seed 0)'}",
              "target": f"label-free within {TARGET} normalised pAUC@0.3 of labelled on the test half",
              "bootstrap": {"resamples": args.bootstrap, "seed": 0}, "models": {}}
    for model in args.models.split(","):
        path, recipe, source, runner = packaged(model)
        print(f"{model}: {recipe.describe()} ({source})", flush=True)
        labelled = calibrate.calibrate_model(runner, data, recipe, seed=0, bootstrap=0)
        fit, main = labelled.fit, labelled.passes["recipe"]
        all_keys = sorted(p.relative_to(data).as_posix() for p in labelfree.image_files(data))
        withheld = [k for k in all_keys if fit.split.side(identity_of(k)) != "test"]
        with tempfile.TemporaryDirectory(prefix="lfw-flat-") as tmp:
            for i, k in enumerate(withheld):  # numbered names: no identity in a name or a folder
                (Path(tmp) / f"{i:06d}{Path(k).suffix}").symlink_to((data / k).resolve())
            free = labelfree.calibrate_unlabelled(runner, tmp, recipe, seed=0)
        test_keys = list(fit.test_pairs.keys)
        session = calibrate.fit_session(runner, ScoringSettings(seed=0), free.recipe,
                                        (free.recipe.realign, free.recipe.realign_each))
        scored = calibrate.engine_pass(session.scorer, free.recipe, data, test_keys)
        rows = calibrate.rows_of(fit.test_pairs, main.keys)
        sim = pair_similarities(main.originals[rows], fit.test_pairs.a, fit.test_pairs.b)
        free_q = dict(zip(scored.keys, scored.quality))
        qualities = {"labelled": fit.quality[rows], "label-free": np.array([free_q[k] for k in test_keys])}
        result = evaluate(fit.test_pairs, sim, [Method(n, "engine", n, q) for n, q in qualities.items()],
                          fmrs=calibrate.FMRS, limits=(calibrate.LIMIT,), grid_max=calibrate.LIMIT,
                          bootstrap=args.bootstrap, bootstrap_seed=0,
                          compare=[("label-free", "labelled")] if args.bootstrap else [])
        out = {"sha256": sha256_of(path), "recipe": recipe.name, "recipe_source": source,
               "forwards_per_image": 1 + len(recipe.perturb),
               "labelled": {"weights": {k: round(v, 6) for k, v in fit.weights.items()},
                            "fitted_on": f"dev half: {fit.dev_pairs.describe()}",
                            "degradation_check": labelled.report["degradation_check"]["agreement"]},
               "label_free": {"weights": {k: round(v, 6) for k, v in free.report["weights"].items()},
                              "fitted_on": f"{free.report['images']} crops outside the test half's identities, "
                                           f"flattened; pseudo-labels of {free.report['labels']['sample']} sampled",
                              "labels": free.report["labels"],
                              "degradation_check": free.report["degradation_check"]["agreement"]},
               "test": {"pairs": fit.test_pairs.describe()}}
        figures = npauc_figures(result)
        out["test"] |= {"npauc30": figures["npauc30"], "npauc30_90": figures["npauc30_90"]}
        gap = {k: round(out["test"]["npauc30"]["label-free"][k] - out["test"]["npauc30"]["labelled"][k], 4)
               for k in out["test"]["npauc30"]["labelled"]}
        out["test"]["label_free_minus_labelled"] = gap
        out["test"]["label_free_minus_labelled_90"] = figures["minus_90"].get("labelled", {})
        out["within_target"] = bool(all(g <= TARGET for g in gap.values()))  # lower is better: not worse by more
        report["models"][model] = out
        print(model, json.dumps(out["test"]), flush=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
