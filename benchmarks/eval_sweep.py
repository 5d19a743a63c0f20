"""EDC/pAUC sweep over every registered perturbation at its default strength, on the shared LFW data and model.

    python benchmarks/eval_sweep.py [--pair-limit N] [--views 1] [--out benchmarks/results/eval_lfw_mobilefacenet]

One embedding pass over the images of the shared pair list: each image decoded once, its original embedded once,
with the views of all nine perturbations in the same runner calls. Two pair sets are then evaluated on the same
embeddings (no second pass):
- `shared/`: the shared pair list (`lfw112_pairs.txt`): fixed-threshold EDC, and the compatibility mode
  (threshold re-derived at every discard step, labelled `recomputed`). It has 2,774 non-mated pairs: FMR 1e-3
  allows 2 false matches and 1e-4 none, so those thresholds are coarse.
- `generated/`: on the same images, every mated pair within an identity (at most 20 per identity) plus 200,000
  sampled non-mated pairs (seed 0), which resolves FMR 1e-3 and 1e-4 (fixed mode only).
Writes `summary.md` / `summary.json` (machine, subset, timing, one row per perturbation), per pair set
`results.{json,csv,md}` and EDC plots, plus quality histograms and an annotated face grid. Not a test: nothing
here asserts anything.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fiqa_trt.engine.runners import load_runner  # noqa: E402
from fiqa_trt.evaluation import plots, protocols, sweep  # noqa: E402
from fiqa_trt.evaluation.report import dumps, fmr_key, limit_key, write_qualities, write_report  # noqa: E402

SHARED = ROOT.parent / "shared"
FMRS = (1e-2, 1e-3, 1e-4)
UNRESOLVED = ": not resolved, the threshold is the highest non-mated similarity"


def machine() -> dict:
    """The machine (fiqa_trt.benchmark.machine) and its load when the run started: these cores may be shared."""
    from fiqa_trt.benchmark import machine as describe

    return {**describe(), "load_average_at_start": os.getloadavg()[0]}


def row(report: dict, method: str, fmr: float, mode: str = "fixed") -> dict:
    return next(r for r in report["results"] if r["method"] == method and r["mode"] == mode
                and fmr_key(r["target_fmr"]) == fmr_key(fmr))


def summary_md(settings: dict, shared: dict, generated: dict) -> str:
    out = [f"# EDC sweep: every perturbation at its default strength, {settings['model_name']} on LFW", "",
           f"- Subset: {settings['subset']}.",
           f"- One embedding pass: {settings['images']} images x (1 original + {settings['views_total']} views) in "
           f"{settings['embedding_pass_seconds']:.0f} s ({settings['images_per_second']:.1f} images/s) on "
           f"{settings['machine']['cpu']} ({settings['machine']['cores']} cores), backend {settings['backend']} "
           f"{settings['precision']}, K={settings['views_per_random_spec']} view(s) per random spec, batch "
           f"{settings['batch_size']}, seed {settings['seed']}, quality = {settings['agg']} cosine.",
           "- Pair quality = min of the two images; fixed threshold set once at 0% discard; pAUC normalised by "
           "FNMR@0% x limit (1.0 = random discarding, lower is better). `random` = uniform random qualities.",
           f"- Verification (shared pairs): best accuracy {shared['verification']['best_accuracy']:.4f}; "
           + ", ".join(f"FNMR {a['fnmr']:.4f} at FMR {k} ({a['false_matches']} false matches of "
                       f"{shared['pairs']['nonmated']}{'' if a['resolved'] else UNRESOLVED})"
                       for k, a in shared["verification"]["at_fmr"].items()) + ".",
           ""]
    for title, rep, fmrs, mode in (
            (f"Shared pair list ({shared['pairs']['mated']} mated, {shared['pairs']['nonmated']} non-mated)",
             shared, (1e-2, 1e-3), "fixed"),
            ("Shared pair list, COMPAT mode (threshold re-derived at every discard step)", shared, (1e-3,),
             "recomputed"),
            (f"Generated pairs on the same images ({generated['pairs']['mated']} mated, "
             f"{generated['pairs']['nonmated']} non-mated)", generated, (1e-3, 1e-4), "fixed")):
        out += [f"## {title}", ""]
        head = ["perturbation"]
        for f in fmrs:
            head += [f"FNMR@0% (FMR {f:g})", f"pAUC@20% (FMR {f:g})", "norm.", "pAUC@30%", "norm."]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in rep["methods"]:
            cells = [m["name"]]
            for f in fmrs:
                r = row(rep, m["name"], f, mode)
                cells += [f"{r['fnmr_0']:.4f}", f"{r[limit_key(0.2)]:.5f}", f"{r[limit_key(0.2) + '_norm']:.3f}",
                          f"{r[limit_key(0.3)]:.5f}", f"{r[limit_key(0.3) + '_norm']:.3f}"]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    out += ["Specs: " + "; ".join(f"`{v}`" for v in settings["specs"].values()) + ".", ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "lfw112"))
    ap.add_argument("--pairs", default=str(SHARED / "data" / "lfw112_pairs.txt"))
    ap.add_argument("--model", default=str(SHARED / "models" / "faceplugin-mobilefacenet" / "fr_feature.onnx"))
    ap.add_argument("--pair-limit", type=int, help="only the first N pairs of the list (default: all)")
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--precision", default="fp32", help="runner precision, where the runner API offers one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--impostors", type=int, default=200_000, help="non-mated pairs of the generated pair set")
    ap.add_argument("--qualities", action="store_true", help="also write qualities.csv (about 1 MB)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_lfw_mobilefacenet"))
    args = ap.parse_args()
    out = Path(args.out)
    host = machine()

    pairs = protocols.read_pairs(args.pairs, args.data, "shared")
    if args.pair_limit:
        pairs = pairs.subset(args.pair_limit)
    # fp32 where the runner API offers a choice of precision: reference numbers, not the fastest run
    accepts = inspect.signature(load_runner).parameters
    runner = load_runner(args.model, **({"precision": args.precision} if "precision" in accepts else {}))
    print(pairs.describe(), f"; runner {runner.name}", flush=True)
    done = [0, time.perf_counter()]

    def progress(n: int) -> None:
        done[0] += n
        if done[0] % 640 < n or done[0] == len(pairs.keys):
            rate = done[0] / (time.perf_counter() - done[1])
            print(f"  {done[0]}/{len(pairs.keys)} images, {rate:.1f} images/s", flush=True)

    started = time.perf_counter()
    embedded = sweep.embed_specs(runner, pairs.root, pairs.keys, list(sweep.ALL_KINDS), args.views, "mean",
                                 args.seed, args.batch_size, progress=progress)
    elapsed = time.perf_counter() - started
    settings = {
        "model": Path(args.model).name, "model_name": runner.config.name, "backend": runner.name,
        "precision": getattr(runner, "precision", "fp32"), "specs": embedded.specs, "views": embedded.views,
        "views_total": sum(len(v) for v in embedded.views.values()), "views_per_random_spec": args.views,
        "agg": "mean", "seed": args.seed, "batch_size": args.batch_size, "images": len(pairs.keys),
        "embedding_pass_seconds": round(elapsed, 1), "images_per_second": round(len(pairs.keys) / elapsed, 2),
        "subset": (f"all {len(pairs)} pairs of the shared list" if not args.pair_limit else
                   f"the first {len(pairs)} pairs of the shared list") + f" ({len(pairs.keys)} images)",
        "machine": host, "command": " ".join(sys.argv)}

    kw = dict(fmrs=FMRS, limits=(0.2, 0.3), rule="min", grid_max=0.5)
    shared, methods, _ = sweep.evaluate_sweep(pairs, embedded, seed=args.seed, compat=True, **kw)
    shared["settings"] = settings
    generated_pairs = protocols.generate_pairs(args.data, 20, args.impostors, args.seed, keys=pairs.keys)
    generated, _, _ = sweep.evaluate_sweep(generated_pairs, embedded.select(generated_pairs.keys), seed=args.seed,
                                           compat=False, **kw)
    generated["settings"] = settings
    for name, rep in (("shared", shared), ("generated", generated)):
        write_report(rep, out / name)
        for fmr in FMRS:
            plots.plot_edc(rep, fmr, out / name / f"edc_fmr{fmr_key(fmr)}", max_discard=0.3)
        if "recomputed" in rep["modes"]:  # the compatibility mode: one picture, at FMR 1e-3
            plots.plot_edc(rep, 1e-3, out / name / "edc_fmr1e-03_recomputed", "recomputed", max_discard=0.3)
    qualities = {m.name: m.quality for m in methods if m.kind == "engine"}
    plots.plot_histograms(qualities, out / "quality_hist")
    plots.plot_face_grid(pairs.paths, qualities["affine"], out / "faces_affine", count=16, cols=8,
                         title="default perturbation (affine): 16 faces spread over the ranking, lowest first")
    if args.qualities:
        write_qualities(out / "qualities.csv", pairs.keys, methods, embedded.errors)
    summary = {"settings": settings,
               "shared": {k: shared[k] for k in ("pairs", "verification", "methods", "results")},
               "generated": {k: generated[k] for k in ("pairs", "verification", "methods", "results")}}
    (out / "summary.json").write_text(dumps(summary) + "\n")
    (out / "summary.md").write_text(summary_md(settings, shared, generated))
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()
