"""Each model's default recipe measured through the engine itself, with the shipped ISO/IEC 29794-1 protocol: the
figures of the README's quality table and of the registry's recipe records.

    python benchmarks/quality_iso.py [--models mobilefacenet,dlib] [--cache /tmp/fiqa-quality-iso]
                                     [--bootstrap 1000] [--out benchmarks/results/quality_iso.json]
                                     [--write-recipes]

Per model, every shared LFW crop (13,233) goes through `engine.scorer.Scorer` (OpenVINO, the precision `auto`
picks) with the model's default recipe from the registry (its signals and views chosen by
benchmarks/quality_select.py): the template check on a seeded sample (`--realign auto`: one O-Net median transform,
the crops realigned with it), the recipe's views made by the DALI pipeline, one runner call per batch for the
original and its views. A recipe with a ui signal gets its centre first, from the engine's views of dev-half crops
only (`evaluation.calibrate.ui_centre`: the recipe's `centre_view`, e.g. the crops shrunk to 10 x 10 pixels, of at
most 2,000 seeded dev images). For the MobileFaceNet also the seed recipe on the crops as they are (`--recipe
seed`: the seed's score and the as-is embeddings). Embeddings and signals are cached in --cache.
`--write-recipes` writes the refitted recipe (centre, weights, calibration, figures) to the package's recipe file
of the model (`fiqa_trt/weights/recipes/`), which the registry serves as the model's default.

Protocol (`evaluation.protocols.all_mated_pairs`, `split`, `edc`, `bootstrap`): the 9,164 crops of identities with
two or more images, at most 20 per identity, every mated pair (27,726), 2,000,000 random non-mated pairs (seed 0);
the identity split (seed 0) into dev and test halves. The recipe's weights are refitted on the dev half
(`evaluation.calibrate.search`) on these engine signals, verification as `eval --realign auto` compares (the
template-aligned originals), and the test half reported with them: normalised pAUC@0.3 of the EDC
over mated comparisons at the threshold fixed at 0% discard, FMR 1e-3 and 1e-4, with 90% bootstrap intervals
(identities resampled) of each value and of the default's difference to each reference. Verification on the
template-aligned originals and, with the same weights, on the crops as they are (only the recogniser's input
differs). The
0-100 calibration is the fitted quality's p1 and p99 over all 13,233 template-aligned crops; the named recipes
`seed` (crops as they are) and `stability` (template-aligned) get theirs from passes of their own. Every weight fit
is constrained by the degradation check (`evaluation.degradations`: 400 seeded dev-half crops, realigned, then
blurred, shrunk to 18 px, noised or their eyes covered, through the engine; the fused quality must drop for at least
2/3 of them under each kind), as in benchmarks/quality_select.py and `fiqa-trt calibrate`.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
LFW = SHARED / "data" / "lfw112"
FMRS = (1e-3, 1e-4)


def recipe_tag(recipe) -> str:
    """A short hash of what a recipe's signals depend on (views, signal names, centre, realignment)."""
    import hashlib

    key = json.dumps([recipe.perturb, [n for n, _ in recipe.signals], recipe.centre, recipe.realign,
                      recipe.realign_each])
    return hashlib.blake2b(key.encode(), digest_size=6).hexdigest()


def engine_pass(runner, items, recipe, aligner, cache: Path, tag: str):
    """(originals (N, D), signals {name: (N,)}, seconds) of one engine pass with `recipe`, cached."""
    from fiqa_trt import kernels
    from fiqa_trt.engine.recipes import forward_norms
    from fiqa_trt.engine.scorer import Scorer
    from fiqa_trt.evaluation.calibrate import pass_signals

    tag = f"{tag}_{recipe_tag(recipe)}"
    files = {"originals": cache / f"{tag}_originals.npy", "signals": cache / f"{tag}_signals.npz"}
    if all(f.is_file() for f in files.values()):
        sig = np.load(files["signals"])
        return np.load(files["originals"]), {k: sig[k] for k in sig.files}, float(sig["seconds"])
    scorer = Scorer(runner, recipe=recipe, aligner=aligner, batch_size=32)
    originals, parts, started = [], [], time.perf_counter()
    for batch in scorer.embed(items):
        if any(it.error for it in batch.items):
            raise SystemExit(f"an LFW image failed: {next(it for it in batch.items if it.error)}")
        emb = batch.embeddings
        originals.append(emb[:, 0].astype(np.float32))
        part = pass_signals(recipe, emb, scorer.view_specs) if recipe.fusion == "weighted_log" else \
            {"stability": kernels.quality(emb, recipe.agg)[1].astype(np.float64)}  # the seed's stability score
        part["norm"] = np.log(forward_norms(emb)[:, 0].astype(np.float64))
        parts.append(part)
    seconds = time.perf_counter() - started
    sig = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    cache.mkdir(parents=True, exist_ok=True)
    np.save(files["originals"], np.concatenate(originals))
    np.savez(files["signals"], seconds=seconds, **sig)
    print(f"  {tag}: {len(items)} images, {1 + len(scorer.views)} forwards each, {seconds:.0f} s", flush=True)
    return np.concatenate(originals), sig, seconds


def engine_check(runner, recipe, keys, halves, aligner, cache: Path) -> dict:
    """The degradation check's signals (`evaluation.calibrate.degradation_signals`) of 400 seeded dev-half crops
    through the engine with `recipe`, cached by the recipe's signal tag."""
    from fiqa_trt.engine.scorer import Scorer
    from fiqa_trt.evaluation import calibrate, degradations

    f = cache / f"check_{recipe_tag(recipe)}.npz"
    if f.is_file():
        data = np.load(f)
        out: dict = {}
        for name in data.files:
            kind, signal = name.split("|", 1)
            out.setdefault(kind, {})[signal] = data[name]
        return out
    sample = calibrate.dev_sample(keys, halves, seed=0, count=degradations.SAMPLE)
    scorer = Scorer(runner, recipe=recipe, batch_size=32)
    out = calibrate.degradation_signals(scorer, recipe, LFW, sample, aligner, seed=0)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(f, **{f"{kind}|{signal}": v for kind, sig in out.items() for signal, v in sig.items()})
    return out


def write_recipe(recipe, out: dict, weights: dict, path: Path) -> None:
    """The refitted recipe (weights, centre, calibration, figures of the template-aligned verification) into the
    package's recipe file of the model's registry record."""
    from fiqa_trt.engine.recipes import recipe_json
    from fiqa_trt.weights import registry

    record = registry.lookup(out["sha256"])
    figures = out["verification"]["template-aligned"]
    fitted = replace(recipe.with_weights(weights), calibration=tuple(out["calibration_p1_p99"]), figures={
        "protocol": "shared LFW, all-mated (evaluation.protocols), test half of identity split seed 0, verification "
                    "on the template-aligned crops (eval --realign auto); benchmarks/quality_iso.py",
        "centre": out["centre"], "degradation_check": out["degradation_check"],
        "test_npauc30": figures["test_npauc30"]["default"],
        "references_test_npauc30": {k: v for k, v in figures["test_npauc30"].items() if k != "default"},
        "difference_default_minus_90": figures["difference_default_minus_90"]})
    target = registry.RECIPE_DIR / f"{record.name}.json"
    target.write_text(recipe_json({"model": record.name, "sha256": out["sha256"], "written_by":
                                   "benchmarks/quality_iso.py --write-recipes", "recipe": fitted.to_dict(),
                                   "calibrations": out["calibrations_of_named_recipes_p1_p99"]}))
    print(f"written {target}", flush=True)


def main() -> None:
    from fiqa_trt.benchmark import machine
    from fiqa_trt.engine import recipes
    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.engine.models import default_model_path
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.engine.template import realigner_for
    from fiqa_trt.evaluation import bootstrap, calibrate, degradations, edc, protocols, split, sweep
    from fiqa_trt.files import sha256_of

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilefacenet,dlib")
    ap.add_argument("--cache", default="/tmp/fiqa-quality-iso")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", default="benchmarks/results/quality_iso.json")
    ap.add_argument("--write-recipes", action="store_true", help="write each refitted recipe to the package")
    args = ap.parse_args()
    folders = protocols.identities(LFW)
    every = [k for ks in folders.values() for k in ks]
    keys = [k for ks in folders.values() if len(ks) >= 2 for k in ks]
    position = {k: i for i, k in enumerate(every)}
    rows = np.array([position[k] for k in keys])  # the protocol's images among all crops
    index = {k: i for i, k in enumerate(keys)}
    ident = np.array([k.split("/")[0] for k in keys])
    pairs = protocols.all_mated_pairs(LFW, max_images=20, nonmated=2_000_000, seed=0, keys=keys)
    halves = split.identity_split(pairs.identities(), seed=0)
    dev, test = split.split_pairs(pairs, halves)
    dev_rows, test_rows, all_rows = (np.array([index[k] for k in part.keys]) for part in (dev, test, pairs))
    items = [Item(str(LFW / k), k) for k in every]
    report = {"benchmark": "benchmarks/quality_iso.py", "machine": machine(), "pairs": pairs.source,
              "split": halves.describe(), "dev_pairs": dev.describe(), "test_pairs": test.describe(), "models": {}}
    paths = {"mobilefacenet": SHARED / "models/faceplugin-mobilefacenet/fr_feature.onnx"}
    for model in args.models.split(","):
        path = paths.get(model) or default_model_path()
        runner = load_runner(str(path), "openvino", "auto")
        recipe, source = recipes.resolve(None, path)
        if source != "model registry":  # a recipe the user calibrated would otherwise be written into the package
            raise SystemExit(f"{model}: the default recipe comes from {source}, not the model registry: move it away")
        cache = Path(args.cache) / model
        aligner, check = realigner_for(items, runner.config.input_size, recipe.realign, 0, recipe.realign_each)
        print(f"{model}: {recipe.describe()} ({source}); {check}", flush=True)
        centre_note = None
        if recipe.reads_centre:  # from dev-half crops only, through the engine (cached: it depends on nothing else)
            sample = calibrate.dev_sample(every, halves, seed=0)
            centre_file = cache / (f"centre_{sha256_of(path)[:12]}_{recipe.realign}_"
                                   f"{recipe.centre_view.replace(':', '_').replace('=', '')}.npy")
            if not centre_file.is_file():
                cache.mkdir(parents=True, exist_ok=True)
                np.save(centre_file, np.array(calibrate.ui_centre(runner, LFW, sample, recipe.centre_view, aligner)))
            recipe = replace(recipe, centre=tuple(float(x) for x in np.load(centre_file)))
            centre_note = f"{recipe.centre_view} views of {len(sample)} dev-half crops (seed 0), template-aligned"
        aligned, sig, seconds = engine_pass(runner, items, recipe, aligner, cache, "default")
        bases = {"template-aligned": aligned[rows]}
        references = {"norm (template-aligned)": sig["norm"][rows]}
        # the 0-100 ends of the named stability recipes on this model, each on its own alignment path: `seed` on the
        # crops as they are (it never realigns), `stability` (the seed's view) on the template-aligned crops
        asis, seed_sig, _ = engine_pass(runner, items, recipes.SEED, None, cache, "seed")
        _, stability_sig, _ = engine_pass(runner, items, recipes.STABILITY, aligner, cache, "stability")
        out_calibrations = {name: [round(float(x), 6) for x in np.percentile(q["stability"], [1, 99])]
                            for name, q in (("seed", seed_sig), ("stability", stability_sig))}
        if model == "mobilefacenet":
            bases["as-is"] = asis[rows]
            references |= {"seed recipe (as-is)": seed_sig["stability"][rows], "norm (as-is)": seed_sig["norm"][rows]}
        else:
            references |= {"seed view (template-aligned)": sig["cos:0"][rows]}  # the recipe's spec 0 is the seed's
        names = [n for n, _ in recipe.signals]
        values = {n: sig[n][rows] for n in names}
        out = {"sha256": sha256_of(path), "recipe_source": source, "template_check": check, "centre": centre_note,
               "engine_pass_seconds": round(seconds, 1), "forwards_per_image": 1 + len(recipe.perturb),
               "verification": {}}
        emb = bases["template-aligned"]  # the weights: fitted once, on the dev half as `eval --realign auto` sees it
        dev_proto = calibrate.protocol_from_pairs(emb[dev_rows], ident[dev_rows], np.ones(len(dev_rows), bool),
                                                  dev.a, dev.b, dev.mated)
        check = engine_check(runner, recipe, keys, halves, aligner, cache)
        weights = calibrate.search({n: v[dev_rows] for n, v in values.items()}, dev_proto, degraded=check,
                                   floor=degradations.FLOOR)
        fused = calibrate.fuse(values, weights)
        out["degradation_check"] = {"faces": int(len(check["clean"][names[0]])), "floor": round(degradations.FLOOR, 4),
                                    "agreement": {k: round(v, 3) for k, v in degradations.agreement(
                                        calibrate.fuse(check["clean"], weights),
                                        {k: calibrate.fuse(v, weights) for k, v in check.items()
                                         if k != "clean"}).items()},
                                    "agreement_of_each_signal": {n: {k: round(v, 3) for k, v in degradations.agreement(
                                        check["clean"][n], {k: v[n] for k, v in check.items() if k != "clean"}).items()}
                                        for n in names}}
        print(model, "degradation check", json.dumps(out["degradation_check"]["agreement"]), flush=True)
        everything = calibrate.fuse({n: sig[n] for n in names}, weights)
        out["weights_fitted_on_dev"] = {k: round(w, 6) for k, w in weights.items()}
        out["calibration_p1_p99"] = [round(float(x), 6) for x in np.percentile(everything, [1, 99])]
        out["calibrations_of_named_recipes_p1_p99"] = out_calibrations
        for basis, emb in bases.items():
            qualities = {"default": fused[test_rows]} | {k: v[test_rows] for k, v in references.items()}
            sim = sweep.pair_similarities(emb[test_rows], test.a, test.b)
            figures = {name: {f"{fmr:.0e}": round(edc.edc(sim, test.mated, edc.pair_quality(q[test.a], q[test.b]),
                                                          fmr).normalised_pauc(0.3), 4) for fmr in FMRS}
                       for name, q in qualities.items()}
            res = bootstrap.identity_resamples(test, count=args.bootstrap, seed=0)
            v = bootstrap.resampled_paucs(res, test, sim, qualities, fmrs=FMRS, limits=(0.3,))
            interval = lambda x: [round(y, 4) for y in bootstrap.interval(x)]  # noqa: E731
            out["verification"][basis] = {
                "test_npauc30": figures,
                "test_npauc30_90": {n: {f"{f:.0e}": interval(v[(n, f, 0.3)]) for f in FMRS} for n in qualities},
                "difference_default_minus_90": {r: {f"{f:.0e}": interval(v[("default", f, 0.3)] - v[(r, f, 0.3)])
                                                    for f in FMRS} for r in references}}
            print(model, basis, json.dumps(figures), json.dumps(out["verification"][basis]
                                                                  ["difference_default_minus_90"]), flush=True)
            # every pair of the protocol, both halves: the setting of issue 15's table of other methods (trained
            # FIQA models' figures). The dev half is where the weights and the centre were fitted: not a held-out
            # figure, for that comparison only
            sim_all = sweep.pair_similarities(emb[all_rows], pairs.a, pairs.b)
            full = {"default": fused[all_rows]} | {k: v[all_rows] for k, v in references.items()}
            out["verification"][basis]["all_pairs_npauc30_dev_included"] = {
                name: {f"{fmr:.0e}": round(edc.edc(sim_all, pairs.mated, edc.pair_quality(q[pairs.a], q[pairs.b]),
                                                   fmr).normalised_pauc(0.3), 4) for fmr in FMRS}
                for name, q in full.items()}
        report["models"][model] = out
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        if args.write_recipes:
            write_recipe(recipe, out, weights, path)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
