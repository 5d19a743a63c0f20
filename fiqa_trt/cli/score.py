"""The `fiqa-trt score` command: one row per input image (quality, each view's cosine, error), to a file or stdout."""

from __future__ import annotations

import math
import os
import time
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from fiqa_trt.cli import args
from fiqa_trt.cli.console import err, setup_logging
from fiqa_trt.cli.progress import Reporter
from fiqa_trt.engine.settings import ScoringSettings
from fiqa_trt.errors import FiqaError


@args.command(args.MODEL, args.RUNTIME, args.VIEWS, args.ALIGNMENT, args.OUTPUT)
def score(
    input: list[str] = typer.Argument(..., help="Folders (recursive), images, list files (.txt / .lst: image "
                                      "paths) or URIs; several may be given (shell globs too)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output file: .csv, .jsonl or .parquet "
                                      "(default: CSV on standard output)."),
    resume: bool = typer.Option(False, "--resume", help="Keep the rows already in --out (and in the .partial file "
                                "a killed run left), skip their paths, and add the rest."),
    max_file_mb: float = typer.Option(64.0, "--max-file-mb", help="Largest input file read, in MiB (a larger "
                                      "file is an error row; only regular files are read)."),
    ray: bool = typer.Option(False, "--ray", help="Score with Ray Data actors; --out is then a folder of Parquet "
                             "files, and a re-run skips what it holds."),
    ray_address: Optional[str] = typer.Option(None, help="With --ray: a running cluster (default: start a local "
                                              "Ray instance)."),
    workers: Optional[int] = typer.Option(None, help="With --ray: scorer actors (model loaded once each) "
                                          "(default: 2)."),
    cpus_per_worker: Optional[int] = typer.Option(None, help="With --ray: CPUs reserved per actor (its "
                                                  "decode/inference threads; default: 1)."),
    settings: ScoringSettings = None,
    output: args.Output = None,
) -> None:
    """Score face images: one row per image with the quality (the recipe's raw value), its 0-100 score, each view's
    cosine and any error."""
    setup_logging(output.verbose)
    from fiqa_trt.cli.console import Interrupts

    with Interrupts() as interrupts:
        _score(input, out, resume, ray, ray_address, workers, cpus_per_worker, output.quiet, interrupts, max_file_mb,
               output.verbose, settings)


def _score(inputs, out, resume, ray, ray_address, workers, cpus_per_worker, quiet, interrupts, max_file_mb,
           verbose, settings) -> None:
    import logging

    from fiqa_trt.engine.inputs import list_items
    from fiqa_trt.engine.resolve import resolve
    from fiqa_trt.engine.session import open_session
    from fiqa_trt.engine.sinks import Sink, check_output, lock_output, side_files

    settings = settings.check()
    given = [o for o, v in (("--workers", workers), ("--cpus-per-worker", cpus_per_worker),
                            ("--ray-address", ray_address)) if v is not None]
    if given and not ray:
        raise FiqaError(f"{', '.join(given)} set{'s' if len(given) == 1 else ''} up Ray actors: add --ray")
    workers, cpus_per_worker = workers if workers is not None else 2, cpus_per_worker if cpus_per_worker is not None else 1
    if ray:
        args.check_range("--workers", workers, 1)
        args.check_range("--cpus-per-worker", cpus_per_worker, 1)  # the threads of each actor's scorer
        resolve(settings.with_(device="cpu"))  # a mistake in --recipe / --perturb / --agg: before Ray starts (the
        # actors resolve their own device)
        _score_with_ray(inputs, out, settings, workers, ray_address, cpus_per_worker, quiet)
        return
    if not max_file_mb > 0:
        raise FiqaError("--max-file-mb must be above 0")
    if resume and out is None:
        raise FiqaError("--resume needs --out FILE (the rows to keep and append to)")
    check_output(out)  # before the model is opened
    lock = lock_output(out)  # one writer per output: a second run is refused here, before the model loads
    reporter = Reporter(err, quiet=quiet)
    try:
        resolution = resolve(settings)  # a mistake in --recipe / --perturb / --agg: before anything is loaded
        with reporter:
            reporter.phase("listing the inputs")
            items = list_items(inputs, exclude=side_files(out), max_bytes=int(max_file_mb * 1024 * 1024))
            reporter.phase("opening the model")
            session = open_session(settings, resolution=resolution)
    except KeyboardInterrupt:
        raise typer.Exit(interrupts.exit_code) from None
    settings, scorer, runner = session.settings, session.scorer, session.runner
    template_report = session.template_report
    cfg = runner.config
    sink = Sink(out, scorer.view_labels, resume=resume, lock=lock, faces=settings.aligns,
                metadata={
        "model": settings.model or cfg.name, "config": cfg.to_dict(), "perturb": [s.label() for s in scorer.specs],
        "views": scorer.view_labels, "view_specs": {v.label: v.spec.label() for v in scorer.views},
        "agg": scorer.agg, "seed": settings.seed, "batch_size": settings.batch_size,
        "recipe": scorer.recipe.to_dict() if scorer.recipe else None,
        "resolution": session.resolution.to_dict(), "cwd": os.getcwd()})
    if verbose:
        for line in session.resolution.lines():
            err.print(escape(line))
    if not quiet:
        err.print(escape(template_report))
    if not quiet:
        err.print(escape(session.describe_recipe()))
    if scorer.recipe is not None and scorer.recipe.calibration is None:
        from fiqa_trt.quality.scale import GENERIC_WARNING

        err.print("[yellow]warning:[/] " + escape(GENERIC_WARNING if scorer.scale is not None else
                                                  "this recipe has no 0-100 calibration for this model: the score "
                                                  "column stays empty (fiqa-trt calibrate fits one)"))
    todo = sink.todo(items)
    already = len(items) - len(todo)
    if not quiet:
        err.print(f"[bold]{len(items)}[/] items" + (f" ({already} already in {out})" if resume else "")
                  + f", model [bold]{cfg.name}[/] ({cfg.color}, {cfg.input_size[0]}x"
                  f"{cfg.input_size[1]}, from {cfg.source}) on {runner.name} {runner.precision} ({scorer.device}), "
                  f"{len(scorer.views)} view(s): "
                  + ", ".join(s.label() for s in scorer.specs))
    scored, failures, qualities, started = 0, [], [], time.perf_counter()
    interrupted, complete = False, False
    with reporter:
        reporter.phase("scoring", total=len(todo))
        buffer = []
        try:
            for result in scorer.score(todo, progress=reporter.advance):
                buffer.append(result)
                if result.error:
                    failures.append(result)
                else:
                    scored += 1
                    qualities.append((result.quality, result.score))
                if len(buffer) >= scorer.batch_size:
                    with interrupts.shielded():
                        sink.write(buffer)
                    buffer = []
            complete = True
        except KeyboardInterrupt:
            interrupted = True
        finally:
            try:
                with interrupts.shielded():
                    sink.write(buffer)
                    where = sink.close(complete=complete)
            except KeyboardInterrupt:  # a second signal while the last rows were written: they are written
                interrupted, where = True, sink.path
    elapsed = time.perf_counter() - started
    if not quiet:
        _summary(scored, failures, qualities, elapsed, scorer.resized, str(where) if where else None)
        if hasattr(scorer.aligner, "counts"):  # a realigner: what the template check did to the crops
            err.print(escape(scorer.aligner.describe()))
    if scorer.not_crops:
        logging.getLogger("fiqa_trt").warning(
            "%d scored image(s) not at the model's input size show no face where the ArcFace template puts one: "
            "they look like photos, not aligned face crops; score photos with --align", scorer.not_crops)
    if interrupted:
        err.print(f"[yellow]interrupted[/]: the rows scored so far are written to {where or 'standard output'}"
                  + (f" (the earlier {out} is kept; --resume continues from both)" if where != sink.out else ""))
        raise typer.Exit(interrupts.exit_code)
    if scored == 0 and already == 0:
        err.print("[red]error:[/] no image could be scored")
        raise typer.Exit(1)


def _score_with_ray(input, out, settings, workers, address, cpus_per_worker, quiet) -> None:
    from fiqa_trt.scaleout import ray_score

    if out is None:
        raise FiqaError("--ray needs --out FOLDER (Ray writes a folder of Parquet files)")
    summary = ray_score(input, out, settings, workers=workers, address=address, cpus_per_worker=cpus_per_worker)
    if not quiet:
        table = Table(show_header=False, box=None)
        for key in ("items", "already_done", "scored", "failed", "workers", "seconds", "out"):
            table.add_row(key.replace("_", " "), str(summary[key]))
        if summary["seconds"]:
            table.add_row("rate", f"{(summary['scored'] + summary['failed']) / summary['seconds']:.1f} images/s")
        err.print(table)
    if summary["scored"] == 0 and summary["already_done"] == 0:
        err.print("[red]error:[/] no image could be scored")
        raise typer.Exit(1)


def _summary(scored: int, failures: list, qualities: list, elapsed: float, resized: int, out: str | None) -> None:
    """The run in a few lines: counts, the 0-100 score (the raw quality where the recipe has no 0-100 scale), time."""
    import numpy as np

    table = Table(show_header=False, box=None)
    table.add_row("scored", f"{scored}")
    table.add_row("failed", f"{len(failures)}")
    if qualities:
        raw, score = (np.asarray(v, np.float64) for v in zip(*qualities))
        if np.isfinite(score).any():
            table.add_row("score (0-100) mean / median", f"{np.nanmean(score):.1f} / {np.nanmedian(score):.0f}")
        table.add_row("raw quality mean / median", f"{raw.mean():.4f} / {np.median(raw):.4f}")
    if resized:
        table.add_row("resized", f"{resized} (not at the model's input size)")
    rate = (scored + len(failures)) / elapsed if elapsed > 0 else math.nan
    table.add_row("time", f"{elapsed:.1f} s ({rate:.1f} images/s)")
    if out:
        table.add_row("written", out)
    err.print(table)
    for r in failures[:10]:
        err.print(f"  [yellow]{escape(r.path)}[/]: {escape(r.error)}")
    if len(failures) > 10:
        err.print(f"  ... and {len(failures) - 10} more (see the error column)")


def register(app: typer.Typer) -> None:
    app.command()(score)
