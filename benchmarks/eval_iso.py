"""Where the engine's quality stands on the shared LFW, with the ISO/IEC 29794-1 style evaluation.

    python benchmarks/eval_iso.py [--embeddings /tmp/lfw_affine.npz] [--bootstrap 200]
                                  [--out benchmarks/results/eval_iso_lfw_mobilefacenet]

Protocol "all-mated" (`protocols.all_mated_pairs`): each identity keeps at most 20 images (a seeded sample where
it has more), every mated pair among them (27,726), 2,000,000 random non-mated pairs of those images (seed 0).
One embedding pass over the protocol's images with the seed's default perturbation (affine rot 0.5, scale 1.01,
flip: 2 forwards per image), shared MobileFaceNet, OpenVINO fp32 (reference numbers, not the fastest run). The
methods: the seed's stability score, the L2 norm of the raw original embedding (no extra forward), uniform
random qualities. Pair quality = min, threshold fixed at 0% discard, discard fraction over the mated
comparisons, normalised pAUC (1.0 = random discarding) at 20% and 30%, with the theoretical-best floor; 90%
bootstrap intervals over identities, and the interval of the difference seed - norm on the same resamples.
Evaluated on the full protocol and on the test half of the seeded identity split (seed 0). `--embeddings`
caches the embedding pass (originals + qualities) in a .npz outside the repository, reused when it exists.
Writes summary.json / summary.md and, per pair set, results.{json,csv,md} and EDC plots. Not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fiqa_trt.engine.runners import load_runner
from fiqa_trt.evaluation import plots, protocols, split, sweep
from fiqa_trt.evaluation.report import dumps, fmr_key, limit_key, write_report

SHARED = ROOT.parent / "shared"
FMRS = (1e-3, 1e-4)
LIMITS = (0.2, 0.3)
NAMES = {"affine": "fiqa-trt default (seed affine: rot 0.5, scale 1.01, flip)", "embedding-norm":
         "L2 norm of the raw embedding", "random": "random qualities (reference)"}
FORWARDS = {"affine": 2, "embedding-norm": 1, "random": 0}


def machine() -> dict:
    """The machine (fiqa_trt.benchmark.machine) and its load when the run started: these cores may be shared."""
    from fiqa_trt.benchmark import machine as describe

    return {**describe(), "load_average_at_start": os.getloadavg()[0]}


def embed(keys: list[str], args) -> sweep.SweepResult:
    cache = Path(args.embeddings) if args.embeddings else None
    if cache and cache.is_file():
        z = np.load(cache, allow_pickle=False)
        index = {k: i for i, k in enumerate(z["keys"].tolist())}
        full = sweep.SweepResult(list(index), z["originals"], {"affine": z["affine"]},
                                 {"affine": str(z["spec"])}, {"affine": z["views"].tolist()}, {},
                                 float(z["seconds"]))
        print(f"embeddings from {cache} ({len(index)} images, pass took {full.seconds:.0f} s)", flush=True)
        args.embedding_source = (f"cache {cache.name}: {len(index)} images embedded in {full.seconds:.0f} s (the "
                                 f"protocol uses {len(keys)} of them)")
        return full.select(keys)
    runner = load_runner(args.model, precision=args.precision)
    print(f"embedding {len(keys)} images on {runner.name} {getattr(runner, 'precision', '')}", flush=True)
    done = [0, time.perf_counter()]

    def progress(n: int) -> None:
        done[0] += n
        if done[0] % 1280 < n or done[0] == len(keys):
            print(f"  {done[0]}/{len(keys)} images, {done[0] / (time.perf_counter() - done[1]):.1f}/s", flush=True)

    result = sweep.embed_specs(runner, Path(args.data), keys, ["affine"], 1, "mean", 0, 32, progress=progress)
    if result.errors:
        raise SystemExit(f"{len(result.errors)} images failed, e.g. {next(iter(result.errors.items()))}")
    args.embedding_source = f"embedded here: {len(keys)} images in {result.seconds:.0f} s"
    if cache:
        np.savez(cache, keys=np.array(keys), originals=result.originals, affine=result.qualities["affine"],
                 spec=result.specs["affine"], views=np.array(result.views["affine"]), seconds=result.seconds)
    return result


def table(reports: dict) -> list[str]:
    head = ["pair set", "score", "forwards / image"]
    for f in FMRS:
        head += [f"FMR {f:g}: pAUC@30% norm. [90%]", "pAUC@20% norm. [90%]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, rep in reports.items():
        rows = {(r["method"], fmr_key(r["target_fmr"])): r for r in rep["results"]}
        for m in rep["methods"]:
            cells = [label, NAMES[m["name"]], str(FORWARDS[m["name"]])]
            for f in FMRS:
                r = rows[(m["name"], fmr_key(f))]
                for lim in (0.3, 0.2):
                    k = limit_key(lim) + "_norm"
                    cells.append(f"{r[k]:.3f} [{r[k + '_lo']:.3f}, {r[k + '_hi']:.3f}]")
            lines.append("| " + " | ".join(cells) + " |")
        cells = [label, "theoretical best (false non-matches discarded first)", ""]
        for f in FMRS:
            r = rows[("affine", fmr_key(f))]
            cells += [f"{r['pauc30_best_norm']:.3f}", f"{r['pauc20_best_norm']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    for label, rep in reports.items():
        v = rep["verification"]["at_fmr"]
        lines.append(f"- {label}: {rep['pairs']['mated']} mated / {rep['pairs']['nonmated']} non-mated pairs over "
                     f"{rep['pairs']['images']} images; FNMR at 0% discard "
                     + ", ".join(f"{v[fmr_key(f)]['fnmr']:.4f} at FMR {f:g}" for f in FMRS) + ".")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "lfw112"))
    ap.add_argument("--model", default=str(SHARED / "models" / "faceplugin-mobilefacenet" / "fr_feature.onnx"))
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--max-images", type=int, default=20)
    ap.add_argument("--nonmated", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--embeddings", help="cache of the embedding pass (.npz, outside the repository)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_iso_lfw_mobilefacenet"))
    args = ap.parse_args()
    out, host, started = Path(args.out), machine(), time.perf_counter()

    pairs = protocols.all_mated_pairs(args.data, args.max_images, args.nonmated, args.seed)
    print(pairs.describe(), flush=True)
    embedded = embed(pairs.keys, args)
    halves = split.identity_split(pairs.identities(), seed=args.seed)
    _, test = split.split_pairs(pairs, halves)
    kw = {"fmrs": FMRS, "limits": LIMITS, "rule": "min", "grid_max": 0.5, "discard": "mated",
          "bootstrap": args.bootstrap, "bootstrap_seed": args.seed, "compare": [("affine", "embedding-norm")]}
    reports, timings = {}, {}
    for label, pair_set in (("full", pairs), ("test half", test)):
        t0 = time.perf_counter()
        rep, _, _ = sweep.evaluate_sweep(pair_set, embedded.select(pair_set.keys), seed=args.seed, with_norm=True,
                                         **kw)
        timings[label] = round(time.perf_counter() - t0, 1)
        print(f"{label}: evaluated in {timings[label]} s ({args.bootstrap} resamples)", flush=True)
        reports[label] = rep
        folder = out / label.replace(" ", "_")
        write_report(rep, folder)
        for fmr in FMRS:
            plots.plot_edc(rep, fmr, folder / f"edc_fmr{fmr_key(fmr)}", max_discard=0.3)
    settings = {"command": " ".join(["python"] + sys.argv), "machine": host, "model": Path(args.model).name,
                "precision": args.precision, "spec": embedded.specs["affine"], "protocol": pairs.source,
                "split": halves.describe(), "images": len(pairs.keys), "embeddings": args.embedding_source,
                "evaluation_seconds": timings, "total_seconds": round(time.perf_counter() - started, 1)}
    summary = {"settings": settings,
               **{label: {k: rep[k] for k in ("pairs", "verification", "methods", "results", "differences",
                                              "bootstrap")} for label, rep in reports.items()}}
    (out / "summary.json").write_text(dumps(summary) + "\n")
    diffs = [f"- {label}, FMR {d['target_fmr']:g}, pAUC@{round(d['limit'] * 100)}%: seed - norm = "
             f"{d['point']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]{' (excludes 0)' if d['excludes_zero'] else ''}"
             for label, rep in reports.items() for d in rep["differences"]]
    md = [f"# All-mated protocol on the shared LFW, {Path(args.model).name}", "",
          f"- {pairs.source}; {len(pairs.keys)} images.", f"- Test half: {halves.describe()}; {test.describe()}.",
          f"- {embedded.specs['affine']}, OpenVINO {args.precision}; pair quality min; fixed threshold at 0% "
          f"discard; discard fraction over the mated comparisons; 90% intervals over {args.bootstrap} bootstrap "
          f"resamples of the identities.", f"- Command: `{settings['command']}`; {host['cpu']}, "
          f"{host['cores']} cores; embeddings: {args.embedding_source}.", "", *table(reports), "", "Differences of normalised pAUC (same resamples; "
          "negative: the seed score is better):", *diffs, ""]
    (out / "summary.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
