"""How each model's default recipe was chosen: candidates compared on the dev half only, the winner
reported on the test half, with the shipped protocol (`evaluation.protocols.all_mated_pairs`, `split`, `edc`,
`bootstrap`).

    python benchmarks/quality_select.py [--cache /tmp/fiqa-quality-research] [--models mobilefacenet,dlib]
                                        [--inner 8] [--bootstrap 1000] [--out benchmarks/results/quality_select.json]

Data: the 9,164 shared LFW crops of identities with two or more images, put on the ArcFace template (moved 8 px
right, as `--realign auto` finds), embedded (OpenVINO bf16) in the OpenCV views of benchmarks/quality_research.py
(cached there). Pairs: all-mated (at most 20 images per identity, 2,000,000 non-mated pairs, seed 0), the identity
split of `evaluation.split` (seed 0); verification on the template-aligned originals (what `eval --realign auto`
compares).

Selection, on the dev half only: each candidate (a set of signals) is scored by inner cross-validation, 8 seeded
half splits of the dev identities, weights (and the ui centre) fitted on one inner half and the mean normalised
pAUC@0.3 over FMR 1e-3 and 1e-4 measured on the other, both ways (16 evaluations). Every weight fit is constrained
by the degradation check (`evaluation.degradations`): on 400 seeded dev faces, each of five synthetic degradations
(blur sigma 2 and 4, 18 px, noise sigma 25, eyes covered) must lower the fused quality for at least 2/3 of the faces
(`calibrate.search(degraded=..., floor=...)`); a candidate that misses it in any inner fit is not eligible. Within
the forward budget (5 forwards per image), the eligible candidate with the lowest mean is found; the one chosen is
the cheapest (fewest forwards, then the lowest mean) whose mean is within one standard error of the paired
difference to that lowest (the one-standard-error rule: a forward more must buy more than the inner splits' noise;
the 16 evaluations share their data, so that standard error is an optimistic one). Its weights and centre are then
fitted on the whole dev half. Only then is the test half read: the chosen candidate's npAUC@0.3 and the 90%
bootstrap interval (identities resampled) of its difference to the references. The same recipe refitted on the dev
halves of split seeds 1-4 is reported on their test halves too, as a check that the gain is not one split's.

Signals: `norm` the log-norm of the original's raw embedding; `ln[v,...]` the mean log-norm over the original and
the views v (the recipe signal `lognorm:all`); `c:v` the log-cosine of the original with view v (`cos:<i>`);
`ui@N` and `ui[v,...]@N` the log of 1 - the cosine of the original (or the mean cosine over the original and the
views v) with the centre of the unrecognisable identities, the unit mean embedding of the fit images shrunk to N x N
pixels (recipe signals `ui`, `ui:all`; the centre comes from the images the weights are fitted on, never the
evaluated ones).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
LFW = SHARED / "data" / "lfw112"
MAX_FORWARDS = 5
FLOOR = 2 / 3  # the degradation floor this selection ran under (the product's own: `degradations.FLOOR`)
FMRS = (1e-3, 1e-4)
SHORT = {"f": "flip", "s": "seed"}  # view names in the ln[...] candidates

# candidates per model: (signals, references to report against)
CANDIDATES = {
    "mobilefacenet": [["ui@10"], ["ln[f]", "ui[f]@8"], ["ln[f]", "ui[f]@10"], ["ln[f]", "ui[f]@12"], ["norm", "ui@10"],
                      ["ln[f]", "ui[f]@10", "c:flip"], ["ln[f,s]", "ui[f,s]@10"], ["ln[f,s]", "ui[f,s]@10", "c:seed"],
                      ["ln[f,s,x7f,x9f]", "ui[f,s,x7f,x9f]@10"], ["ln[f,x7f,x9f]", "ui[f,x7f,x9f]@10"],
                      ["ln[f,s,x7f,x9f]", "ui[f]@10"], ["ln[f,s,x7f,x9f]", "ui[f,s,x7f,x9f]@10", "c:seed"],
                      ["norm"], ["ln[f]"], ["ln[f,s]"], ["ln[f,x7f]"], ["ln[f,x7f,x9f]"], ["ln[f,s,x7f,x9f]"],
                      ["ln[x7,x9]"], ["ln[f,y1,ym1]"], ["ln[f,x7,x9,x7f]"], ["norm", "c:flip"], ["ln[f]", "c:flip"],
                      ["ln[f,s]", "c:flip"], ["ln[f,s]", "c:seed"], ["ln[f,s]", "c:flip", "c:seed"],
                      ["ln[f,x7f]", "c:flip"], ["ln[f,x7f,x9f]", "c:flip"], ["ln[f,s,x7f,x9f]", "c:flip", "c:seed"],
                      ["c:flip"], ["c:seed"]],
    "dlib": [["c:seed"], ["c:flip"], ["c:seed", "c:rot"], ["c:flip", "c:rot"], ["c:seed", "c:flip", "c:rot"],
             ["ln[f,s,rot]", "c:seed", "c:rot"], ["c:seed", "c:rotm3", "c:rot"], ["c:seed", "c:rot6"],
             ["c:seed", "c:s95"], ["c:seed", "c:s90"], ["c:seed", "c:s85"], ["c:seed", "c:s105"], ["c:seed", "c:s95f"],
             ["c:seed", "c:move"], ["c:seed", "c:blur"], ["c:seed", "c:flip_rot"], ["c:seed", "c:rot", "c:s95"],
             ["c:seed", "c:rot6", "c:s95"], ["c:seed", "c:rot6", "c:s90"], ["c:seed", "c:rot", "c:s90"],
             ["c:seed", "c:s95", "c:s90"], ["c:seed", "c:rot", "c:move"], ["c:seed", "c:rot", "c:rotm3", "c:s95"],
             ["ui@10"], ["c:seed", "ui[s]@10"], ["c:flip", "ui[f]@10"], ["c:seed", "c:rot6", "ui[s,rot6]@10"],
             ["c:seed", "c:rot", "ui[s,rot]@10"], ["c:seed", "c:rot6", "ui@10"], ["c:seed", "c:rot6", "c:s95", "ui[s,rot6,s95]@10"],
             ["c:seed", "c:rot6", "c:s95", "ui@10"], ["c:flip", "c:rot6", "c:s95", "ui[f,rot6,s95]@10"]],
}
REFERENCES = {"mobilefacenet": ["norm", "c:seed"], "dlib": ["c:seed", "norm"]}
MODELS = {"mobilefacenet": lambda: SHARED / "models/faceplugin-mobilefacenet/fr_feature.onnx"}


def _research():
    spec = importlib.util.spec_from_file_location("quality_research", Path(__file__).parent / "quality_research.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bracketed(s: str) -> list[str]:
    """The views named in a signal's brackets (`ln[f,s]`, `ui[f]@10`), quality_research names."""
    inside = s[s.index("[") + 1 : s.index("]")] if "[" in s else ""
    return [SHORT.get(n, n) for n in inside.split(",") if n]


def views_of(signals: list[str]) -> list[str]:
    """The OpenCV views (quality_research names, without the re_ prefix) a candidate's forwards need (the centre's
    low-resolution views are not forwards of the recipe: see `centre_views`)."""
    out = []
    for s in signals:
        out += [SHORT.get(s[2:], s[2:])] if s.startswith("c:") else _bracketed(s)
    return list(dict.fromkeys(out))


def centre_views(signals: list[str]) -> list[str]:
    return list(dict.fromkeys(f"low{s.split('@')[1]}" for s in signals if s.startswith("ui")))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def centres_of(signals: list[str], emb: dict[str, np.ndarray], fit_rows: np.ndarray) -> dict[str, np.ndarray]:
    """Per centre size N of the ui signals: the unit mean of the `fit_rows`' N-pixel views."""
    out = {}
    for n in {s.split("@")[1] for s in signals if s.startswith("ui")}:
        centre = unit(emb[f"re_low{n}"][fit_rows]).mean(axis=0)
        out[n] = centre / np.linalg.norm(centre)
    return out


def signal_values(signals: list[str], emb: dict[str, np.ndarray], centres: dict[str, np.ndarray]
                  ) -> dict[str, np.ndarray]:
    """Per-image values of each signal over the images of `emb` (view name -> embeddings), ui with `centres`: the
    recipe signal it stands for (`quality.signals`), read off a pass of the original and the signal's views."""
    from fiqa_trt.quality import Pass, Recipe

    out = {}
    for s in signals:
        if s.startswith("c:"):
            views, name = [SHORT.get(s[2:], s[2:])], "cos:0"
        elif s == "norm":
            views, name = [], "lognorm"
        elif s.startswith("ln["):
            views, name = _bracketed(s), "lognorm:all"
        else:  # ui@N (the original alone) or ui[v,...]@N (the mean cosine over the original and the views)
            views, name = _bracketed(s), "ui:all" if "[" in s else "ui"
        centre = centres[s.split("@")[1]] if s.startswith("ui") else None
        recipe = Recipe(s, tuple(views) or ("original",), "weighted_log", signals=((name, 1.0),),
                        centre=None if centre is None else tuple(centre))
        stacked = np.stack([emb["re"]] + [emb[f"re_{v}"] for v in views], axis=1)
        out[s] = recipe.read_signals(Pass(stacked, list(range(len(views)))), [name])[name]
    return out


def forwards(signals: list[str]) -> int:
    return 1 + len(views_of(signals))


def one_se_choice(cv: dict[str, dict], scores: dict[str, np.ndarray], allowed: list[str]) -> tuple[str, str]:
    """(lowest, chosen): the candidate with the lowest inner mean, and the cheapest (fewest forwards, then lowest
    mean) whose paired difference to it is within one standard error."""
    lowest = min(allowed, key=lambda c: cv[c]["inner_mean_npauc30"])
    near = []
    for c in allowed:
        d = scores[c] - scores[lowest]
        se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if c != lowest else 0.0
        cv[c]["paired_difference_to_lowest"] = [round(float(d.mean()), 4), round(se, 4)]
        if d.mean() <= se:
            near.append(c)
    chosen = min(near, key=lambda c: (cv[c]["forwards"], cv[c]["inner_mean_npauc30"]))
    return lowest, chosen


def main() -> None:
    from fiqa_trt.engine.models import default_model_path
    from fiqa_trt.evaluation import bootstrap, calibrate, degradations, edc, protocols, split, sweep
    from fiqa_trt.evaluation.protocols import identities
    from fiqa_trt.quality import fuse

    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/tmp/fiqa-quality-research")
    ap.add_argument("--models", default="mobilefacenet,dlib")
    ap.add_argument("--inner", type=int, default=8)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", default="benchmarks/results/quality_select.json")
    args = ap.parse_args()
    qr = _research()
    keys = [k for ks in identities(LFW).values() if len(ks) >= 2 for k in ks]
    pairs = protocols.all_mated_pairs(LFW, max_images=20, nonmated=2_000_000, seed=0, keys=keys)

    def proto(emb, part):
        rows = calibrate.rows_of(part, keys)
        return rows, calibrate.Protocol.of(part, sweep.pair_similarities(emb[rows], part.a, part.b))

    def fitted(names, rows, p):
        """Weights (and centres) fitted on the images `rows` with protocol `p`, under the degradation check of the
        dev sample; the fused quality of every image and the check's agreement."""
        centres = centres_of(names, emb, rows)
        values = signal_values(names, emb, centres)
        check = {kind: signal_values(names, e, centres) for kind, e in degraded.items()}
        weights = calibrate.search({n: values[n][rows] for n in names}, p, degraded=check, floor=FLOOR)
        agreed = degradations.agreement(fuse(check["clean"], weights),
                                        {k: fuse(v, weights) for k, v in check.items() if k != "clean"})
        return weights, sum(w * values[n] for n, w in weights.items()), agreed

    report = {"benchmark": "benchmarks/quality_select.py", "images": len(keys), "pairs": pairs.source,
              "machine": platform.processor() or platform.machine(), "inner_splits": args.inner,
              "max_forwards": MAX_FORWARDS, "models": {}}
    for model in args.models.split(","):
        path = MODELS.get(model, default_model_path)()
        candidates = CANDIDATES[model]
        needed = list(dict.fromkeys(v for c in candidates + [REFERENCES[model]]
                                    for v in views_of(c) + centre_views(c)))
        emb = {v: qr.embedded(model, path, keys, v, Path(args.cache), "bf16") for v in ["re"] + [f"re_{n}" for n in needed]}
        halves = split.identity_split(pairs.identities(), seed=0)
        def degraded_of(cut, views):
            """The degradation check's embeddings: 400 seeded dev faces of the split `cut`, in `views`."""
            sample = calibrate.dev_sample(keys, cut, seed=0, count=degradations.SAMPLE)
            return {kind: {("re" if not v else f"re_{v}"): qr.degraded_embedded(model, path, sample, kind, v,
                                                                                Path(args.cache), "bf16")
                           for v in [""] + views} for kind in ["clean", *degradations.BASE_KINDS]}

        degraded = degraded_of(halves, list(dict.fromkeys(v for c in candidates + [REFERENCES[model]]
                                                          for v in views_of(c))))
        dev, test = split.split_pairs(pairs, halves)
        inner = []
        for i in range(args.inner):
            a, b = split.split_pairs(dev, split.identity_split(dev.identities(), seed=100 + i))
            inner.append((proto(emb["re"], a), proto(emb["re"], b)))
        cv, all_scores = {}, {}
        for combo in candidates:
            runs = [(fitted(combo, fr, fp), er, ep)
                    for (fr, fp), (er, ep) in [x for pa, pb in inner for x in ((pa, pb), (pb, pa))]]
            scores = np.array([calibrate.objective(ep, fit[1][er]) for fit, er, ep in runs])
            worst = [min(fit[2].values()) for fit, _, _ in runs]
            all_scores["+".join(combo)] = scores
            cv["+".join(combo)] = {"forwards": forwards(combo), "inner_mean_npauc30": round(float(np.mean(scores)), 4),
                                   "inner_sem": round(float(np.std(scores, ddof=1) / np.sqrt(len(scores))), 4),
                                   "degradation_agreement_min": round(float(np.min(worst)), 3)}
            print(model, "+".join(combo), cv["+".join(combo)], flush=True)
        allowed = ["+".join(c) for c in candidates if forwards(c) <= MAX_FORWARDS
                   and cv["+".join(c)]["degradation_agreement_min"] >= round(FLOOR, 3)]
        lowest, chosen = one_se_choice(cv, all_scores, allowed)
        best = chosen.split("+")
        out = {"candidates": cv, "lowest": lowest, "chosen": chosen, "rule": "one standard error of the paired "
               "difference to the lowest; then fewest forwards", "forwards": forwards(best), "views": views_of(best),
               "centre_views": centre_views(best), "splits": {}}
        for seed in range(5):
            halves = split.identity_split(pairs.identities(), seed=seed)
            dev, test = split.split_pairs(pairs, halves)
            if seed:  # each split's refit is checked on dev faces of its own
                degraded = degraded_of(halves, views_of(best))
            (dr, dp), (tr, _) = proto(emb["re"], dev), proto(emb["re"], test)
            weights, q, agreed = fitted(best, dr, dp)
            refs = signal_values(REFERENCES[model], emb, centres_of(REFERENCES[model], emb, dr))
            qualities = {"chosen": q[tr]} | {ref: refs[ref][tr] for ref in REFERENCES[model]}
            sim = sweep.pair_similarities(emb["re"][tr], test.a, test.b)
            row = {"weights": {k: round(v, 6) for k, v in weights.items()},
                   "degradation_agreement": {k: round(v, 3) for k, v in agreed.items()}, "test_npauc30": {
                name: {f"{fmr:.0e}": round(edc.edc(sim, test.mated, edc.pair_quality(v[test.a], v[test.b]), fmr)
                                           .normalised_pauc(0.3), 4) for fmr in FMRS} for name, v in qualities.items()}}
            if seed == 0:
                res = bootstrap.identity_resamples(test, count=args.bootstrap, seed=0)
                v = bootstrap.resampled_paucs(res, test, sim, qualities, fmrs=FMRS, limits=(0.3,))
                row["difference_chosen_minus_90"] = {
                    ref: {f"{fmr:.0e}": [round(x, 4) for x in bootstrap.interval(v[("chosen", fmr, 0.3)]
                                                                                 - v[(ref, fmr, 0.3)])]
                          for fmr in FMRS} for ref in REFERENCES[model]}
                row["test_npauc30_90"] = {name: {f"{fmr:.0e}": [round(x, 4) for x in bootstrap.interval(
                    v[(name, fmr, 0.3)])] for fmr in FMRS} for name in qualities}
            out["splits"][str(seed)] = row
            print(model, "split", seed, json.dumps(row["test_npauc30"]), flush=True)
        report["models"][model] = out
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
