"""The `fiqa-trt eval` and `fiqa-trt viz` commands: parse options, call the evaluation modules, report.

`register(app)` adds both commands to the main typer app. User mistakes raise FiqaError (printed by the main CLI
without a traceback, exit 2).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from fiqa_trt import cli_options as options

from fiqa_trt.errors import FiqaError

log = logging.getLogger("fiqa_trt")


def _console():
    from fiqa_trt import cli as main_cli

    return main_cli.err


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


def eval_command(
    images: str = typer.Argument(..., help="Image root: the folder the pair file's paths are relative to "
                                 "(identity folders for --generate)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="ONNX face-recognition model."),
    pairs: Optional[str] = typer.Option(None, "--pairs", help="Pair file: the shared 'a,b,1|-1' format, LFW/XQLFW "
                                        "pairs.txt, or CPLFW/CALFW pair files."),
    protocol: str = typer.Option("auto", help="Pair-file format: auto, shared, lfw, xqlfw, cplfw, calfw."),
    generate: bool = typer.Option(False, "--generate", help="No pair file: all mated pairs within identity folders "
                                  "(capped) plus sampled non-mated pairs."),
    max_mated: int = typer.Option(20, "--max-mated-per-identity", help="--generate: mated pairs kept per identity."),
    impostors: Optional[int] = typer.Option(None, help="--generate: non-mated pairs (default: as many as mated)."),
    pair_limit: Optional[int] = typer.Option(None, "--pair-limit", help="Use only the first N pairs."),
    perturb: Optional[list[str]] = typer.Option(None, "--perturb", "-p", help="Perturbation spec, repeatable: "
                                                "each is one method of the sweep (see `fiqa-trt perturbations`)."),
    all_kinds: bool = typer.Option(False, "--all-kinds", help="Sweep every registered perturbation at its "
                                   "default strength (plus any --perturb)."),
    views: int = typer.Option(1, "--views", "-k", help="Views drawn per random spec."),
    agg: str = typer.Option("mean", help="Aggregation of the view cosines: mean, min or median."),
    pair_quality: str = typer.Option("min", "--pair-quality", help="Pair quality from its two images: min, max, "
                                     "mean."),
    fmr: Optional[list[float]] = typer.Option(None, "--fmr", help="Target FMR, repeatable (default 1e-2 1e-3 "
                                              "1e-4)."),
    pauc_limit: Optional[list[float]] = typer.Option(None, "--pauc-limit", help="pAUC discard limit, repeatable "
                                                     "(default 0.2 0.3)."),
    compat: bool = typer.Option(False, "--compat", help="Also the COMPATIBILITY mode: threshold re-derived at "
                                "every discard step (as in some published code), labelled 'recomputed'."),
    external: Optional[list[str]] = typer.Option(None, "--external", "-e", help="Quality scores of another method, "
                                                 "NAME=PATH (CSV path,quality / JSON / JSONL / pickle / Parquet), "
                                                 "repeatable."),
    lower_better: Optional[list[str]] = typer.Option(None, "--lower-is-better", help="External NAME whose scores "
                                                     "are better when lower (they are negated)."),
    seed: int = typer.Option(0, help="Seed for perturbations, the pair generator and the random reference."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per batch."),
    threads: options.Threads = None,
    backend: options.Backend = "auto",
    precision: options.Precision = "auto",
    device: options.Device = "auto",
    color: Optional[str] = typer.Option(None, help="Override the model's colour order: RGB or BGR."),
    mean: Optional[float] = typer.Option(None, help="Override the model's input mean (0-255 units)."),
    std: Optional[float] = typer.Option(None, help="Override the model's input std (0-255 units)."),
    out_dir: str = typer.Option("eval-results", "--out-dir", "-o", help="Folder for results and pictures."),
    pictures: bool = typer.Option(True, "--plots/--no-plots", help="Draw the pictures (needs matplotlib)."),
    max_discard: float = typer.Option(0.5, "--plot-max-discard", help="Right end of the EDC plots."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More detail on what is happening."),
) -> None:
    """Evaluate quality by verification: EDC and pAUC of perturbation specs (and score files) on pairs."""
    from fiqa_trt import cli as main_cli

    main_cli._setup_logging(verbose)
    settings = dict(images=images, model=model, pairs=pairs, protocol=protocol, generate=generate,
                    max_mated_per_identity=max_mated, impostors=impostors, pair_limit=pair_limit,
                    perturb=perturb, all_kinds=all_kinds, views=views, agg=agg, pair_quality=pair_quality,
                    fmrs=fmr, pauc_limits=pauc_limit, compat=compat, external=external, lower_is_better=lower_better,
                    seed=seed, batch_size=batch_size, threads=threads, backend=backend, precision=precision,
                    device=device, color=color, mean=mean, std=std, plots=pictures, plot_max_discard=max_discard)
    report = run_eval(out_dir=out_dir, quiet=quiet, **settings)
    if not quiet:
        _summary(report)


def run_eval(images: str, model: str | None, out_dir: str | Path, pairs: str | None = None, protocol: str = "auto",
             generate: bool = False, max_mated_per_identity: int = 20, impostors: int | None = None,
             pair_limit: int | None = None, perturb: list[str] | None = None, all_kinds: bool = False,
             views: int = 1, agg: str = "mean", pair_quality: str = "min", fmrs: list[float] | None = None,
             pauc_limits: list[float] | None = None, compat: bool = False, external: list[str] | None = None,
             lower_is_better: list[str] | None = None, seed: int = 0, batch_size: int = 32,
             threads: int | None = None, backend: str = "auto", precision: str = "auto", device: str = "auto",
             color: str | None = None, mean: float | None = None,
             std: float | None = None, plots: bool = True, plot_max_discard: float = 0.5,
             quiet: bool = True) -> dict:
    """The whole `fiqa-trt eval` run: pairs, one embedding pass, EDC of every method, files. Returns the report."""
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.evaluation import external as ext
    from fiqa_trt.evaluation import protocols, report as rep, sweep
    from fiqa_trt.evaluation.edc import PAIR_RULES

    if model is None:
        raise FiqaError("no model given: pass --model PATH to an ONNX face-recognition model")
    if pairs and generate:
        raise FiqaError("pass either --pairs FILE or --generate, not both")
    if not pairs and not generate:
        raise FiqaError("no pairs: pass --pairs FILE (a pair list) or --generate (pairs from identity folders)")
    if pair_quality not in PAIR_RULES:
        raise FiqaError(f"unknown --pair-quality '{pair_quality}'; use one of: {', '.join(PAIR_RULES)}")
    fmrs = list(fmrs or rep.DEFAULT_FMRS)
    for f in fmrs:
        if not 0 < f < 1:
            raise FiqaError(f"--fmr {f:g} must be strictly between 0 and 1 (e.g. 1e-3)")
    limits = sorted(pauc_limits or rep.DEFAULT_LIMITS)
    for lim in limits:
        if not 0 < lim <= 1:
            raise FiqaError(f"--pauc-limit {lim:g} must be in (0, 1]")
    if not 0 < plot_max_discard <= 1:
        raise FiqaError("--plot-max-discard must be in (0, 1]")
    externals = _parse_external(external or [], lower_is_better or [])

    if generate:
        pair_set = protocols.generate_pairs(images, max_mated_per_identity, impostors, seed)
    else:
        pair_set = protocols.read_pairs(pairs, images, protocol)
    if pair_limit is not None:
        pair_set = pair_set.subset(pair_limit)
    if pair_set.mated.all() or not pair_set.mated.any():  # say so before the long embedding pass
        raise FiqaError(f"{pair_set.describe()}: an EDC needs both mated and non-mated pairs")
    scores = []
    for name, path, negate in externals:  # read and match before the long embedding pass
        values = ext.match_scores(ext.read_scores(path), pair_set.keys, f"score file {path.name}")
        scores.append(rep.Method(name, "external", f"{path}" + (" (negated: lower is better)" if negate else ""),
                                 -values if negate else values))
    specs = list(sweep.ALL_KINDS) + list(perturb or []) if all_kinds else perturb
    runner = load_runner(model, backend=backend, precision=precision, threads=threads, device=device,
                         color=color, mean=mean, std=std)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    console = None if quiet else _console()
    if console:
        console.print(f"{pair_set.describe()}; model [bold]{runner.config.name}[/] on {runner.name}")
    started = time.perf_counter()
    embedded = _embed(runner, pair_set, specs, views, agg, seed, batch_size, threads, console)
    elapsed = time.perf_counter() - started

    report, methods, pair_set = sweep.evaluate_sweep(
        pair_set, embedded, scores, seed, agg, fmrs=fmrs, limits=limits, rule=pair_quality, compat=compat,
        grid_max=max(plot_max_discard, limits[-1]))
    precision = getattr(runner, "precision", "fp32")
    report["settings"] = {
        "model": str(model), "model_name": runner.config.name, "backend": runner.name, "precision": precision,
        "specs": embedded.specs, "views": embedded.views, "views_per_random_spec": views, "agg": agg, "seed": seed,
        "batch_size": batch_size, "embedding_pass_seconds": round(elapsed, 1),
        "images_per_second": round(len(pair_set.keys) / elapsed, 2) if elapsed > 0 else None}
    rep.write_report(report, out)
    rep.write_qualities(out / "qualities.csv", pair_set.keys, methods, embedded.errors)
    if plots:
        draw_pictures(report, pair_set.keys, {m.name: m.quality for m in methods}, pair_set.root, out,
                      max_discard=plot_max_discard)
    if console:
        console.print(f"written to {out}/: results.json, results.csv, results.md, qualities.csv"
                      + (", pictures (PNG + SVG)" if plots else ""))
    return report


def _embed(runner, pair_set, specs, views, agg, seed, batch_size, threads, console):
    from fiqa_trt.evaluation import sweep

    if console is None:
        return sweep.embed_specs(runner, pair_set.root, pair_set.keys, specs, views, agg, seed, batch_size, threads)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from fiqa_trt import cli as main_cli

    progress = Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), main_cli.RateColumn(),
                        TimeRemainingColumn(), console=console)
    with progress:
        task = progress.add_task("embed", total=len(pair_set.keys))
        return sweep.embed_specs(runner, pair_set.root, pair_set.keys, specs, views, agg, seed, batch_size, threads,
                                 progress=lambda n: progress.advance(task, n))


def _summary(report: dict) -> None:
    from rich.table import Table

    from fiqa_trt.evaluation.report import limit_key

    v = report["verification"]
    console = _console()
    console.print(f"verification: best accuracy {v['best_accuracy']:.4f}; "
                  + ", ".join(f"FNMR {a['fnmr']:.4f} at FMR {k} (achieved {a['achieved_fmr']:.2g})"
                              for k, a in v["at_fmr"].items()))
    table = Table(title="EDC, fixed threshold (pAUC normalised: 1.0 = random discarding)")
    lims = report["pauc_limits"]
    for col in ["method", "FMR", "FNMR@0%"] + [f"pAUC@{round(x * 100)}% (norm.)" for x in lims]:
        table.add_column(col, justify="right")
    for row in report["results"]:
        if row["mode"] == "fixed":
            table.add_row(row["method"], f"{row['target_fmr']:g}", f"{row['fnmr_0']:.4f}",
                          *[f"{row[limit_key(x)]:.4f} ({row[limit_key(x) + '_norm']:.3f})" for x in lims])
    console.print(table)


def viz_command(
    source: str = typer.Argument(..., help="An eval output folder (results.json + qualities.csv) or a score file "
                                 "(CSV, JSON, JSONL, pickle, Parquet)."),
    out_dir: Optional[str] = typer.Option(None, "--out-dir", "-o", help="Where the pictures go (default: the eval "
                                          "folder, or the score file's folder)."),
    method: Optional[list[str]] = typer.Option(None, "--method", help="Methods to draw (default: all)."),
    fmr: Optional[list[float]] = typer.Option(None, "--fmr", help="Target FMR(s) of the EDC plots (default: all)."),
    max_discard: float = typer.Option(0.5, "--max-discard", help="Right end of the EDC plots."),
    faces: int = typer.Option(16, help="Faces in the annotated grid."),
    cols: int = typer.Option(8, help="Faces per row."),
    select: str = typer.Option("spread", help="Which faces: spread (over the ranking), lowest or highest."),
    grid_method: Optional[str] = typer.Option(None, "--grid-method", help="Method whose qualities sort the grid."),
    images: Optional[str] = typer.Option(None, "--images", help="Folder the image names are relative to (default: "
                                         "the eval's image root, or the score file's folder)."),
) -> None:
    """Draw EDC curves, quality histograms and an annotated face grid (PNG and SVG)."""
    from fiqa_trt.evaluation import external as ext
    from fiqa_trt.evaluation import plots
    from fiqa_trt.evaluation.report import read_qualities

    src = Path(source)
    if faces < 1 or cols < 1:
        raise FiqaError("--faces and --cols must be at least 1")
    if src.is_dir():
        if not (src / "results.json").is_file() or not (src / "qualities.csv").is_file():
            raise FiqaError(f"{src} is not an eval output folder (no results.json and qualities.csv)")
        report = json.loads((src / "results.json").read_text())
        keys, qualities = read_qualities(src / "qualities.csv")
        root = Path(images or report["pairs"]["root"])
        written = draw_pictures(report, keys, qualities, root, Path(out_dir or src), fmr, method, max_discard, faces,
                                cols, select, grid_method)
    else:
        scores = ext.read_scores(src)
        root = Path(images) if images else src.parent
        names = list(scores)
        q = np.array([scores[n] for n in names], dtype=float)
        out = Path(out_dir or src.parent)
        paths = [n if Path(n).is_absolute() else str(root / n) for n in names]
        written = plots.plot_histograms({src.stem: q}, out / f"{src.stem}_hist")
        written += plots.plot_face_grid(paths, q, out / f"{src.stem}_faces", faces, cols, select,
                                        title=f"{src.stem}: {faces} faces by quality ({select}), lowest first")
    _console().print("written: " + ", ".join(str(p) for p in written))


def register(app: typer.Typer) -> None:
    """Add `eval` and `viz` to the main CLI."""
    app.command("eval")(eval_command)
    app.command("viz")(viz_command)
