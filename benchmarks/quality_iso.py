"""The default recipes re-measured with the evaluation package's ISO/IEC 29794-1 protocol (evaluation.protocols
.all_mated_pairs, split.identity_split, edc, bootstrap), on the embeddings cached by benchmarks/quality_research.py.

    python benchmarks/quality_iso.py [--cache /tmp/fiqa-quality-research] [--out benchmarks/results/quality_iso.json]

The 9,164 images of identities with two or more images (those the cache holds): all-mated pairs (at most 20 images
per identity, 2,000,000 non-mated pairs over them, seed 0), the identity split of evaluation.split (seed 0): the
recipe weights are fitted again on its dev half (evaluation.calibrate.search), the test half reported: normalised
pAUC@0.3 of the EDC over mated comparisons at a fixed threshold, 90% bootstrap intervals over test identities
(1,000 resamples) of each npAUC and of the differences.
"""

import argparse
import json
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
LFW = SHARED / "data" / "lfw112"


def main():
    from fiqa_trt.evaluation import bootstrap, calibrate, edc, protocols, split, sweep

    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/tmp/fiqa-quality-research")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", default="benchmarks/results/quality_iso.json")
    args = ap.parse_args()
    keys = [k for ks in protocols.identities(LFW).values() if len(ks) >= 2 for k in ks]
    index = {k: i for i, k in enumerate(keys)}
    pairs = protocols.all_mated_pairs(LFW, max_images=20, nonmated=2_000_000, seed=0, keys=keys)
    halves = split.identity_split(pairs.identities(), seed=0)
    dev, test = split.split_pairs(pairs, halves)
    load = lambda m, v: np.load(Path(args.cache) / f"{m}_bf16_{v}_multi.npy")  # noqa: E731
    cos = lambda x, y: np.einsum("ij,ij->i", x / np.linalg.norm(x, axis=1, keepdims=True),  # noqa: E731
                                 y / np.linalg.norm(y, axis=1, keepdims=True))
    lc = lambda x, y: np.log(np.clip(cos(x, y), 1e-6, 1.0))  # noqa: E731
    plan = {"mobilefacenet": (["lognorm", "flip"], {"seed recipe (as-is)": lambda e: cos(e["asis"], e["asis_seed"]),
                                                     "norm (as-is)": lambda e: np.log(np.linalg.norm(e["asis"], axis=1)),
                                                     "norm (template-aligned)": lambda e: np.log(np.linalg.norm(e["re"], axis=1))},
                              ["asis", "asis_seed", "re", "re_flip"]),
            "dlib": (["seed", "rot3"], {"seed view (template-aligned)": lambda e: cos(e["re"], e["re_seed"]),
                                        "norm (template-aligned)": lambda e: np.log(np.linalg.norm(e["re"], axis=1))},
                     ["re", "re_seed", "re_rot"])}
    report = {"benchmark": "benchmarks/quality_iso.py", "pairs": pairs.source, "split": halves.describe(),
              "dev_pairs": dev.describe(), "test_pairs": test.describe(), "models": {}}
    for model, (names, refs, needed) in plan.items():
        e = {v: load(model, v) for v in needed}
        signal = {"lognorm": np.log(np.linalg.norm(e["re"], axis=1))}
        if "re_flip" in e:
            signal["flip"] = lc(e["re"], e["re_flip"])
        if "re_seed" in e:
            signal["seed"] = lc(e["re"], e["re_seed"])
        if "re_rot" in e:
            signal["rot3"] = lc(e["re"], e["re_rot"])
        out = {}
        for basis, emb in (("template-aligned", e["re"]),) + ((("as-is", e["asis"]),) if "asis" in e else ()):
            rows = {}
            dev_idx = np.array([index[k] for k in dev.keys])
            ident = np.array([k.split("/")[0] for k in keys])
            dev_proto = calibrate.protocol_from_pairs(emb[dev_idx], ident[dev_idx], np.ones(len(dev_idx), bool),
                                                      dev.a, dev.b, dev.mated)
            weights = calibrate.search({n: signal[n][dev_idx] for n in names}, dev_proto)
            test_idx = np.array([index[k] for k in test.keys])
            sim = sweep.pair_similarities(emb[test_idx], test.a, test.b)
            qualities = {"default": calibrate.fuse({n: signal[n][test_idx] for n in names}, weights)}
            qualities |= {k: f(e)[test_idx] for k, f in refs.items()}
            for name, q in qualities.items():
                rows[name] = {f"{fmr:.0e}": round(edc.edc(sim, test.mated, edc.pair_quality(q[test.a], q[test.b]),
                                                          fmr).normalised_pauc(0.3), 4) for fmr in (1e-3, 1e-4)}
            res = bootstrap.identity_resamples(test, count=args.bootstrap, seed=0)
            v = bootstrap.resampled_paucs(res, test, sim, qualities, fmrs=(1e-3, 1e-4), limits=(0.3,))
            intervals = {f"{n} - default minus": {} for n in ()}
            diffs = {ref: {f"{fmr:.0e}": [round(x, 4) for x in bootstrap.interval(v[("default", fmr, 0.3)]
                                                                                  - v[(ref, fmr, 0.3)])]
                           for fmr in (1e-3, 1e-4)} for ref in refs}
            own = {n: {f"{fmr:.0e}": [round(x, 4) for x in bootstrap.interval(v[(n, fmr, 0.3)])]
                       for fmr in (1e-3, 1e-4)} for n in qualities}
            out[basis] = {"weights_fitted_on_dev": weights, "test_npauc30": rows, "test_npauc30_90": own,
                          "difference_default_minus_90": diffs, **intervals}
            print(model, basis, json.dumps(rows), json.dumps(diffs), flush=True)
        report["models"][model] = out
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
