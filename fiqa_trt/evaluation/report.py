"""EDC/pAUC of several quality methods on one pair set, and the files holding the results (JSON, CSV, markdown).

`evaluate(...)` returns a plain dict, the JSON document: the pair set; verification by the FR model on it (best
accuracy; threshold, achieved FMR and FNMR at each target FMR); one row per (method, mode, target FMR) with the
FNMR at 0% discard and the pAUCs, raw and normalised, and the area of the theoretical-best curve at each limit
(`pauc30_best`, `pauc30_best_norm`); with `bootstrap=N` the 90% interval over identities of each normalised pAUC
(`pauc30_norm_lo`, `pauc30_norm_hi`) and, in `differences`, the interval of the difference between two methods on
the same resamples; and every curve sampled on a grid of discard fractions, the theoretical-best one included
(method name `theoretical best`), for the plots. The discard fraction counts the mated comparisons (ISO/IEC
29794-1; `discard="all"` counts every pair). Rows of mode `recomputed` come from the compatibility mode
(threshold re-derived at every step) and say so in every table.

API: `evaluate(pairs, similarity, methods, fmrs=(1e-3, 1e-4), limits=(0.3,), rule="min", bootstrap=200,
bootstrap_seed=0, compare=[("a", "b")])` with `methods` a list of `Method(name, kind, detail, quality)` (one
image quality per key of `pairs`); `write_report(report, out_dir)` writes results.json / .csv / .md.
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
BEST = "theoretical best"  # the curve name of the theoretical-best EDC in a report
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


FEW_ERRORS = 20  # fewer false non-matches at 0% discard than this: the figures at that FMR are noisy, say so


def split_compare(spec: tuple[str, str] | str, names: set[str]) -> tuple[str, str]:
    """The (a, b) method pair of a comparison: a pair as given, or "a:b" split at the colon where both sides are
    method names (method names such as 'recipe:mobilefacenet-default' hold colons themselves)."""
    if isinstance(spec, str):
        cuts = [i for i, c in enumerate(spec) if c == ":"]
        found = [(spec[:i].strip(), spec[i + 1:].strip()) for i in cuts
                 if spec[:i].strip() in names and spec[i + 1:].strip() in names]
        if len(found) != 1:
            raise FiqaError(f"cannot compare '{spec}': " + ("it splits into method names more than one way"
                            if found else f"use A:B with A and B among the methods: {', '.join(sorted(names))}"))
        return found[0]
    a, b = spec
    if a not in names or b not in names:
        raise FiqaError(f"cannot compare {a} with {b}: the methods are {', '.join(sorted(names))}")
    return a, b


def evaluate(pairs: Pairs, similarity: np.ndarray, methods: list[Method], fmrs=DEFAULT_FMRS,
             limits=DEFAULT_LIMITS, rule: str = "min", compat: bool = False, grid_max: float = 0.5,
             grid_step: float = 0.0025, discard: str = "mated", bootstrap: int = 0, bootstrap_seed: int = 0,
             level: float = 0.9, compare: list[tuple[str, str] | str] | None = None) -> dict:
    """EDC and pAUC of every method at every target FMR (fixed mode, and the recomputed mode if `compat`).

    `bootstrap` resamples of the identities (0: none) give intervals at `level`; `compare` lists (a, b) method
    pairs (or "a:b" strings, split where both sides name a method: names may hold colons) whose difference of
    normalised pAUC (a - b) gets an interval (default with bootstrap: the first method against every other one but
    the random reference)."""
    from fiqa_trt.evaluation import bootstrap as boot

    if not methods:
        raise FiqaError("no quality method to evaluate")
    n_mated = int(pairs.mated.sum())
    if n_mated == 0 or n_mated == len(pairs):
        raise FiqaError(f"the pair set has {n_mated} mated and {len(pairs) - n_mated} non-mated pairs; an EDC "
                        "needs both (more pairs? see --pair-limit)")
    if bootstrap and discard != "mated":
        raise FiqaError("bootstrap intervals are computed over the mated comparisons: use discard 'mated'")
    limits = sorted(limits)
    similarity = np.asarray(similarity, np.float64)
    if not np.isfinite(similarity).all():
        edc.reject_nan(similarity, "pair similarities", pairs.names())
    used = np.flatnonzero(np.bincount(np.concatenate([pairs.a, pairs.b]), minlength=len(pairs.keys)))
    for m in methods:
        if len(m.quality) != len(pairs.keys):
            raise ValueError(f"{m.name}: {len(m.quality)} qualities for {len(pairs.keys)} images")
        edc.reject_nan(m.quality[used], f"image qualities of '{m.name}'", [pairs.keys[i] for i in used])
    names = {m.name for m in methods}
    if compare is None:
        compare = [(methods[0].name, m.name) for m in methods[1:] if m.kind != "reference"] if bootstrap else []
    compare = [split_compare(c, names) for c in compare]
    grid = np.round(np.arange(0.0, grid_max + grid_step / 2, grid_step), 6)
    modes = ["fixed", "recomputed"] if compat else ["fixed"]
    accuracy, acc_threshold = edc.best_accuracy(similarity, pairs.mated)
    verification = {"best_accuracy": accuracy, "best_accuracy_threshold": acc_threshold, "at_fmr": {}}
    for fmr in fmrs:
        t, achieved = edc.threshold_at_fmr(similarity[~pairs.mated], fmr)
        genuine = similarity[pairs.mated]
        verification["at_fmr"][fmr_key(fmr)] = {
            "threshold": t, "achieved_fmr": achieved, "fnmr": float(np.mean(genuine <= t)),
            "false_non_matches": int(np.sum(genuine <= t)),
            "false_matches": int(np.sum(similarity[~pairs.mated] > t)),
            "resolved": bool(fmr * int((~pairs.mated).sum()) >= 1)}
    values = {}
    if bootstrap:
        res = boot.identity_resamples(pairs, bootstrap, bootstrap_seed)
        values = boot.resampled_paucs(res, pairs, similarity, {m.name: m.quality for m in methods}, fmrs, limits,
                                      rule)
    rows, curves = [], {}
    for m in methods:
        q = edc.pair_quality(m.quality[pairs.a], m.quality[pairs.b], rule)
        for mode in modes:
            for fmr in fmrs:
                curve = edc.edc(similarity, pairs.mated, q, fmr, mode, max_discard=max(grid_max, limits[-1]),
                                discard=discard)
                row = {"method": m.name, "kind": m.kind, "mode": mode, "target_fmr": fmr,
                       "threshold": float(curve.threshold[0]), "achieved_fmr": curve.achieved_fmr,
                       "fnmr_0": curve.fnmr0}
                for lim in limits:
                    key = limit_key(lim)
                    row[key] = curve.pauc(lim)
                    row[key + "_norm"] = curve.normalised_pauc(lim)
                    row[key + "_best"] = curve.best_pauc(lim)
                    row[key + "_best_norm"] = (curve.best_pauc(lim) / (curve.fnmr0 * lim) if curve.fnmr0 > 0
                                               else float("nan"))
                    if values and mode == "fixed" and math.isfinite(row[key + "_norm"]):  # no interval around
                        row[key + "_norm_lo"], row[key + "_norm_hi"] = boot.interval(  # an undefined value
                            values[(m.name, fmr, lim)], level)
                rows.append(row)
                curves[f"{m.name}|{mode}|{fmr_key(fmr)}"] = _sampled(curve.at(grid))
                if f"{BEST}|fixed|{fmr_key(fmr)}" not in curves:
                    curves[f"{BEST}|fixed|{fmr_key(fmr)}"] = _sampled(curve.best_fnmr(grid))
    by_row = {(r["method"], r["target_fmr"]): r for r in rows if r["mode"] == "fixed"}
    differences = []
    for a, b in compare:
        for fmr in fmrs:
            for lim in limits:
                key = limit_key(lim) + "_norm"
                diff = {"a": a, "b": b, "target_fmr": fmr, "limit": lim,
                        "point": by_row[(a, fmr)][key] - by_row[(b, fmr)][key]}
                if values and math.isfinite(diff["point"]):  # no interval around a difference that is not one
                    lo, hi = boot.interval(values[(a, fmr, lim)] - values[(b, fmr, lim)], level)
                    diff.update(lo=lo, hi=hi, excludes_zero=bool(hi < 0 or lo > 0))
                differences.append(diff)
    out = {
        "pairs": {"source": pairs.source, "root": str(pairs.root), "pairs": len(pairs),
                  "mated": int(pairs.mated.sum()), "nonmated": int((~pairs.mated).sum()), "images": len(used),
                  "notes": pairs.notes},
        "pair_quality": rule,
        "discard_over": discard,
        "modes": {mode: MODE_LABELS[mode] for mode in modes},
        "fmrs": list(fmrs),
        "pauc_limits": limits,
        "verification": verification,
        "methods": [{"name": m.name, "kind": m.kind, "detail": m.detail,
                     "quality_mean": float(np.mean(m.quality[used])),
                     "quality_median": float(np.median(m.quality[used]))} for m in methods],
        "results": rows,
        "differences": differences,
        "curves": {"discard": grid.tolist(), "fnmr": curves},
    }
    if bootstrap:
        out["bootstrap"] = {"resamples": bootstrap, "seed": bootstrap_seed, "level": level,
                            "identities": len(res.names),
                            "method": "identities drawn with replacement; percentile interval; threshold set again "
                                      "at 0% discard in every resample"}
    return out


def _sampled(values: np.ndarray) -> list:
    return [None if math.isnan(v) else round(float(v), 6) for v in values]


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def table_columns(report: dict) -> list[str]:
    cols = ["method", "kind", "mode", "target_fmr", "threshold", "achieved_fmr", "fnmr_0"]
    intervals = any(limit_key(report["pauc_limits"][0]) + "_norm_lo" in r for r in report["results"])
    for lim in report["pauc_limits"]:
        key = limit_key(lim)
        cols += [key, key + "_norm"] + ([key + "_norm_lo", key + "_norm_hi"] if intervals else [])
        if any(key + "_best" in r for r in report["results"]):
            cols += [key + "_best_norm"]
    return cols


def markdown_table(report: dict) -> str:
    cols = table_columns(report)
    head = {"fnmr_0": "FNMR@0%", "target_fmr": "FMR", "achieved_fmr": "achieved FMR"}
    for lim in report["pauc_limits"]:
        head[limit_key(lim)] = f"pAUC@{round(lim * 100)}%"
        head[limit_key(lim) + "_norm"] = f"pAUC@{round(lim * 100)}% norm."
        head[limit_key(lim) + "_norm_lo"] = f"{round(report.get('bootstrap', {}).get('level', 0.9) * 100)}% low"
        head[limit_key(lim) + "_norm_hi"] = "high"
        head[limit_key(lim) + "_best_norm"] = "theoretical best (norm.)"
    lines = ["| " + " | ".join(head.get(c, c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in report["results"]:
        cells = [_fmt(row.get(c, "")) for c in cols]
        if row["mode"] == "recomputed":
            cells[cols.index("mode")] = "recomputed (COMPAT)"
        lines.append("| " + " | ".join(cells) + " |")
    v = report["verification"]
    p = report["pairs"]
    notes = [f"Pairs: {p['pairs']} ({p['mated']} mated, {p['nonmated']} non-mated) over {p['images']} images; "
             f"{p['source']}.",
             f"Pair quality: {report['pair_quality']} of the two images. Verification: best accuracy "
             f"{v['best_accuracy']:.4f}.",
             "normalised pAUC = pAUC / (FNMR@0% x limit): 1.0 = no better than random discarding, lower is better.",
             "discard fraction: of the " + ("mated comparisons (ISO/IEC 29794-1)"
                                           if report.get("discard_over", "all") == "mated" else "all pairs") + "."]
    if "bootstrap" in report:
        b = report["bootstrap"]
        notes.append(f"intervals: {round(b['level'] * 100)}% over {b['resamples']} bootstrap resamples of the "
                     f"{b['identities']} identities (seed {b['seed']}).")
    for d in report.get("differences", []):
        interval = (f" [{d['lo']:.4f}, {d['hi']:.4f}]" + (" (excludes 0)" if d["excludes_zero"] else "")
                    if "lo" in d else "")
        notes.append(f"difference {d['a']} - {d['b']} at FMR {d['target_fmr']:g}, pAUC@{round(d['limit'] * 100)}% "
                     f"norm.: {d['point']:+.4f}{interval}.")
    for mode, label in report["modes"].items():
        notes.append(f"mode `{mode}`: {label}.")
    for k, a in v["at_fmr"].items():
        errors = a.get("false_non_matches")
        if errors == 0:
            notes.append(f"FMR {k}: no false non-match at 0% discard: nothing for a quality to discard (normalised "
                         "pAUC undefined, no EDC picture).")
        elif errors is not None and errors < FEW_ERRORS:
            notes.append(f"FMR {k}: only {errors} false non-matches at 0% discard: every figure at this FMR rests on "
                         "them (wide intervals; a point estimate can fall outside its percentile interval).")
    unresolved = unresolved_note(report)
    if unresolved:
        notes.append(unresolved + ".")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def unresolved_note(report: dict) -> str | None:
    """What to say about the target FMRs the pair set cannot resolve (fewer than one false match allowed with its
    non-mated pairs): each of their thresholds is the highest non-mated similarity, so several such FMRs repeat one
    another's figures. None when every FMR is resolved."""
    unresolved = [k for k, a in report["verification"]["at_fmr"].items() if not a["resolved"]]
    if not unresolved:
        return None
    nonmated = report["pairs"]["nonmated"]
    same = "; their rows are the same figures at that one threshold" if len(unresolved) > 1 else ""
    return (f"FMR {', '.join(unresolved)}: fewer than one false match allowed with {nonmated} non-mated pairs: the "
            f"threshold is the highest non-mated similarity (achieved FMR 0){same}; at least "
            f"{math.ceil(1 / min(float(k) for k in unresolved)):,} non-mated pairs resolve "
            f"{'them' if len(unresolved) > 1 else 'it'} (--impostors)")


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
            w.writerow([row.get(c, "") if not isinstance(row.get(c), float) else f"{row[c]:.6g}" for c in cols])
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
