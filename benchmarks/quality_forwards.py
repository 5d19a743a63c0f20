"""Quality per forward: each shipped model's recipes re-chosen among candidates at 1, 2 and 4 forwards per image,
observer signals included, on the dev half of the shared LFW; the choices reported on the test half, on the standard
and the cross-quality protocol, beside the seed recipe, the log-norm, FROQ and the previous default.

    python benchmarks/quality_forwards.py --phase select [--models mobilefacenet,dlib] [--cache /tmp/fiqa-forwards]
                                          [--inner 8] [--out benchmarks/results/quality_forwards.json]
    fiqa-trt calibrate MODEL lfw112 --recipe CHOSEN --seed 0 --write-package [--package-role fast]
    python benchmarks/quality_forwards.py --phase report [--bootstrap 200] [--images 512]

`select` reads the dev half only and records the previous default; the packaged recipes are then written by
`fiqa-trt calibrate` (the same layer choice, centre and fit as here, on the same dev faces); `report` measures them,
and the previous default, on the test half (and times every method on one machine in one run).

Data and protocol: the all-mated protocol over every identity folder of the shared LFW (at most 20 crops per
identity, every mated pair, 2,000,000 random non-mated pairs, seed 0), the identity split of `evaluation.split`
(seed 0); the crops put on the template as the model's recipe says; verification on them. The cross-quality
protocol (`evaluation.crossquality`, as `fiqa-trt eval --cross-quality 0.5` builds it): half of the images, seeded,
degraded by one realistic kind at a random strength, verification and quality both on the images as they then are.

One engine pass per protocol (OpenVINO at the precision `auto` picks; `benchmarks.harness.superset`) embeds every
image with the union of the candidates' views and returns every observable layer's L2 norm of every forward;
each candidate's signals are read off the sub-pass of its own views by the recipe code that scores.

Layers (label-free, on dev faces): FROQ's (`evaluation.froq.choose_layers` on 1,000 dev faces, as `fiqa-trt
calibrate --recipe froq`) and the check layer (`evaluation.degradations.check_layer`: of every layer, the one whose
norm falls under the most faces for the degradation kind it falls least for, on the 400 dev faces of the check).

Selection, dev half only: each candidate's weights are fitted on one half of a seeded split of the dev identities
and its mean normalised pAUC@0.3 (FMR 1e-3 and 1e-4) measured on the other, both ways, for `--inner` splits; every
fit is made under the degradation check at the floor `degradations.FLOOR` and a candidate that misses it in any fit
is not eligible. The default is the cheapest eligible candidate (fewest forwards, then the lowest mean) within one
standard error of the paired difference to the lowest mean (a forward more must buy more than the inner splits'
noise); the fast recipe, the eligible 1-forward candidate with the lowest mean. Each chosen candidate is then fitted
on the whole dev half; only then is the test half read: npAUC@0.3 with 90% bootstrap intervals over identities, and
the intervals of the chosen recipes minus each reference, on both protocols.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LFW = ROOT.parent / "shared" / "data" / "lfw112"
FLIP = "affine:rot=0,scale=1,flip=1"
SEED = "affine:rot=0.5,scale=1.01,flip=1"

# candidates: name -> (views, signals); layer signals name the recipe's layers as (check layer, FROQ's layers...)
ONE = {
    "norm": ((), ["lognorm"]),
    "ui": ((), ["ui"]),
    "froq": ((), ["froq"]),
    "lognorm+ui": ((), ["lognorm", "ui"]),
    "check": ((), ["obs:0"]),
    "lognorm+ui+check": ((), ["lognorm", "ui", "obs:0"]),
    "lognorm+ui+froq1+check": ((), ["lognorm", "ui", "obs:1", "obs:0"]),
}


def two(view: str, short: str, cos: bool) -> dict:
    c = ["cos:0"] if cos else []
    return {f"{short}:lognorm+ui": ((view,), ["lognorm:all", "ui:all"] + c),
            f"{short}:lognorm+ui+check": ((view,), ["lognorm:all", "ui:all"] + c + ["obs-all:0"]),
            f"{short}:lognorm+ui+froq1+check": ((view,), ["lognorm:all", "ui:all"] + c + ["obs-all:1", "obs-all:0"]),
            f"{short}:cos+check": ((view,), ["cos:0", "obs-all:0"]),
            f"{short}:cos+ui+check": ((view,), ["cos:0", "ui:all", "obs-all:0"])}


def candidates(model: str, default) -> dict:
    out = dict(ONE)
    out |= two(FLIP, "flip", cos=model == "dlib") | two(SEED, "seed", cos=True)
    views = tuple(default.perturb)
    own = [n for n, _ in default.signals]
    out["default"] = (views, own)
    out["default+check"] = (views, own + ["obs-all:0"])
    out["default+froq1+check"] = (views, own + ["obs-all:1", "obs-all:0"])
    return out


def main() -> None:  # noqa: C901 (one experiment, in order)
    from benchmarks.harness import superset
    from benchmarks.harness.models import packaged
    from fiqa_trt.benchmark import provenance
    from fiqa_trt.engine.settings import ScoringSettings
    from fiqa_trt.evaluation import calibrate, degradations, froq, protocols, split
    from fiqa_trt.evaluation.crossquality import CrossQuality, materialise
    from fiqa_trt.quality import Pass, Recipe
    from fiqa_trt.quality.recipe import SEED as SEED_RECIPE
    from fiqa_trt.quality.recipe import STABILITY

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilefacenet,dlib")
    ap.add_argument("--cache", default="/tmp/fiqa-forwards")
    ap.add_argument("--inner", type=int, default=8)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--out", default="benchmarks/results/quality_forwards.json")
    ap.add_argument("--phase", choices=("passes", "select", "report"), default="select",
                    help="passes: embed and cache; select: choose on the dev half; report: the packaged recipes on "
                         "the test half, with their throughput")
    ap.add_argument("--images", type=int, default=512, help="images each method scores for its throughput")
    args = ap.parse_args()
    report_before = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    cache = Path(args.cache)
    keys_all = [k for ks in protocols.identities(LFW).values() for k in ks]
    pairs = protocols.all_mated_pairs(LFW, max_images=20, nonmated=2_000_000, seed=0, keys=keys_all)
    xpairs, xcounts = materialise(pairs, CrossQuality(0.5, 0), cache / "cross-quality")
    cut = split.identity_split(pairs.identities(), 0)
    report = {"benchmark": "benchmarks/quality_forwards.py", "data": str(LFW),
              "protocol": pairs.source, "cross_quality": {"share": 0.5, "seed": 0, "degraded": xcounts},
              "split": cut.describe(), "inner_splits": args.inner, "floor": round(degradations.FLOOR, 4),
              "bootstrap": {"resamples": args.bootstrap, "seed": 0}, "runs": report_before.get("runs", {}),
              "models": report_before.get("models", {})}
    report["runs"][args.phase] = provenance()
    report |= report["runs"].get("report") or report["runs"].get("select") or {}  # the page's: the measuring run
    for model in args.models.split(","):
        path, default, _, runner = packaged(model)
        previous = report_before.get("models", {}).get(model, {}).get("previous_default")
        default_before = Recipe.from_dict(previous, "previous default") if previous else default
        cands = candidates(model, default_before)
        specs = tuple(dict.fromkeys(s for v, _ in cands.values() for s in v))
        plain = calibrate.fit_session(runner, ScoringSettings(seed=0), None, (default.realign, default.realign_each),
                                      perturb=(default.centre_view,)).scorer
        # label-free choices on the dev faces `fiqa-trt calibrate` samples: FROQ's layers, the check layer, the centre
        chosen_file = cache / f"{model}-layers.json"
        if chosen_file.exists():
            chosen = json.loads(chosen_file.read_text())
        else:
            fkeys = calibrate.dev_sample(keys_all, cut, 0, froq.SAMPLE)
            crops, _ = calibrate.aligned_crops(plain, LFW, fkeys, plain.aligner)
            selection = froq.choose_layers(runner, np.stack(crops)).to_dict()
            check = calibrate.check_layer_of(runner, plain, LFW, calibrate.dev_sample(keys_all, cut, 0,
                                                                                      degradations.SAMPLE))
            centre = calibrate.ui_centre(plain, LFW, calibrate.dev_sample(keys_all, cut, 0))
            chosen = {"froq": selection, **check, "centre": list(centre)}
            chosen_file.write_text(json.dumps(chosen))
        froq_layers = tuple(chosen["froq"]["layers"])
        # observed: the check layer and FROQ's; obs:1 reads FROQ's first without the check layer, as calibrate gives it
        layers = tuple(dict.fromkeys((chosen["check_layer"],) + froq_layers))
        assert layers[1] == next(n for n, _ in chosen["froq"]["steps"] if n != chosen["check_layer"])
        big = superset.superset_recipe(default, specs, layers)
        print(model, "views", specs, "layers", layers, flush=True)
        std = superset.embed(runner, big, LFW, list(pairs.keys), cache / f"{model}-standard.npz")
        xq = superset.embed(runner, big, xpairs.root, list(xpairs.keys), cache / f"{model}-cross.npz")
        seed_std = superset.embed(runner, SEED_RECIPE, LFW, list(pairs.keys), cache / f"{model}-seed-standard.npz",
                                  ("off", False))
        seed_xq = superset.embed(runner, SEED_RECIPE, xpairs.root, list(xpairs.keys),
                                 cache / f"{model}-seed-cross.npz", ("off", False))
        check_file = cache / f"{model}-check.npz"
        if check_file.exists():
            with np.load(check_file) as z:
                check = {k: Pass(z[f"{k}_e"], list(range(len(specs))), z[f"{k}_o"], layers)
                         for k in ("clean",) + degradations.KINDS}
        else:
            session = calibrate.fit_session(runner, ScoringSettings(seed=0), big, (big.realign, big.realign_each))
            crops, names = calibrate.aligned_crops(session.scorer, LFW, calibrate.dev_sample(
                keys_all, cut, 0, degradations.SAMPLE), session.scorer.aligner)
            check = {kind: session.scorer.crop_pass(copies, names)
                     for kind, copies in calibrate.degraded_copies(crops, names).items()}
            superset.save(check_file, {f"{k}_{x}": getattr(p, a) for k, p in check.items()
                                       for x, a in (("e", "embeddings"), ("o", "observed"))})
        if args.phase == "passes":
            continue
        passes = {"standard": Pass(std["embeddings"], list(range(len(specs))), std["observed"], layers),
                  "cross": Pass(xq["embeddings"], list(range(len(specs))), xq["observed"], layers)}
        keys, xkeys = std["keys"], xq["keys"]
        froq_recipe = Recipe("froq", (), "weighted_log", signals=(("froq", 1.0),), realign=default.realign,
                             realign_each=default.realign_each, layers=froq_layers)

        def sub(recipe, p: Pass) -> Pass:
            return p.select([specs.index(s) for s in recipe.perturb])

        if args.phase == "select":
            centre = tuple(chosen["centre"])
            recipes = {n: Recipe(n, tuple(v), "weighted_log", signals=tuple((x, 1.0) for x in sig),
                                 realign=default.realign, realign_each=default.realign_each, centre=centre,
                                 layers=layers if any(x.startswith("obs") for x in sig) else
                                 froq_layers if "froq" in sig else ())
                       for n, (v, sig) in cands.items()}
            dev, _ = split.split_pairs(pairs, cut)
            out = {"previous_default": default_before.to_dict(), "views_embedded": list(specs),
                   "check_layer": chosen["check_layer"],
                   "check_layer_agreement": {k: round(v, 3) for k, v in chosen["check_agreement"].items()},
                   "froq_layers": chosen["froq"]["layers"], "froq_correlation": chosen["froq"]["correlation"]}
            out |= choose(model, recipes, passes["standard"], keys, dev, check, sub, args.inner)
            report["models"][model] = out
        else:
            from fiqa_trt.engine.resolve import resolve_recipe

            roles = {"new default": resolve_recipe(None, path)[0], "new fast": resolve_recipe("fast", path)[0],
                     "previous default": default_before, "froq": froq_recipe,
                     "norm": Recipe("norm", (), "weighted_log", signals=(("lognorm", 1.0),), realign=default.realign,
                                    realign_each=default.realign_each),
                     "seed view": replace(STABILITY, realign=default.realign, realign_each=default.realign_each)}
            out = report["models"].setdefault(model, {})
            out["test"] = {}
            for protocol, p, ks, pr, seeds in (("standard", passes["standard"], keys, pairs, seed_std),
                                               ("cross", passes["cross"], xkeys, xpairs, seed_xq)):
                assert list(seeds["keys"]) == list(ks)
                qualities = {n: r.evaluate(sub(r, p)).quality for n, r in roles.items()}
                qualities["seed"] = SEED_RECIPE.evaluate(Pass(seeds["embeddings"], [0])).quality
                out["test"][protocol] = test_figures(pr, p.embeddings[:, 0], ks, qualities, args.bootstrap)
                print(model, protocol, json.dumps(out["test"][protocol]["npauc30"]), flush=True)
                print(model, protocol, json.dumps(out["test"][protocol]["minus_90"]), flush=True)
            out["recipes"] = {n: {"name": r.name, "forwards": r.forwards, "describe": r.describe()}
                              for n, r in roles.items()} | {"seed": {"name": "seed", "forwards": SEED_RECIPE.forwards,
                                                                     "describe": SEED_RECIPE.describe()}}
            out["scores_per_s"] = throughput(runner, path, roles, args.images)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.out}")


def choose(model, recipes: dict, standard, keys, dev, check, sub, inner_splits: int) -> dict:
    """The selection on the dev half (see the module docstring): each candidate's inner cross-validation, the
    default by the one-standard-error rule, the fast recipe."""
    from benchmarks.quality_select import one_se_choice
    from fiqa_trt.evaluation import calibrate, degradations, split
    from fiqa_trt.evaluation.sweep import pair_similarities
    from fiqa_trt.quality import fuse

    originals = standard.embeddings[:, 0]

    def proto(part):
        rows = calibrate.rows_of(part, keys)
        return rows, calibrate.Protocol.of(part, pair_similarities(originals[rows], part.a, part.b))

    inner = []
    for i in range(inner_splits):
        a, b = split.split_pairs(dev, split.identity_split(dev.identities(), seed=100 + i))
        inner.append((proto(a), proto(b)))
    cv, scores_of = {}, {}
    for name, recipe in recipes.items():
        vals = recipe.read_signals(sub(recipe, standard))
        chk = {k: recipe.read_signals(sub(recipe, p)) for k, p in check.items()}
        scores, worst = [], []
        for (fr, fp), (er, ep) in [x for pa, pb in inner for x in ((pa, pb), (pb, pa))]:
            w = calibrate.search({n: v[fr] for n, v in vals.items()}, fp, degraded=chk, floor=degradations.FLOOR)
            scores.append(calibrate.objective(ep, fuse(vals, w)[er]))
            agreed = degradations.agreement(fuse(chk["clean"], w), {k: fuse(v, w) for k, v in chk.items()
                                                                    if k != "clean"})
            worst.append(min(agreed.values()))
        scores_of[name] = np.array(scores)
        cv[name] = {"forwards": recipe.forwards, "signals": [n for n, _ in recipe.signals],
                    "views": list(recipe.perturb), "inner_mean_npauc30": round(float(np.mean(scores)), 4),
                    "inner_sem": round(float(np.std(scores, ddof=1) / np.sqrt(len(scores))), 4),
                    "degradation_agreement_min": round(float(np.min(worst)), 3)}
        print(model, name, cv[name], flush=True)
    eligible = [n for n in cv if cv[n]["degradation_agreement_min"] >= round(degradations.FLOOR, 3)]
    if not eligible:
        raise SystemExit(f"{model}: no candidate meets the degradation floor in every inner fit")
    lowest, chosen = one_se_choice(cv, scores_of, eligible)
    ones = [c for c in eligible if cv[c]["forwards"] == 1]
    fast = min(ones, key=lambda c: cv[c]["inner_mean_npauc30"]) if ones else None
    print(model, "lowest", lowest, "chosen", chosen, "fast", fast, flush=True)
    return {"candidates": cv, "eligible": eligible, "lowest": lowest, "chosen": {"default": chosen, "fast": fast},
            "rule": "eligible: the degradation floor met in every inner fit; default: the fewest forwards, then the "
                    "lowest mean, within one standard error of the paired difference to the lowest mean; fast: the "
                    "lowest mean at one forward"}


def test_figures(pairs, originals, keys, qualities: dict, bootstrap: int) -> dict:
    """The test half of `pairs` (identity split seed 0): each method's npAUC@0.3 and its 90% interval per target FMR,
    and the intervals of the new recipes minus each other method."""
    from benchmarks.harness.figures import npauc_figures
    from fiqa_trt.evaluation import calibrate, split
    from fiqa_trt.evaluation.report import Method, evaluate
    from fiqa_trt.evaluation.sweep import pair_similarities

    _, test = split.split_pairs(pairs, split.identity_split(pairs.identities(), 0))
    rows = calibrate.rows_of(test, keys)
    sim = pair_similarities(originals[rows], test.a, test.b)
    compare = [(a, b) for a in ("new default", "new fast") for b in qualities if b != a and b != "new fast"]
    result = evaluate(test, sim, [Method(n, "engine", n, np.asarray(q, np.float64)[rows])
                                  for n, q in qualities.items()], fmrs=calibrate.FMRS, limits=(calibrate.LIMIT,),
                      grid_max=calibrate.LIMIT, bootstrap=bootstrap, bootstrap_seed=0,
                      compare=compare if bootstrap else [])
    return {"pairs": test.describe()} | npauc_figures(result, by_pair=True)


def throughput(runner, path, roles: dict, images: int) -> dict:
    """Quality scores/s of each method end to end on the first `images` shared LFW crops, one after the other on
    the same runner (`fiqa_trt.benchmark.recipe_rows`)."""
    import tempfile

    from fiqa_trt.benchmark import recipe_rows
    from fiqa_trt.engine.inputs import list_items
    from fiqa_trt.engine.recipes import recipe_json

    items = list_items(str(LFW))[:images]
    with tempfile.TemporaryDirectory() as tmp:
        options = {"seed": "seed"}
        for name, recipe in roles.items():
            options[name] = str(Path(tmp) / f"{name.replace(' ', '-')}.json")
            Path(options[name]).write_text(recipe_json({"recipe": recipe.to_dict()}))
        rows = recipe_rows(runner, items, list(options.values()), str(path), 32)
    return {name: {"scores_per_s": row["quality_scores_per_s"], "forwards": row["forwards_per_score"]}
            for name, row in zip(options, rows)}


if __name__ == "__main__":
    main()
