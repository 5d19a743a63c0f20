"""Quality recipes on the shared LFW: the figures that chose each model's default recipe (issue 15).

    python benchmarks/quality_recipes.py [--models mobilefacenet,dlib] [--cache /tmp/fiqa-quality-cache]
                                         [--bootstrap 1000] [--out benchmarks/results/quality_recipes.json]

Per model, every shared LFW crop (13,233) goes through the engine itself (engine.scorer.Scorer, OpenVINO):
- the template-aligned pass: the template check (engine.template: MTCNN O-Net on a seeded sample of 256 crops, one
  median similarity transform), every crop warped with it, then embedded with the candidate views (flip; the seed's
  affine view rot 0.5 / scale 1.01 / flip; a 3-degree rotation) in one pass, the original embedded once;
- the as-is pass (MobileFaceNet): the crops as they are with the seed's view, i.e. exactly `--recipe seed`.
Embeddings are cached in --cache (one .npy per pass and view), so a rerun only redoes the analysis.

Analysis (evaluation.calibrate): seeded identity split (seed 0) into dev and test halves; in each half the all-mated
protocol (every pair of at most 20 images per identity, 1,000,000 random non-mated pairs over the same images),
min pair quality, threshold fixed at 0% discard, EDC over the mated comparisons, normalised pAUC up to 30% discard
at FMR 1e-3 and 1e-4. Candidate recipes (sets of signals) have their weights fitted on the dev half; the default is
the candidate with the lowest mean dev npAUC within the forward budget; everything is reported on the test half,
with 90% bootstrap intervals (1,000 resamples of the test identities) of the default's npAUC minus the seed's and
minus the norm's. Verification similarities: the template-aligned originals (`eval --realign auto`) and, for the
MobileFaceNet, also the crops as they are (the issue's protocol: only the quality differs, not the recogniser).
The 0-100 calibrations (p1, p99 over all template-aligned crops) of the default, seed and stability recipes are
written too: they go into weights/registry.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
LFW = SHARED / "data" / "lfw112"
FLIP = "affine:rot=0,scale=1,flip=1"
SEED = "affine:rot=0.5,scale=1.01,flip=1"
ROT3 = "affine:rot=3,scale=1,flip=0"
VIEWS = (FLIP, SEED, ROT3)
VIEW_NAMES = ("flip", "seed", "rot3")
MAX_FORWARDS = 5


def embed_pass(runner, keys, perturb, aligner, cache: Path, tag: str, batch_size: int = 32):
    """(originals (N, D), {view name: (N, D)}) of one engine pass, cached as .npy."""
    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.engine.scorer import Scorer

    names = [VIEW_NAMES[VIEWS.index(p)] for p in perturb]
    files = {n: cache / f"{tag}_{n}.npy" for n in ["original", *names]}
    if all(f.is_file() for f in files.values()):
        return np.load(files["original"]), {n: np.load(files[n]) for n in names}
    scorer = Scorer(runner, list(perturb), batch_size=batch_size, aligner=aligner)
    chunks, started = [], time.perf_counter()
    for batch in scorer.embed([Item(str(LFW / k), k) for k in keys]):
        if any(it.error for it in batch.items):
            raise SystemExit(f"an LFW image failed: {next(it for it in batch.items if it.error)}")
        chunks.append(batch.embeddings.astype(np.float32))
    emb = np.concatenate(chunks)
    print(f"  {tag}: {len(keys)} images x {emb.shape[1]} forwards in {time.perf_counter() - started:.0f} s",
          flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    for j, n in enumerate(["original", *names]):
        np.save(files[n], emb[:, j])
    return emb[:, 0], {n: emb[:, 1 + j] for j, n in enumerate(names)}


def cosine(x, y):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", x, y)


def log_cos(x, y):
    return np.log(np.clip(cosine(x, y), 1e-6, 1.0))


def r4(d: dict) -> dict:
    return {k: round(float(v), 4) for k, v in d.items()}


def analyse(name, ident, originals, views, asis, seed, bootstrap, candidates):
    from fiqa_trt.evaluation import calibrate as cal

    signals = {"lognorm": np.log(np.linalg.norm(originals, axis=1))}
    signals |= {f"cos:{v}": log_cos(originals, views[v]) for v in views}
    references = {"seed recipe (as-is crops)": cosine(*asis) if asis is not None else None,
                  "seed view on template-aligned crops": signals.get("cos:seed"),
                  "norm (template-aligned)": signals["lognorm"]}
    if asis is not None:
        references["norm (as-is crops)"] = np.log(np.linalg.norm(asis[0], axis=1))
    references = {k: v for k, v in references.items() if v is not None}
    dev_mask = cal.split(ident, seed)
    out = {"identities": {"dev": int(len(np.unique(ident[dev_mask]))), "test": int(len(np.unique(ident[~dev_mask])))},
           "verification": {}}
    bases = {"template-aligned": originals} | ({"as-is": asis[0]} if asis is not None else {})
    dev = cal.protocol(originals, ident, dev_mask, seed)
    fits = {}
    for combo in candidates:
        s = {k: signals[k] for k in combo}
        weights = cal.search(s, dev)
        fits["+".join(combo)] = {"signals": list(combo), "weights": weights,
                                 "forwards": 1 + sum(k.startswith("cos:") for k in combo),
                                 "dev_mean_npauc30": round(cal.objective(dev, cal.fuse(s, weights)), 4)}
    allowed = [f for f in fits.values() if f["forwards"] <= MAX_FORWARDS]
    best = min(allowed, key=lambda f: f["dev_mean_npauc30"])
    fused = cal.fuse({k: signals[k] for k in best["signals"]}, best["weights"])
    out["candidates"], out["chosen"] = fits, "+".join(best["signals"])
    for base, emb in bases.items():
        test = cal.protocol(emb, ident, ~dev_mask, seed)
        rows = {"default (chosen on dev)": test.report(fused)}
        rows |= {k: test.report(v) for k, v in references.items()}
        for combo, f in fits.items():
            rows[f"candidate {combo}"] = test.report(cal.fuse({k: signals[k] for k in f["signals"]}, f["weights"]))
        diffs = {k: cal.bootstrap_difference(test, fused, v, n=bootstrap, seed=seed) for k, v in references.items()}
        out["verification"][base] = {
            "test_mated": int(len(test.ma)), "test_nonmated": test.n_nonmated,
            "test_fnmr0": r4({f"{k:.0e}": e.mean() for k, e in test.errors.items()}),
            "test_npauc30": {k: r4(v) for k, v in rows.items()},
            "difference_default_minus_90": diffs}
    print(json.dumps({name: {"chosen": out["chosen"], "weights": best["weights"],
                             **{b: v["test_npauc30"]["default (chosen on dev)"] for b, v in out["verification"].items()}}}),
          flush=True)
    return out, best, fused


def main() -> None:
    from fiqa_trt.engine.models import default_model_path
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.engine.template import realigner_for
    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.evaluation.protocols import identities
    from fiqa_trt.files import sha256_of

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilefacenet,dlib")
    ap.add_argument("--cache", default="/tmp/fiqa-quality-cache")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/quality_recipes.json")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images (a smoke run)")
    ap.add_argument("--mated-only", action="store_true", help="only the 9,164 images of identities with two or "
                    "more images (the protocol uses no other; the 0-100 calibration is then over these)")
    args = ap.parse_args()
    groups = [ks for ks in identities(LFW).values() if len(ks) >= 2 or not args.mated_only]
    keys = [k for ks in groups for k in ks][: args.limit]
    ident = np.array([k.split("/")[0] for k in keys])
    items = [Item(str(LFW / k), k) for k in keys]
    report = {"benchmark": "benchmarks/quality_recipes.py", "images": len(keys), "split_seed": args.seed,
              "machine": platform.processor() or platform.machine(), "precision": args.precision, "models": {}}
    paths = {"mobilefacenet": SHARED / "models/faceplugin-mobilefacenet/fr_feature.onnx"}
    for name in args.models.split(","):
        path = paths.get(name) or default_model_path()
        runner = load_runner(str(path), "openvino", args.precision)
        cache = Path(args.cache) / name
        aligner, check = realigner_for(items, runner.config.input_size, "on", args.seed)
        print(f"{name}: {check}", flush=True)
        originals, views = embed_pass(runner, keys, VIEWS, aligner, cache, "aligned")
        asis = None
        if name == "mobilefacenet":
            a0, av = embed_pass(runner, keys, (SEED,), None, cache, "asis")
            asis = (a0, av["seed"])
        if name == "mobilefacenet":
            candidates = [["lognorm"], ["cos:flip"], ["lognorm", "cos:flip"], ["lognorm", "cos:flip", "cos:seed"],
                          ["lognorm", "cos:flip", "cos:rot3"], ["lognorm", "cos:seed"]]
        else:
            candidates = [["cos:seed"], ["cos:flip"], ["cos:seed", "cos:rot3"], ["cos:flip", "cos:rot3"],
                          ["cos:seed", "cos:flip", "cos:rot3"], ["lognorm", "cos:seed", "cos:rot3"]]
        out, best, fused = analyse(name, ident, originals, views, asis, args.seed, args.bootstrap, candidates)
        seed_aligned = cosine(originals, views["seed"])
        out["template_check"] = aligner.check.to_dict()
        out["sha256"] = sha256_of(path)
        out["calibrations_p1_p99_template_aligned"] = {
            label: [round(float(v), 6) for v in np.percentile(q, [1, 99])]
            for label, q in (("default", fused), ("seed", seed_aligned), ("stability", seed_aligned))}
        out["default_recipe"] = {"perturb": [VIEWS[VIEW_NAMES.index(s[4:])] for s in best["signals"]
                                             if s.startswith("cos:")],
                                 "signals": best["signals"], "weights": best["weights"]}
        report["models"][name] = out
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
