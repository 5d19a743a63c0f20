"""The `fiqa-trt bench` command: quality scores/s per backend, precision, K and batch, FLOP/s against the peak."""

from __future__ import annotations

import logging
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from fiqa_trt.cli import args
from fiqa_trt.cli.console import err, setup_logging
from fiqa_trt.cli.progress import Reporter
from fiqa_trt.engine.settings import ScoringSettings
from fiqa_trt.errors import FiqaError


@args.command(args.MODEL, args.RUNTIME.without("backend", "precision", "threads", "batch_size"))
def bench(
    data: str = typer.Option(..., "--data", "-d", help="Images to score (a folder, an image or a list file)."),
    images: int = typer.Option(512, help="Images per measurement."),
    backend: Optional[list[str]] = typer.Option(None, help="Backend(s) to measure (default: all installed)."),
    precision: Optional[list[str]] = typer.Option(None, help="Precision(s) (default: all the CPU runs natively)."),
    views: list[int] = typer.Option([1, 4], "--views", "-k", help="Views per image K (repeatable)."),
    batch_size: list[int] = typer.Option([32], "--batch-size", "-b", help="Batch size(s), in images."),
    ranking_images: int = typer.Option(1000, help="Images for the reduced-precision ranking check."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Write the JSON report here."),
    recipe: Optional[list[str]] = typer.Option(None, "--recipe", help="Also measure these quality recipes end to "
                                               "end (names or files; 'default': the model's own), next to the seed "
                                               "recipe, repeatable."),
    settings: ScoringSettings = None,
) -> None:
    """Measure quality scores/s per backend, precision, K and batch size, with FLOP/s against the measured peak."""
    import json

    from fiqa_trt.benchmark import run_benchmark

    setup_logging(False)
    logging.getLogger("fiqa_trt").setLevel(logging.WARNING)
    if images < 1:
        raise FiqaError(f"--images {images}: measure at least 1 image")
    if ranking_images < 2:
        raise FiqaError(f"--ranking-images {ranking_images}: the ranking check of a reduced precision needs at "
                        "least 2 images")
    if any(k < 1 for k in views) or any(b < 1 for b in batch_size):
        raise FiqaError("--views and --batch-size: every value at least 1")
    from fiqa_trt.engine.models import model_or_default

    settings.check()
    with Reporter(err) as reporter:
        reporter.phase("measuring (each configuration is reported when done)")
        report = run_benchmark(model_or_default(settings.model), data, images=images, backends=backend,
                               precisions=precision, views=tuple(views), batch_sizes=tuple(batch_size),
                               ranking_images=ranking_images, device=settings.device, progress=reporter.say,
                               recipes=[None if r == "default" else r for r in recipe] if recipe else None,
                               preprocessing=settings.overrides)
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
    for r in report.get("recipe_rows", []):
        console.print(f"recipe {r['recipe']}: {r['quality_scores_per_s']:.1f} quality scores/s, "
                      f"{r['forwards_per_score']} forwards per score ({r['backend']} {r['precision']}, realigned: "
                      f"{r['realigned']}, template check {r['template_check_seconds']} s)")
    for c in report["ranking_checks"]:
        console.print(f"ranking check {c['backend']} {c['precision']}: Spearman {c['spearman_vs_fp32']:.4f} vs "
                        f"fp32 on {c['images']} images ({'passed' if c['passed'] else 'FAILED'}, threshold "
                        f"{c['threshold']})")
    if out:
        from pathlib import Path

        Path(out).write_text(json.dumps(report, indent=2) + "\n")
        err.print(f"written {out}")


def register(app: typer.Typer) -> None:
    app.command()(bench)
