"""The `fiqa-trt eval` and `fiqa-trt viz` commands: parse options, call the evaluation modules, report.

`register(app)` adds both commands to the main typer app. User mistakes raise FiqaError (printed by the main CLI
without a traceback, exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.markup import escape


from fiqa_trt.cli import args
from fiqa_trt.cli.console import err, setup_logging
from fiqa_trt.cli.progress import Reporter
from fiqa_trt.engine.settings import ScoringSettings
from fiqa_trt.errors import FiqaError


@args.command(args.MODEL, args.RUNTIME, args.VIEWS, args.REALIGN, args.OUTPUT)
def eval_command(
    images: str = typer.Argument(..., help="Image root: the folder the pair file's paths are relative to "
                                 "(identity folders for --generate)."),
    pairs: Optional[str] = typer.Option(None, "--pairs", help="Pair file: the shared 'a,b,1|-1' format, LFW/XQLFW "
                                        "pairs.txt, or CPLFW/CALFW pair files."),
    protocol: str = typer.Option("auto", help="Pair-file format: auto, shared, lfw, xqlfw, cplfw, calfw."),
    generate: bool = typer.Option(False, "--generate", help="No pair file: pairs from identity folders (see "
                                  "--generator)."),
    generator: str = typer.Option("all-mated", "--generator", help="--generate: all-mated (every mated pair of at "
                                  "most --max-images-per-identity images per identity, plus --impostors random "
                                  "non-mated pairs) or sampled (at most --max-mated-per-identity mated pairs per "
                                  "identity, as many non-mated)."),
    max_images: int = typer.Option(20, "--max-images-per-identity", help="all-mated: images kept per identity (a "
                                   "seeded sample where there are more)."),
    max_mated: int = typer.Option(20, "--max-mated-per-identity", help="sampled: mated pairs kept per identity."),
    impostors: Optional[int] = typer.Option(None, help="--generate: non-mated pairs (default: all-mated 2,000,000 "
                                            "or all possible; sampled as many as mated)."),
    pair_limit: Optional[int] = typer.Option(None, "--pair-limit", help="Use only the first N pairs."),
    half: Optional[str] = typer.Option(None, "--half", help="Evaluate one half of the seeded identity split: dev or "
                                       "test (pairs with both images in that half)."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the identity split."),
    cross_quality: Optional[float] = typer.Option(None, "--cross-quality", help="Cross-quality protocol: this share "
                                                  "of the images (e.g. 0.5, drawn per image with --seed) degraded "
                                                  "by one realistic kind at a random strength (written under "
                                                  "OUT/cross-quality/); verification and quality on the images as "
                                                  "they then are."),
    cross_quality_kinds: Optional[list[str]] = typer.Option(None, "--cross-quality-kind", help="A kind the "
                                                            "cross-quality protocol draws from, repeatable (default: "
                                                            "blur, motion, noise, bright, dark, jpeg, down, "
                                                            "downjpeg)."),
    all_kinds: bool = typer.Option(False, "--all-kinds", help="Sweep every registered perturbation at its "
                                   "default strength (plus any --perturb)."),
    norm: bool = typer.Option(False, "--norm", help="Also evaluate the L2 norm of the model's raw embedding (no "
                              "extra forward pass) as a quality."),
    method: Optional[list[str]] = typer.Option(None, "--method", help="Another recipe evaluated as a method in "
                                               "the same pass, by name or JSON file, repeatable: e.g. froq (FROQ, "
                                               "its layers packaged for the model or fitted by fiqa-trt calibrate "
                                               "--recipe froq), fast (the model's one-forward recipe), seed; each "
                                               "is method recipe:NAME."),
    pair_quality: str = typer.Option("min", "--pair-quality", help="Pair quality from its two images: min, max, "
                                     "mean."),
    discard: str = typer.Option("mated", "--discard", help="What the discard fraction counts: mated (the mated "
                                "comparisons, ISO/IEC 29794-1) or all (every pair)."),
    bootstrap: int = typer.Option(200, "--bootstrap", help="Resamples of the identities for 90% intervals of each "
                                  "normalised pAUC and of the differences (0: none)."),
    bootstrap_seed: int = typer.Option(0, "--bootstrap-seed", help="Seed of the bootstrap resamples."),
    compare: Optional[list[str]] = typer.Option(None, "--compare", help="A:B, repeatable: interval of the "
                                                "difference of normalised pAUC A - B; method names may hold colons "
                                                "(recipe:NAME:embedding-norm) (default: the first method against "
                                                "every other one)."),
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
    out_dir: str = typer.Option("eval-results", "--out-dir", "-o", help="Folder for results and pictures."),
    pictures: bool = typer.Option(True, "--plots/--no-plots", help="Draw the pictures (needs matplotlib)."),
    max_discard: float = typer.Option(0.5, "--plot-max-discard", help="Right end of the EDC plots."),
    scoring: ScoringSettings = None,
    output: args.Output = None,
) -> None:
    """Evaluate quality by verification: EDC and pAUC of perturbation specs (and score files) on pairs."""
    from fiqa_trt.evaluation.run import EvalSettings, run_eval

    quiet = output.quiet
    setup_logging(output.verbose)
    scoring = scoring.check()
    settings = EvalSettings(images=images, scoring=scoring, pairs=pairs, protocol=protocol, generate=generate,
                            generator=generator, max_images_per_identity=max_images,
                            max_mated_per_identity=max_mated, impostors=impostors, pair_limit=pair_limit,
                            half=half, split_seed=split_seed, cross_quality=cross_quality,
                            cross_quality_kinds=tuple(cross_quality_kinds or ()), norm=norm,
                            methods=tuple(method or ()), discard=discard, bootstrap=bootstrap,
                            bootstrap_seed=bootstrap_seed, compare=tuple(compare or ()),
                            all_kinds=all_kinds, pair_quality=pair_quality, fmrs=tuple(fmr or ()),
                            pauc_limits=tuple(pauc_limit or ()), compat=compat, external=tuple(external or ()),
                            lower_is_better=tuple(lower_better or ()), plots=pictures, plot_max_discard=max_discard)
    with Reporter(err, quiet=quiet) as reporter:
        report = run_eval(settings, out_dir, say=reporter.say, phase=reporter.phase,
                          detail=reporter.say if output.verbose else None,
                          progress=lambda n, total: reporter.advance(n))
    if quiet:
        return
    _summary(report)


def _summary(report: dict) -> None:
    from rich.table import Table

    from fiqa_trt.evaluation.report import FEW_ERRORS, limit_key, unresolved_note

    v = report["verification"]
    console = err
    console.print(f"verification: best accuracy {v['best_accuracy']:.4f}; "
                  + ", ".join(f"FNMR {a['fnmr']:.4f} at FMR {k} (achieved {a['achieved_fmr']:.2g}, "
                              f"{a.get('false_non_matches', '?')} false non-matches)" for k, a in v["at_fmr"].items()))
    for k, a in v["at_fmr"].items():
        if a.get("false_non_matches") == 0:
            console.print(f"[yellow]warning:[/] FMR {k}: no false non-match at 0% discard: nothing for a quality to "
                          "discard (normalised pAUC undefined)")
        elif a.get("false_non_matches", FEW_ERRORS) < FEW_ERRORS:
            console.print(f"[yellow]warning:[/] FMR {k}: only {a['false_non_matches']} false non-matches at 0% "
                          "discard: every figure at this FMR rests on them")
    unresolved = unresolved_note(report)
    if unresolved:
        console.print(f"[yellow]warning:[/] {escape(unresolved)}")
    table = Table(title="EDC, fixed threshold (pAUC normalised: 1.0 = random discarding; [90% interval over "
                        "identities]; theoretical best)")
    lims = report["pauc_limits"]
    for col in ["method", "FMR", "FNMR@0%"] + [f"pAUC@{round(x * 100)}% (norm.)" for x in lims]:
        table.add_column(col, justify="right")

    def cell(row, x):
        key = limit_key(x)
        interval = f" [{row[key + '_norm_lo']:.3f}, {row[key + '_norm_hi']:.3f}]" if key + "_norm_lo" in row else ""
        return f"{row[key]:.4f} ({row[key + '_norm']:.3f}{interval}; best {row[key + '_best_norm']:.3f})"

    for row in report["results"]:
        if row["mode"] == "fixed":
            table.add_row(row["method"], f"{row['target_fmr']:g}", f"{row['fnmr_0']:.4f}", *[cell(row, x) for x in lims])
    console.print(table)
    for d in report.get("differences", []):
        interval = (f" [{d['lo']:+.4f}, {d['hi']:+.4f}]{' excludes 0' if d['excludes_zero'] else ''}"
                    if "lo" in d else "")
        console.print(f"{d['a']} - {d['b']} at FMR {d['target_fmr']:g}, pAUC@{round(d['limit'] * 100)}% norm.: "
                      f"{d['point']:+.4f}{interval}")


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
                                         "the eval's image root; for a score file the folder `score` ran in, the "
                                         "current folder or the score file's folder, whichever holds them)."),
) -> None:
    """Draw EDC curves, quality histograms and an annotated face grid (PNG and SVG)."""
    from fiqa_trt.evaluation import external as ext
    from fiqa_trt.evaluation import plots
    from fiqa_trt.evaluation.report import read_qualities
    from fiqa_trt.evaluation.run import draw_pictures

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
        names, q, what = _score_file(src)
        root = _image_root(src, names, images)
        out = Path(out_dir or src.parent)
        paths = [n if Path(n).is_absolute() else str(root / n) for n in names]
        boxes = _face_boxes(src, names)
        label = "{:.0f}" if what == "score" else "{:.3f}"
        written = plots.plot_histograms({f"{src.stem} ({what})": q}, out / f"{src.stem}_hist")
        written += plots.plot_face_grid(paths, q, out / f"{src.stem}_faces", faces, cols, select, boxes=boxes,
                                        label=label, title=f"{src.stem}: {faces} faces by {what} ({select}), "
                                                           "lowest first")
    err.print("written: " + ", ".join(str(p) for p in written))


def _score_file(src: Path) -> tuple[list[str], np.ndarray, str]:
    """(image names, values, what they are) of a score file: the 0-100 score of a `fiqa-trt score` output that has
    one, else its raw quality; another method's file (CSV path,quality, JSON, pickle ...) as it is."""
    from fiqa_trt.engine import sinks
    from fiqa_trt.evaluation import external as ext

    if src.suffix.lower() in sinks.FORMATS and src.is_file():
        header, rows = sinks.read_rows(src)
        if "path" in header and "quality" in header:
            rows = [r for r in rows if not r.get("error")]
            names = [r["path"] for r in rows]
            score = np.array([np.nan if r.get("score") in (None, "") else float(r["score"]) for r in rows])
            if np.isfinite(score).any():
                return names, score, "score"
            return names, np.array([float(r["quality"]) for r in rows]), "quality"
    scores = ext.read_scores(src)
    names = list(scores)
    return names, np.array([scores[n] for n in names], dtype=float), "quality"


def _image_root(src: Path, names: list[str], images: str | None) -> Path:
    """The folder a score file's image names are relative to: --images, else the folder `fiqa-trt score` ran in
    (Parquet metadata), the current folder or the score file's folder, whichever holds the images."""
    relative = [n for n in names if not Path(n).is_absolute()][:20]
    candidates = [Path(images)] if images else [*_run_folder(src), Path.cwd(), src.parent]
    for root in candidates:
        if not relative or any((root / n).is_file() for n in relative):
            return root
    where = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise FiqaError(f"cannot find the images of {src.name} (e.g. {relative[0]}) under {where}: give --images "
                    "FOLDER, the folder the image names are relative to (where `fiqa-trt score` was run)")


def _run_folder(src: Path) -> list[Path]:
    """The folder a `fiqa-trt score` run that wrote this Parquet file ran in, from its metadata."""
    if src.suffix.lower() != ".parquet" or not src.is_file():
        return []
    try:
        import pyarrow.parquet as pq

        meta = json.loads((pq.read_schema(src).metadata or {}).get(b"fiqa_trt", b"{}"))
    except Exception:  # noqa: BLE001 - not our file, or unreadable: the other candidates remain
        return []
    return [Path(meta["cwd"])] if meta.get("cwd") else []


def _face_boxes(src: Path, names: list[str]) -> list | None:
    """The face boxes of an aligned run's rows (`fiqa-trt score --align` output), in the order of `names`."""
    from fiqa_trt.engine import sinks

    if src.suffix.lower() not in sinks.FORMATS:
        return None
    header, rows = sinks.read_rows(src)
    if "box_left" not in header:
        return None
    keys = ("box_left", "box_top", "box_right", "box_bottom")
    found = {r["path"]: (None if any(r.get(k) in (None, "") for k in keys) else tuple(int(float(r[k])) for k in keys))
             for r in rows}
    return [found.get(n) for n in names]


def register(app: typer.Typer) -> None:
    """Add `eval` and `viz` to the main CLI."""
    app.command("eval")(eval_command)
    app.command("viz")(viz_command)
