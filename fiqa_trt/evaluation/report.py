"""EDC/pAUC of several quality methods on one pair set, and the files holding the results (JSON, CSV, markdown).

`evaluate(...)` returns a plain dict, the JSON document: the pair set; verification by the FR model on it (best
accuracy; threshold, achieved FMR and FNMR at each target FMR); one row per (method, mode, target FMR) with the
FNMR at 0% discard and the pAUCs, raw and normalised; and every curve sampled on a grid of discard fractions, for
the plots. Rows of mode `recomputed` come from the compatibility mode (threshold re-derived at every step) and
say so in every table.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fiqa_trt.errors import FiqaError
from fiqa_trt.evaluation import edc
from fiqa_trt.evaluation.protocols import Pairs

DEFAULT_FMRS = (1e-2, 1e-3, 1e-4)
DEFAULT_LIMITS = (0.2, 0.3)
MODE_LABELS = {"fixed": "fixed threshold (ISO/IEC 29794-1 EDC)",
               "recomputed": "COMPAT: threshold re-derived at every discard step"}


@dataclass
class Method:
    """One quality method: a quality per image, in the order of the pair set's keys."""

    name: str
    kind: str  # "engine" (perturbation stability), "external" (a score file), "reference" (random qualities)
    detail: str  # the spec, the file, or how the reference is drawn
    quality: np.ndarray


def random_method(n_images: int, seed: int = 0) -> Method:
    """Uniform random image qualities: an empirical random-discard reference (normalised pAUC near 1)."""
    rng = np.random.default_rng([seed, 0x7A11D])
    return Method("random", "reference", f"uniform random image qualities, seed {seed}", rng.random(n_images))


def fmr_key(fmr: float) -> str:
    return f"{fmr:.0e}"


def limit_key(limit: float) -> str:
    return f"pauc{round(limit * 100)}"


def evaluate(pairs: Pairs, similarity: np.ndarray, methods: list[Method], fmrs=DEFAULT_FMRS,
             limits=DEFAULT_LIMITS, rule: str = "min", compat: bool = False, grid_max: float = 0.5,
             grid_step: float = 0.0025) -> dict:
    """EDC and pAUC of every method at every target FMR (fixed mode, and the recomputed mode if `compat`)."""
    if not methods:
        raise FiqaError("no quality method to evaluate")
    n_mated = int(pairs.mated.sum())
    if n_mated == 0 or n_mated == len(pairs):
        raise FiqaError(f"the pair set has {n_mated} mated and {len(pairs) - n_mated} non-mated pairs; an EDC "
                        "needs both (more pairs? see --pair-limit)")
    limits = sorted(limits)
    edc.reject_nan(similarity, "pair similarities", pairs.names())
    used = np.unique(np.concatenate([pairs.a, pairs.b]))
    for m in methods:
        if len(m.quality) != len(pairs.keys):
            raise ValueError(f"{m.name}: {len(m.quality)} qualities for {len(pairs.keys)} images")
        edc.reject_nan(m.quality[used], f"image qualities of '{m.name}'", [pairs.keys[i] for i in used])
    grid = np.round(np.arange(0.0, grid_max + grid_step / 2, grid_step), 6)
    modes = ["fixed", "recomputed"] if compat else ["fixed"]
    accuracy, acc_threshold = edc.best_accuracy(similarity, pairs.mated)
    verification = {"best_accuracy": accuracy, "best_accuracy_threshold": acc_threshold, "at_fmr": {}}
    for fmr in fmrs:
        t, achieved = edc.threshold_at_fmr(similarity[~pairs.mated], fmr)
        genuine = similarity[pairs.mated]
        verification["at_fmr"][fmr_key(fmr)] = {
            "threshold": t, "achieved_fmr": achieved, "fnmr": float(np.mean(genuine <= t)),
            "false_matches": int(np.sum(similarity[~pairs.mated] > t)),
            "resolved": bool(fmr * int((~pairs.mated).sum()) >= 1)}
    rows, curves = [], {}
    names = pairs.names()
    for m in methods:
        q = edc.pair_quality(m.quality[pairs.a], m.quality[pairs.b], rule)
        for mode in modes:
            for fmr in fmrs:
                curve = edc.edc(similarity, pairs.mated, q, fmr, mode, names=names,
                                max_discard=max(grid_max, limits[-1]))
                row = {"method": m.name, "kind": m.kind, "mode": mode, "target_fmr": fmr,
                       "threshold": float(curve.threshold[0]), "achieved_fmr": curve.achieved_fmr,
                       "fnmr_0": curve.fnmr0}
                for lim in limits:
                    row[limit_key(lim)] = curve.pauc(lim)
                    row[limit_key(lim) + "_norm"] = curve.normalised_pauc(lim)
                rows.append(row)
                curves[f"{m.name}|{mode}|{fmr_key(fmr)}"] = [None if math.isnan(v) else round(float(v), 6)
                                                             for v in curve.at(grid)]
    return {
        "pairs": {"source": pairs.source, "root": str(pairs.root), "pairs": len(pairs),
                  "mated": int(pairs.mated.sum()), "nonmated": int((~pairs.mated).sum()), "images": len(used),
                  "notes": pairs.notes},
        "pair_quality": rule,
        "modes": {mode: MODE_LABELS[mode] for mode in modes},
        "fmrs": list(fmrs),
        "pauc_limits": limits,
        "verification": verification,
        "methods": [{"name": m.name, "kind": m.kind, "detail": m.detail,
                     "quality_mean": float(np.mean(m.quality[used])),
                     "quality_median": float(np.median(m.quality[used]))} for m in methods],
        "results": rows,
        "curves": {"discard": grid.tolist(), "fnmr": curves},
    }


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def table_columns(report: dict) -> list[str]:
    cols = ["method", "kind", "mode", "target_fmr", "threshold", "achieved_fmr", "fnmr_0"]
    for lim in report["pauc_limits"]:
        cols += [limit_key(lim), limit_key(lim) + "_norm"]
    return cols


def markdown_table(report: dict) -> str:
    cols = table_columns(report)
    head = {"fnmr_0": "FNMR@0%", "target_fmr": "FMR", "achieved_fmr": "achieved FMR"}
    for lim in report["pauc_limits"]:
        head[limit_key(lim)] = f"pAUC@{round(lim * 100)}%"
        head[limit_key(lim) + "_norm"] = f"pAUC@{round(lim * 100)}% norm."
    lines = ["| " + " | ".join(head.get(c, c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in report["results"]:
        cells = [_fmt(row[c]) for c in cols]
        if row["mode"] == "recomputed":
            cells[cols.index("mode")] = "recomputed (COMPAT)"
        lines.append("| " + " | ".join(cells) + " |")
    v = report["verification"]
    p = report["pairs"]
    notes = [f"Pairs: {p['pairs']} ({p['mated']} mated, {p['nonmated']} non-mated) over {p['images']} images; "
             f"{p['source']}.",
             f"Pair quality: {report['pair_quality']} of the two images. Verification: best accuracy "
             f"{v['best_accuracy']:.4f}.",
             "normalised pAUC = pAUC / (FNMR@0% x limit): 1.0 = no better than random discarding, lower is better."]
    for mode, label in report["modes"].items():
        notes.append(f"mode `{mode}`: {label}.")
    unresolved = [k for k, a in v["at_fmr"].items() if not a["resolved"]]
    if unresolved:
        notes.append(f"FMR {', '.join(unresolved)}: fewer than one false match allowed with "
                     f"{p['nonmated']} non-mated pairs; the threshold is the highest non-mated similarity.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def dumps(obj, indent: int = 0) -> str:
    """JSON with one key per line but every list of numbers or strings on one line (curves stay compact).
    NaN becomes null and infinities the strings "inf" / "-inf", so that every JSON reader can load it."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(k))}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in obj):
        return "[\n" + ",\n".join(inner + dumps(v, indent + 1) for v in obj) + "\n" + pad + "]"
    if isinstance(obj, (list, tuple)):
        return "[" + ", ".join(dumps(v) for v in obj) + "]"
    if isinstance(obj, float) and not math.isfinite(obj):
        return "null" if math.isnan(obj) else json.dumps("inf" if obj > 0 else "-inf")
    return json.dumps(obj)


def write_report(report: dict, out_dir: str | Path) -> list[Path]:
    """results.json, results.csv and results.md in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "results.csv", out / "results.md"]

    paths[0].write_text(dumps(report) + "\n")
    cols = table_columns(report)
    with paths[1].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for row in report["results"]:
            w.writerow([row[c] if not isinstance(row[c], float) else f"{row[c]:.6g}" for c in cols])
    paths[2].write_text(markdown_table(report))
    return paths


def write_qualities(path: str | Path, keys: list[str], methods: list[Method], errors: dict[str, str]) -> Path:
    """One row per image: key, one quality column per method, error (why an image has no quality)."""
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path"] + [m.name for m in methods] + ["error"])
        for i, key in enumerate(keys):
            w.writerow([key] + [f"{m.quality[i]:.6g}" for m in methods] + [errors.get(key, "")])
    return path


def read_qualities(path: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """(keys, {method: qualities}) from a qualities.csv written by `write_qualities`."""
    with Path(path).open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][0] != "path":
        raise FiqaError(f"{path} is not a qualities.csv written by fiqa-trt eval")
    names = rows[0][1:-1]
    keys = [r[0] for r in rows[1:]]
    values = np.array([[float(x) if x else np.nan for x in r[1:-1]] for r in rows[1:]], dtype=np.float64)
    return keys, {n: values[:, j] if len(keys) else np.zeros(0) for j, n in enumerate(names)}
