"""The `fiqa-trt export` command: a face-recognition checkpoint to ONNX with its preprocessing in the metadata.

`register(app)` adds it to the main typer app. torch is imported only when an export runs. User mistakes raise
FiqaError (printed by the main CLI without a traceback, exit 2).
"""

from __future__ import annotations

import logging
from typing import Optional

import typer
from rich.markup import escape

from fiqa_trt.cli import args
from fiqa_trt.cli.console import err, setup_logging
from fiqa_trt.engine.settings import ScoringSettings
from fiqa_trt.weights.model_config import ModelConfig

log = logging.getLogger("fiqa_trt")


@args.command(args.MODEL.without("model"))
def export(
    checkpoint: str = typer.Argument(..., help="A checkpoint (.pth/.pt/.ckpt), an ONNX file to re-label, or the name "
                                     "of a known model in the weights folders (`fiqa-trt weights list`)."),
    arch: str = typer.Option("auto", "--arch", "-a", help="Architecture (e.g. iresnet50, adaface_ir101, "
                             "transface_vit_l, magface_iresnet100, crfiqa_iresnet100), or auto: recognised from the "
                             "checkpoint's keys and shapes."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output .onnx (default: <checkpoint>-<arch>.onnx in "
                                      "the current directory)."),
    fp16: bool = typer.Option(False, "--fp16", help="FP16 weights and compute (float32 inputs/outputs, cast at the "
                              "edges), for strongly typed TensorRT networks."),
    fp16_io: bool = typer.Option(False, "--fp16-io", help="With --fp16: float16 inputs and outputs too (for "
                                 "TensorRT; fiqa-trt's own runners feed float32)."),
    aux: bool = typer.Option(False, "--aux", help="Also export the second output: AdaFace's feature norm, "
                             "CR-FIQA's quality score."),
    opset: int = typer.Option(20, help="ONNX opset (17 to 20)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare ONNX Runtime with PyTorch float32 on random "
                               "images before writing (cosine >= 0.99999, fp16 >= 0.999)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="A quality recipe (name or JSON file) to write into "
                                         "the metadata: the model's default recipe wherever the file goes (default: "
                                         "the one the source file carries or the registry holds for it, if any)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More detail."),
    settings: ScoringSettings = None,
) -> None:
    """Export a face-recognition checkpoint to ONNX, or re-label an ONNX file, with its preprocessing (as stated
    with --color/--mean/--std/--input-size, else as known) and its quality recipe in the metadata."""
    setup_logging(verbose)
    from fiqa_trt.engine.recipes import load
    from fiqa_trt.onnx_export.export import export_checkpoint
    from fiqa_trt.weights import locations, zoo

    settings.check()
    stated_recipe = load(recipe).to_dict() if recipe is not None else None
    path, known = locations.resolve(checkpoint)
    if known is not None and arch == "auto":
        arch = known.arch
    if arch.strip().lower() not in ("auto", zoo.ONNX_ARCH):
        arch = zoo.arch(arch).name  # an unknown name fails here, before any work
    err.print(f"exporting [bold]{path}[/] ({'architecture from its keys' if arch == 'auto' else arch}) ...")
    result = export_checkpoint(path, arch=arch, out=out, fp16=fp16, fp16_io=fp16_io, aux=aux, opset=opset,
                               check=check, name=known.name if known else None, preprocessing=settings.overrides,
                               recipe=stated_recipe)
    c = result.config
    shown = ModelConfig.from_dict(c, "export")
    mean, std = (", ".join(f"{v:g}" for v in getattr(shown, k)) for k in ("mean", "std"))
    err.print(f"wrote [bold]{result.path}[/]: {result.arch}, {result.precision}, outputs {', '.join(c['outputs'])}; "
              f"input {c['color']} {c['input_size'][0]}x{c['input_size'][1]}, (x - [{mean}]) / [{std}], "
              f"embedding {c['embedding_size']}{' (L2-normalised)' if c['normalized_output'] else ''}"
              + (f"; recipe '{c['recipe']['name']}'" if c.get("recipe") else ""))
    for note in result.notes:
        err.print(f"  {escape(note)}")
    if result.min_cosine is not None:
        extra = "".join(f", {k} max |diff| {v:.2g}" for k, v in result.aux_max_abs_diff.items())
        err.print(f"parity vs {'PyTorch float32' if result.arch != 'insightface_onnx' else 'the original graph'}: "
                  f"min cosine per embedding {result.min_cosine:.7f} (1 - cos = {1 - result.min_cosine:.1e})"
                  f"{extra} ({result.seconds:.1f} s)")
    if fp16_io:
        err.print("[yellow]note[/]: float16 inputs: for TensorRT; `fiqa-trt score` feeds float32 (export without "
                  "--fp16-io to score it here)")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
