"""Realignment inside the DALI graph against the host round trip it replaced, both measured in one run on one
machine: the code at `--before` (a git revision, checked out into a temporary worktree; default: main just before
realignment moved into the graph) and the code of this checkout, each run in its own Python process.

    python benchmarks/realign_in_graph.py [--before REV] [--images 1000] [--throughput-images 2000]
                                          [--rounds 2] [--out benchmarks/results/realign_in_graph.json]

The shared MobileFaceNet with its default recipe (the realigning one) on a seeded sample of `--images` shared LFW
crops, through `engine.scorer.Scorer`, at fp32 (ONNX Runtime) and at the precision `auto` picks (OpenVINO, bf16
where the CPU has it):
- `same_transform`: every crop moved by the same matrix (8 px right: the SphereFace template onto ArcFace's) in
  both versions, so only where the warp happens differs (before: OpenCV on the host, the crop encoded as PNG and
  decoded again by DALI; after: one warp in the graph, composed with each affine view). The largest difference of
  the raw quality and of the 0-100 score, per precision.
- `as_shipped`: each version's own `--realign auto` (before: one median transform estimated from a sample of the
  run's own crops; after: each crop's own template check). The same figures: what the per-crop check changes.
- Host seconds per realigned crop: the scorer's `align` stage (before: decode, warp, PNG; after: decode, O-Net,
  matrix) over the crops, and the time the before version took to make its realigner (its sample's check) apart.
- `fiqa-trt score` throughput: the whole command on `--throughput-images` crops (a list file), before and after in
  turn, `--rounds` times each: wall seconds and the images/s the command prints for its scoring loop.
Timings need a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
LFW = SHARED / "data" / "lfw112"
MODEL = SHARED / "models" / "faceplugin-mobilefacenet" / "fr_feature.onnx"
PRECISIONS = (("onnxruntime", "fp32"), ("openvino", "auto"))


def sample_keys(count: int) -> list[str]:
    files = sorted(p.relative_to(LFW).as_posix() for p in LFW.glob("*/*.jpg"))
    pick = np.random.default_rng([0, 0x5EA1]).choice(len(files), min(count, len(files)), replace=False)
    return [files[i] for i in sorted(pick)]


# ---- the measuring side: runs in a process whose fiqa_trt is the version measured (PYTHONPATH)


def fixed_aligner(size):
    """A realigner of this version that moves every crop 8 px right (the SphereFace template onto ArcFace's)."""
    from fiqa_trt.engine import template

    shift = np.float64([[1, 0, 8 * size[1] / 112], [0, 1, 0]])
    if hasattr(template, "TemplateCheck"):  # the host round trip: one matrix for every crop
        return template.Realigner(template.TemplateCheck.of_matrix(shift), size)

    class Fixed(template.Realigner):
        def matrices(self, crops):
            return np.repeat(shift[None], len(crops), axis=0)

    return Fixed(size)


def shipped_aligner(items, size):
    """(this version's `--realign auto` realigner, seconds it took to make it)."""
    from fiqa_trt.engine import template

    start = time.perf_counter()
    if hasattr(template, "TemplateCheck"):
        aligner, _ = template.realigner_for(items, size, "auto", 0)
    else:
        aligner, _ = template.realigner_for(size, "auto")
    return aligner, time.perf_counter() - start


def measure(keys: list[str], out: Path) -> None:
    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.engine.scorer import Scorer

    items = [Item(str(LFW / k), k) for k in keys]
    try:
        from fiqa_trt.engine.resolve import resolve_recipe
    except ImportError:  # an older revision
        from fiqa_trt.engine.recipes import resolve as resolve_recipe
    recipe, _ = resolve_recipe(None, MODEL)
    arrays, report = {}, {}
    for backend, precision in PRECISIONS:
        runner = load_runner(str(MODEL), backend, precision)
        size = runner.config.input_size
        for variant in ("same_transform", "as_shipped"):
            aligner, made = (fixed_aligner(size), 0.0) if variant == "same_transform" else shipped_aligner(items, size)
            scorer = Scorer(runner, recipe=recipe, aligner=aligner, batch_size=32)
            list(scorer.score(items[:64]))  # warm-up: pipeline built, model run once
            start = time.perf_counter()
            results = list(scorer.score(items))
            seconds = time.perf_counter() - start
            if any(r.error for r in results):
                raise SystemExit(f"an LFW crop failed: {next(r for r in results if r.error)}")
            name = f"{variant}|{backend}|{runner.precision}"
            arrays[f"{name}|quality"] = np.array([r.quality for r in results])
            arrays[f"{name}|score"] = np.array([r.score for r in results])
            report[name] = {"scoring_seconds": round(seconds, 3), "realigner_made_seconds": round(made, 3),
                            "host_align_ms_per_crop": round(1000 * scorer.timings["align"] / len(items), 4),
                            "stage_seconds": {k: round(v, 3) for k, v in scorer.timings.items()}}
            print(f"  {name}: {len(items) / seconds:.1f} images/s, align {report[name]['host_align_ms_per_crop']} "
                  f"ms/crop", flush=True)
    np.savez(out.with_suffix(".npz"), **arrays)
    out.with_suffix(".json").write_text(json.dumps(report))


# ---- the driving side


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


def child(tree: Path, keys_file: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(keys_file), str(out)], env=env,
                   check=True, cwd=tree)
    data = np.load(out.with_suffix(".npz"))
    return {"arrays": {k: data[k] for k in data.files}, "report": json.loads(out.with_suffix(".json").read_text())}


def cli_run(tree: Path, listing: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fiqa_trt.cli", "score", str(listing), "-m", str(MODEL), "-o",
                           str(out)], env=env, cwd=tree, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"fiqa-trt score failed in {tree}:\n{proc.stderr[-2000:]}")
    rate = re.search(r"\(([\d.]+) images/s\)", proc.stderr)
    return {"wall_seconds": round(wall, 2), "scoring_images_per_s": float(rate.group(1)) if rate else None}


def differences(before: dict, after: dict) -> dict:
    out = {}
    for key in sorted(k for k in after if k.endswith("|quality") and k in before):
        name = key[: -len("|quality")]
        dq = np.abs(after[key] - before[key])
        ds = np.abs(after[f"{name}|score"] - before[f"{name}|score"])
        out[name] = {"largest_quality_difference": round(float(dq.max()), 6),
                     "median_quality_difference": round(float(np.median(dq)), 6),
                     "largest_score_difference": int(ds.max()), "scores_changed": int((ds > 0).sum()),
                     "quality_range": [round(float(after[key].min()), 4), round(float(after[key].max()), 4)]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--before", default=None, help="the revision measured as before (default: the parent of the "
                    "commit that moved realignment into the graph, the one that added this script)")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--throughput-images", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/realign_in_graph.json")
    args = ap.parse_args()
    if args.child:
        measure(json.loads(Path(args.child[0]).read_text()), Path(args.child[1]))
        return
    from fiqa_trt.benchmark import provenance

    if not LFW.is_dir() or not MODEL.is_file():
        raise SystemExit(f"needs the shared LFW crops ({LFW}) and MobileFaceNet ({MODEL})")
    added = git("log", "--diff-filter=A", "--format=%H", "--", "benchmarks/realign_in_graph.py").split()
    before_commit = git("rev-parse", args.before or f"{added[-1]}^")
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="fiqa-realign-") as tmp:
        tmp = Path(tmp)
        tree = tmp / "before"
        git("worktree", "add", "--detach", str(tree), before_commit)
        try:
            keys_file = tmp / "keys.json"
            keys_file.write_text(json.dumps(sample_keys(args.images)))
            runs = {}
            for version, where in (("before", tree), ("after", REPO)):
                print(f"{version} ({where}):", flush=True)
                runs[version] = child(where, keys_file, tmp / version)
            listing = tmp / "list.txt"
            listing.write_text("\n".join(str(LFW / k) for k in sample_keys(args.throughput_images)) + "\n")
            throughput = {"before": [], "after": []}
            for _ in range(args.rounds):
                for version, where in (("before", tree), ("after", REPO)):
                    throughput[version].append(cli_run(where, listing, tmp / f"{version}.csv"))
                    print(f"fiqa-trt score ({version}): {throughput[version][-1]}", flush=True)
        finally:
            git("worktree", "remove", "--force", str(tree))
    load_after = [round(x, 2) for x in os.getloadavg()]
    best = {v: min(r["wall_seconds"] for r in rs) for v, rs in throughput.items()}
    result = {
        "benchmark": "benchmarks/realign_in_graph.py", **provenance(), "commit_before": before_commit,
        "model": "shared MobileFaceNet, its default recipe", "images": args.images,
        "load_average_before": load_before, "load_average_after": load_after,
        "scores_after_minus_before": differences(runs["before"]["arrays"], runs["after"]["arrays"]),
        "before": runs["before"]["report"], "after": runs["after"]["report"],
        "score_command": {"images": args.throughput_images, "rounds": throughput,
                          "best_wall_images_per_s": {v: round(args.throughput_images / s, 1) for v, s in best.items()},
                          "after_over_before_wall": round(best["before"] / best["after"], 3)}}
    print(json.dumps({k: result[k] for k in ("scores_after_minus_before", "score_command")}, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
