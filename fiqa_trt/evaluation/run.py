"""One whole evaluation run (the library behind `fiqa-trt eval`): pairs, one embedding pass, the EDC of every
method, the report files and pictures. `EvalSettings` holds what the run needs besides the scoring settings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fiqa_trt.engine.settings import ScoringSettings
from fiqa_trt.errors import FiqaError


@dataclass(frozen=True)
class EvalSettings:
    images: str  # the image root the pair paths are relative to (identity folders for `generate`)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    pairs: str | None = None
    protocol: str = "auto"
    generate: bool = False
    max_mated_per_identity: int = 20
    impostors: int | None = None
    pair_limit: int | None = None
    all_kinds: bool = False
    pair_quality: str = "min"
    fmrs: tuple[float, ...] = ()
    pauc_limits: tuple[float, ...] = ()
    compat: bool = False
    external: tuple[str, ...] = ()  # NAME=PATH score files of other methods
    lower_is_better: tuple[str, ...] = ()
    plots: bool = True
    plot_max_discard: float = 0.5


def _parse_external(specs: list[str], negate: list[str]) -> list[tuple[str, Path, bool]]:
    out, names = [], set()
    for spec in specs:
        name, eq, path = spec.partition("=")
        if not eq:
            name, path = Path(spec).stem, spec
        name, path = name.strip(), path.strip()
        if not name or not path:
            raise FiqaError(f"--external '{spec}': use NAME=PATH or PATH")
        if name in names:
            raise FiqaError(f"--external: the name '{name}' is given twice (use NAME=PATH to tell them apart)")
        names.add(name)
        out.append((name, Path(path), name in negate))
    unknown = set(negate) - names
    if unknown:
        raise FiqaError(f"--lower-is-better names no --external method: {', '.join(sorted(unknown))}")
    return out


def draw_pictures(report: dict, keys: list[str], qualities: dict[str, np.ndarray], root: Path, out_dir: Path,
                  fmrs: list[float] | None = None, methods: list[str] | None = None, max_discard: float = 0.5,
                  faces: int = 16, cols: int = 8, select: str = "spread", grid_method: str | None = None) -> list[Path]:
    """Every picture of an evaluation: EDC per target FMR and mode, histograms, one annotated face grid."""
    from fiqa_trt.evaluation import plots
    from fiqa_trt.evaluation.report import fmr_key

    written = []
    for fmr in fmrs or report["fmrs"]:
        if fmr_key(fmr) not in {fmr_key(f) for f in report["fmrs"]}:
            raise FiqaError(f"the results hold FMR {', '.join(f'{f:g}' for f in report['fmrs'])}, not {fmr:g}")
        for mode in report["modes"]:
            suffix = "" if mode == "fixed" else f"_{mode}"
            written += plots.plot_edc(report, fmr, out_dir / f"edc_fmr{fmr_key(fmr)}{suffix}", mode, methods,
                                      max_discard)
    kinds = {m["name"]: m["kind"] for m in report["methods"]}
    shown = {n: q for n, q in qualities.items()
             if (n in methods if methods else kinds.get(n) != "reference")}  # random qualities: no picture
    written += plots.plot_histograms(shown, out_dir / "quality_hist")
    engine = [n for n, kind in kinds.items() if kind == "engine"]
    name = grid_method or (engine[0] if engine else next(iter(qualities)))
    if name not in qualities:
        raise FiqaError(f"--grid-method: no method '{name}'; the results hold: {', '.join(qualities)}")
    written += plots.plot_face_grid([str(root / k) for k in keys], qualities[name], out_dir / f"faces_{_safe(name)}",
                                    faces, cols, select, title=f"{name}: faces by quality ({select}), lowest first")
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]


def run_eval(settings: EvalSettings, out_dir: str | Path, say: Callable[[str], None] | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """The whole `fiqa-trt eval` run: pairs, one embedding pass, EDC of every method, files. Returns the report."""
    from fiqa_trt.engine.models import open_model
    from fiqa_trt.evaluation import external as ext
    from fiqa_trt.evaluation import protocols, report as rep, sweep
    from fiqa_trt.evaluation.edc import PAIR_RULES

    s, scoring = settings, settings.scoring
    pairs, generate, pair_quality = s.pairs, s.generate, s.pair_quality
    if pairs and generate:
        raise FiqaError("pass either --pairs FILE or --generate, not both")
    if not pairs and not generate:
        raise FiqaError("no pairs: pass --pairs FILE (a pair list) or --generate (pairs from identity folders)")
    if pair_quality not in PAIR_RULES:
        raise FiqaError(f"unknown --pair-quality '{pair_quality}'; use one of: {', '.join(PAIR_RULES)}")
    fmrs = list(s.fmrs or rep.DEFAULT_FMRS)
    for f in fmrs:
        if not 0 < f < 1:
            raise FiqaError(f"--fmr {f:g} must be strictly between 0 and 1 (e.g. 1e-3)")
    limits = sorted(s.pauc_limits or rep.DEFAULT_LIMITS)
    for lim in limits:
        if not 0 < lim <= 1:
            raise FiqaError(f"--pauc-limit {lim:g} must be in (0, 1]")
    if not 0 < s.plot_max_discard <= 1:
        raise FiqaError("--plot-max-discard must be in (0, 1]")
    externals = _parse_external(list(s.external), list(s.lower_is_better))

    if generate:
        pair_set = protocols.generate_pairs(s.images, s.max_mated_per_identity, s.impostors, scoring.seed)
    else:
        pair_set = protocols.read_pairs(pairs, s.images, s.protocol)
    if s.pair_limit is not None:
        pair_set = pair_set.subset(s.pair_limit)
    if pair_set.mated.all() or not pair_set.mated.any():  # say so before the long embedding pass
        raise FiqaError(f"{pair_set.describe()}: an EDC needs both mated and non-mated pairs")
    scores = []
    for name, path, negate in externals:  # read and match before the long embedding pass
        values = ext.match_scores(ext.read_scores(path), pair_set.keys, f"score file {path.name}")
        scores.append(rep.Method(name, "external", f"{path}" + (" (negated: lower is better)" if negate else ""),
                                 -values if negate else values))
    specs = list(sweep.ALL_KINDS) + list(scoring.perturb) if s.all_kinds else list(scoring.perturb) or None
    runner = open_model(scoring)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    if say:
        say(f"{pair_set.describe()}; model {runner.config.name} on {runner.name}")
    started = time.perf_counter()
    embedded = sweep.embed_specs(runner, pair_set.root, pair_set.keys, specs, scoring.views, scoring.agg, scoring.seed,
                                 scoring.batch_size, scoring.threads,
                                 progress=(lambda n: progress(n, len(pair_set.keys))) if progress else None)
    elapsed = time.perf_counter() - started

    report, methods, pair_set = sweep.evaluate_sweep(
        pair_set, embedded, scores, scoring.seed, scoring.agg, fmrs=fmrs, limits=limits, rule=pair_quality, compat=s.compat,
        grid_max=max(s.plot_max_discard, limits[-1]))
    report["settings"] = {
        "model": str(scoring.model or runner.config.name), "model_name": runner.config.name, "backend": runner.name,
        "precision": runner.precision, "specs": embedded.specs, "views": embedded.views,
        "views_per_random_spec": scoring.views, "agg": scoring.agg, "seed": scoring.seed,
        "batch_size": scoring.batch_size, "embedding_pass_seconds": round(elapsed, 1),
        "images_per_second": round(len(pair_set.keys) / elapsed, 2) if elapsed > 0 else None}
    rep.write_report(report, out)
    rep.write_qualities(out / "qualities.csv", pair_set.keys, methods, embedded.errors)
    if s.plots:
        draw_pictures(report, pair_set.keys, {m.name: m.quality for m in methods}, pair_set.root, out,
                      max_discard=s.plot_max_discard)
    if say:
        say(f"written to {out}/: results.json, results.csv, results.md, qualities.csv"
            + (", pictures (PNG + SVG)" if s.plots else ""))
    return report
