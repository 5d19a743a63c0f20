"""The degradation check of each model's packaged default recipe, every kind: the share of dev faces whose clearly
degraded copy the recipe scores below the face.

    python benchmarks/degradation_check.py [--models mobilefacenet,dlib] [--out benchmarks/results/degradation_check.json]

Per model, its packaged recipe (weights, centre) as the registry ships it, through the engine (OpenVINO at the
precision `auto` picks): the 400 seeded dev faces of the check `fiqa-trt calibrate` constrains a fit with
(`evaluation.calibrate.dev_sample` of the shared LFW's all-mated protocol, identity split seed 0, each put on the
model's template), degraded by every kind of `evaluation.degradations.KINDS` (the base kinds: blur sigma 2 and 4,
18 px, noise sigma 25, eyes covered; the capture kinds: over-exposure x2.5, under-exposure gamma 2.5 gain 0.4, motion
blur 11 px, JPEG quality 8, 24 px at JPEG quality 20), and the share of faces whose degraded copy scores lower, for
the fused quality and each of its signals alone, against the 90% floor; and the fused quality's share on 400 other
dev faces (seeded, none of the check's), on which neither the recipe's check layer nor its weights were chosen.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
LFW = SHARED / "data" / "lfw112"
FLOOR = 0.9


def main() -> None:
    from benchmarks.harness.models import packaged
    from fiqa_trt.benchmark import provenance
    from fiqa_trt.engine.settings import ScoringSettings
    from fiqa_trt.evaluation import calibrate, degradations
    from fiqa_trt.evaluation.protocols import all_mated_pairs, identities
    from fiqa_trt.files import sha256_of
    from fiqa_trt.quality import fuse

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilefacenet,dlib")
    ap.add_argument("--out", default="benchmarks/results/degradation_check.json")
    args = ap.parse_args()
    keys = [k for ks in identities(LFW).values() for k in ks]
    pairs = all_mated_pairs(LFW, 20, 2_000_000, 0, keys=keys)
    _, _, cut = calibrate.halves(pairs, 0)
    sample = calibrate.dev_sample(keys, cut, 0, degradations.SAMPLE)
    taken = set(sample)
    other = [k for k in calibrate.dev_sample(keys, cut, 1, 3 * degradations.SAMPLE) if k not in taken]
    other = other[: degradations.SAMPLE]
    report = {"benchmark": "benchmarks/degradation_check.py", **provenance(), "faces": len(sample),
              "split": cut.describe(), "floor": FLOOR,
              "kinds": {k: (degradations.CHECK[k][1] if k in degradations.CHECK else "base") for k in degradations.KINDS},
              "models": {}}
    for model in args.models.split(","):
        path, recipe, source, runner = packaged(model)
        session = calibrate.fit_session(runner, ScoringSettings(seed=0), recipe, (recipe.realign, recipe.realign_each))
        check = calibrate.degradation_signals(session.scorer, recipe, LFW, sample, session.scorer.aligner, 0)
        weights = dict(recipe.signals)
        fused = degradations.agreement(fuse(check["clean"], weights),
                                       {k: fuse(v, weights) for k, v in check.items() if k != "clean"})
        held = calibrate.degradation_signals(session.scorer, recipe, LFW, other, session.scorer.aligner, 0)
        elsewhere = degradations.agreement(fuse(held["clean"], weights),
                                           {k: fuse(v, weights) for k, v in held.items() if k != "clean"})
        each = {n: degradations.agreement(check["clean"][n], {k: v[n] for k, v in check.items() if k != "clean"})
                for n, w in recipe.signals if w != 0}
        rows = {k: {"fused": round(fused[k], 4), "fused_other_faces": round(elsewhere[k], 4),
                    **{n: round(a[k], 4) for n, a in each.items()}}
                for k in degradations.KINDS}
        report["models"][model] = {"sha256": sha256_of(path), "recipe": recipe.name, "recipe_source": source,
                                   "faces": int(len(check["clean"][recipe.signals[0][0]])), "agreement": rows,
                                   "kinds_at_floor": sum(fused[k] >= FLOOR for k in degradations.KINDS),
                                   "below_floor": [k for k in degradations.KINDS if fused[k] < FLOOR],
                                   "other_faces": len(held["clean"][recipe.signals[0][0]]),
                                   "below_floor_other_faces": [k for k in degradations.KINDS if elsewhere[k] < FLOOR]}
        print(model, json.dumps({k: v["fused"] for k, v in rows.items()}), flush=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
