"""The `fiqa-trt export` command: a face-recognition checkpoint to ONNX with its preprocessing in the metadata.

`register(app)` adds it to the main typer app. torch is imported only when an export runs. User mistakes raise
FiqaError (printed by the main CLI without a traceback, exit 2).
"""

from __future__ import annotations

import logging
from typing import Optional

import typer

from fiqa_trt.cli.console import err, setup_logging

log = logging.getLogger("fiqa_trt")


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
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More detail."),
) -> None:
    """Export a face-recognition checkpoint to ONNX, with its preprocessing in the metadata."""
    setup_logging(verbose)
    from fiqa_trt.onnx_export.export import export_checkpoint
    from fiqa_trt.weights import locations, zoo

    path, known = locations.resolve(checkpoint)
    if known is not None and arch == "auto":
        arch = known.arch
    if arch.strip().lower() not in ("auto", zoo.ONNX_ARCH):
        arch = zoo.arch(arch).name  # an unknown name fails here, before any work
    err.print(f"exporting [bold]{path}[/] ({'architecture from its keys' if arch == 'auto' else arch}) ...")
    result = export_checkpoint(path, arch=arch, out=out, fp16=fp16, fp16_io=fp16_io, aux=aux, opset=opset,
                               check=check, name=known.name if known else None)
    c = result.config
    err.print(f"wrote [bold]{result.path}[/]: {result.arch}, {result.precision}, outputs {', '.join(c['outputs'])}; "
              f"input {c['color']} {c['input_size'][0]}x{c['input_size'][1]}, (x - {c['mean'][0]:g}) / "
              f"{c['std'][0]:g}, embedding {c['embedding_size']}"
              f"{' (L2-normalised)' if c['normalized_output'] else ''}")
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
