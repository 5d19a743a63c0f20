"""The `fiqa-trt` command line: parses options, calls the engine, reports. No scoring logic lives here."""

from __future__ import annotations

import logging
import math
import time
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from fiqa_trt.errors import FiqaError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Face image quality by embedding stability: perturb, embed, compare.")
err = Console(stderr=True)


class RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} img/s" if task.speed else "- img/s", style="cyan")


def _setup_logging(verbose: bool) -> None:
    handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
    logger = logging.getLogger("fiqa_trt")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


@app.command()
def score(
    input: str = typer.Argument(..., help="A folder (recursive), an image, or a text file listing image paths."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="ONNX face-recognition model."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output file: .csv, .jsonl or .parquet "
                                      "(default: CSV on standard output)."),
    perturb: Optional[list[str]] = typer.Option(None, "--perturb", "-p", help="Perturbation spec, repeatable, "
                                                "e.g. 'affine:rot=0.5,scale=1.01,flip=1' or 'gaussian:sigma=4:12'. "
                                                "See `fiqa-trt perturbations`."),
    views: int = typer.Option(1, "--views", "-k", help="Views drawn per random spec (a fixed spec gives one)."),
    agg: str = typer.Option("mean", help="Aggregation of the view cosines: mean, min or median."),
    seed: int = typer.Option(0, help="Seed for every random draw."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per batch (each brings 1+K samples)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for decoding and inference (default: all)."),
    color: Optional[str] = typer.Option(None, help="Override the model's colour order: RGB or BGR."),
    mean: Optional[float] = typer.Option(None, help="Override the model's input mean (0-255 units)."),
    std: Optional[float] = typer.Option(None, help="Override the model's input std (0-255 units)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More detail on what is happening."),
) -> None:
    """Score face images: one row per image with the quality, each view's cosine and any error."""
    _setup_logging(verbose)
    from fiqa_trt.engine.inputs import list_items
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.engine.scorer import Scorer
    from fiqa_trt.engine.sinks import Sink

    if model is None:
        raise FiqaError("no model given: pass --model PATH to an ONNX face-recognition model")
    items = list_items(input)
    runner = load_runner(model, threads=threads, color=color.upper() if color else None, mean=mean, std=std)
    scorer = Scorer(runner, perturb, views=views, agg=agg, seed=seed, batch_size=batch_size, threads=threads)
    cfg = runner.config
    sink = Sink(out, scorer.view_labels, metadata={
        "model": model, "config": cfg.to_dict(), "perturb": [s.label() for s in scorer.specs],
        "views": scorer.view_labels, "agg": agg, "seed": seed, "batch_size": batch_size})
    if not quiet:
        err.print(f"[bold]{len(items)}[/] items, model [bold]{cfg.name}[/] ({cfg.color}, {cfg.input_size[0]}x"
                  f"{cfg.input_size[1]}, from {cfg.source}), {len(scorer.views)} view(s): "
                  + ", ".join(s.label() for s in scorer.specs))
    scored, failures, qualities, started = 0, [], [], time.perf_counter()
    progress = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                        TimeRemainingColumn(), console=err, disable=quiet, transient=False)
    interrupted = False
    with progress:
        task = progress.add_task("score", total=len(items))
        buffer = []
        try:
            for result in scorer.score(items, progress=lambda n: progress.advance(task, n)):
                buffer.append(result)
                if result.error:
                    failures.append(result)
                else:
                    scored += 1
                    qualities.append(result.quality)
                if len(buffer) >= scorer.batch_size:
                    sink.write(buffer)
                    buffer = []
        except KeyboardInterrupt:
            interrupted = True
        finally:
            sink.write(buffer)
            sink.close()
    elapsed = time.perf_counter() - started
    if not quiet:
        _summary(scored, failures, qualities, elapsed, scorer.resized, out)
    if interrupted:
        err.print("[yellow]interrupted[/]: the rows scored so far are written")
        raise typer.Exit(130)
    if scored == 0:
        err.print("[red]error:[/] no image could be scored")
        raise typer.Exit(1)


def _summary(scored: int, failures: list, qualities: list, elapsed: float, resized: int, out: str | None) -> None:
    import numpy as np

    table = Table(show_header=False, box=None)
    table.add_row("scored", f"{scored}")
    table.add_row("failed", f"{len(failures)}")
    if qualities:
        q = np.asarray(qualities)
        table.add_row("quality mean / median", f"{q.mean():.4f} / {np.median(q):.4f}")
    if resized:
        table.add_row("resized", f"{resized} (not at the model's input size)")
    rate = (scored + len(failures)) / elapsed if elapsed > 0 else math.nan
    table.add_row("time", f"{elapsed:.1f} s ({rate:.1f} images/s)")
    if out:
        table.add_row("written", out)
    err.print(table)
    for r in failures[:10]:
        err.print(f"  [yellow]{r.path}[/]: {r.error}")
    if len(failures) > 10:
        err.print(f"  ... and {len(failures) - 10} more (see the error column)")


@app.command()
def perturbations() -> None:
    """List the perturbations, their parameters and defaults."""
    from fiqa_trt.engine.perturbations import DEFAULT_SPEC, describe

    console = Console()
    for name, help_text, params in describe():
        console.print(f"[bold]{name}[/]: {help_text}")
        for pname, default, phelp in params:
            console.print(f"    {pname} = {default:<6} {phelp}")
    console.print(f"\ndefault: --perturb '{DEFAULT_SPEC}'. A value may be a range low:high, drawn per view.")


def main() -> None:
    try:
        app()
    except FiqaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise SystemExit(2)


if __name__ == "__main__":
    main()
