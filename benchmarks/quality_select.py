"""How each model's default recipe was chosen (issue 15): candidates compared on the dev half only, the winner
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
half splits of the dev identities, weights fitted (`evaluation.calibrate.search`) on one inner half and the mean
normalised pAUC@0.3 over FMR 1e-3 and 1e-4 measured on the other, both ways. The lowest mean within the forward
budget (5 forwards per image) wins; its weights are then fitted on the whole dev half. Only then is the test half
read: the winner's npAUC@0.3 and the 90% bootstrap interval (identities resampled) of its difference to the
references. The same recipe refitted on the dev halves of split seeds 1-4 is reported on their test halves too, as a
check that the gain is not one split's.

Signals: `norm` the log-norm of the original's raw embedding; `ln[v,...]` the mean log-norm over the original and
the views v (the recipe signal `lognorm:all`); `c:v` the log-cosine of the original with view v (`cos:<i>`).
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
FMRS = (1e-3, 1e-4)
SHORT = {"f": "flip", "s": "seed"}  # view names in the ln[...] candidates

# candidates per model: (signals, references to report against)
CANDIDATES = {
    "mobilefacenet": [["norm"], ["ln[f]"], ["ln[f,s]"], ["ln[f,x7f]"], ["ln[f,x7f,x9f]"], ["ln[f,s,x7f,x9f]"],
                      ["ln[x7,x9]"], ["ln[f,y1,ym1]"], ["ln[f,x7,x9,x7f]"], ["norm", "c:flip"], ["ln[f]", "c:flip"],
                      ["ln[f,s]", "c:flip"], ["ln[f,s]", "c:seed"], ["ln[f,s]", "c:flip", "c:seed"],
                      ["ln[f,x7f]", "c:flip"], ["ln[f,x7f,x9f]", "c:flip"], ["ln[f,s,x7f,x9f]", "c:flip", "c:seed"],
                      ["c:flip"], ["c:seed"]],
    "dlib": [["c:seed"], ["c:flip"], ["c:seed", "c:rot"], ["c:flip", "c:rot"], ["c:seed", "c:flip", "c:rot"],
             ["ln[f,s,rot]", "c:seed", "c:rot"], ["c:seed", "c:rotm3", "c:rot"], ["c:seed", "c:rot6"],
             ["c:seed", "c:s95"], ["c:seed", "c:s90"], ["c:seed", "c:s85"], ["c:seed", "c:s105"], ["c:seed", "c:s95f"],
             ["c:seed", "c:move"], ["c:seed", "c:blur"], ["c:seed", "c:flip_rot"], ["c:seed", "c:rot", "c:s95"],
             ["c:seed", "c:rot6", "c:s95"], ["c:seed", "c:rot6", "c:s90"], ["c:seed", "c:rot", "c:s90"],
             ["c:seed", "c:s95", "c:s90"], ["c:seed", "c:rot", "c:move"], ["c:seed", "c:rot", "c:rotm3", "c:s95"]],
}
REFERENCES = {"mobilefacenet": ["norm", "c:seed"], "dlib": ["c:seed", "norm"]}
MODELS = {"mobilefacenet": lambda: SHARED / "models/faceplugin-mobilefacenet/fr_feature.onnx"}


def _research():
    spec = importlib.util.spec_from_file_location("quality_research", Path(__file__).parent / "quality_research.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def views_of(signals: list[str]) -> list[str]:
    """The OpenCV views (quality_research names, without the re_ prefix) a candidate needs."""
    out = []
    for s in signals:
        names = s[3:-1].split(",") if s.startswith("ln[") else [s[2:]] if s.startswith("c:") else []
        out += [SHORT.get(n, n) for n in names]
    return list(dict.fromkeys(out))


def signal_values(signals: list[str], emb: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    def log_norm(x):
        return np.log(np.linalg.norm(x, axis=1))

    def log_cos(x, y):
        c = np.einsum("ij,ij->i", x / np.linalg.norm(x, axis=1, keepdims=True),
                      y / np.linalg.norm(y, axis=1, keepdims=True))
        return np.log(np.clip(c, 1e-6, 1.0))

    out = {}
    for s in signals:
        if s == "norm":
            out[s] = log_norm(emb["re"])
        elif s.startswith("ln["):
            vs = [SHORT.get(n, n) for n in s[3:-1].split(",")]
            out[s] = (log_norm(emb["re"]) + sum(log_norm(emb[f"re_{v}"]) for v in vs)) / (1 + len(vs))
        else:
            out[s] = log_cos(emb["re"], emb[f"re_{s[2:]}"])
    return out


def forwards(signals: list[str]) -> int:
    return 1 + len(views_of(signals))


def main() -> None:
    from fiqa_trt.engine.models import default_model_path
    from fiqa_trt.evaluation import bootstrap, calibrate, edc, protocols, split, sweep
    from fiqa_trt.evaluation.protocols import identities

    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/tmp/fiqa-quality-research")
    ap.add_argument("--models", default="mobilefacenet,dlib")
    ap.add_argument("--inner", type=int, default=8)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", default="benchmarks/results/quality_select.json")
    args = ap.parse_args()
    qr = _research()
    keys = [k for ks in identities(LFW).values() if len(ks) >= 2 for k in ks]
    index = {k: i for i, k in enumerate(keys)}
    ident = np.array([k.split("/")[0] for k in keys])
    pairs = protocols.all_mated_pairs(LFW, max_images=20, nonmated=2_000_000, seed=0, keys=keys)

    def proto(emb, part):
        rows = np.array([index[k] for k in part.keys])
        return rows, calibrate.protocol_from_pairs(emb[rows], ident[rows], np.ones(len(rows), bool), part.a, part.b,
                                                   part.mated)

    def fitted(values, names, rows, p):
        weights = calibrate.search({n: values[n][rows] for n in names}, p)
        return weights, sum(w * values[n] for n, w in weights.items())

    report = {"benchmark": "benchmarks/quality_select.py", "images": len(keys), "pairs": pairs.source,
              "machine": platform.processor() or platform.machine(), "inner_splits": args.inner,
              "max_forwards": MAX_FORWARDS, "models": {}}
    for model in args.models.split(","):
        path = MODELS.get(model, default_model_path)()
        candidates = CANDIDATES[model]
        needed = list(dict.fromkeys(v for c in candidates + [REFERENCES[model]] for v in views_of(c)))
        emb = {v: qr.embedded(model, path, keys, v, Path(args.cache), "bf16") for v in ["re"] + [f"re_{n}" for n in needed]}
        values = signal_values(list(dict.fromkeys(s for c in candidates + [REFERENCES[model]] for s in c)), emb)
        halves = split.identity_split(pairs.identities(), seed=0)
        dev, test = split.split_pairs(pairs, halves)
        inner = []
        for i in range(args.inner):
            a, b = split.split_pairs(dev, split.identity_split(dev.identities(), seed=100 + i))
            inner.append((proto(emb["re"], a), proto(emb["re"], b)))
        cv = {}
        for combo in candidates:
            scores = [calibrate.objective(ep, fitted(values, combo, fr, fp)[1][er])
                      for (fr, fp), (er, ep) in [x for pa, pb in inner for x in ((pa, pb), (pb, pa))]]
            cv["+".join(combo)] = {"forwards": forwards(combo), "inner_mean_npauc30": round(float(np.mean(scores)), 4),
                                   "inner_sem": round(float(np.std(scores) / np.sqrt(len(scores))), 4)}
            print(model, "+".join(combo), cv["+".join(combo)], flush=True)
        allowed = [c for c in candidates if forwards(c) <= MAX_FORWARDS]
        best = min(allowed, key=lambda c: cv["+".join(c)]["inner_mean_npauc30"])
        out = {"candidates": cv, "chosen": "+".join(best), "forwards": forwards(best), "views": views_of(best),
               "splits": {}}
        for seed in range(5):
            halves = split.identity_split(pairs.identities(), seed=seed)
            dev, test = split.split_pairs(pairs, halves)
            (dr, dp), (tr, tp) = proto(emb["re"], dev), proto(emb["re"], test)
            weights, q = fitted(values, best, dr, dp)
            qualities = {"chosen": q[tr]} | {ref: values[ref][tr] for ref in REFERENCES[model]}
            sim = sweep.pair_similarities(emb["re"][tr], test.a, test.b)
            row = {"weights": {k: round(v, 6) for k, v in weights.items()}, "test_npauc30": {
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
