"""The typer options that several commands share (runner choice, device, threads), declared once."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Backend = Annotated[str, typer.Option(
    "--backend", help="Runner: auto (on the CPU the fastest installed: openvino, else onnxruntime; on a GPU "
    "tensorrt for an ONNX model), openvino, onnxruntime, tensorrt, or torch (PyTorch checkpoints).")]
Precision = Annotated[str, typer.Option(
    "--precision", help="auto (CPU: bf16 only where a ranking check passed; GPU: fp16), fp32, bf16, fp16.")]
Device = Annotated[str, typer.Option(
    "--device", help="cpu, cuda, cuda:N, or auto (the GPU path when CUDA, DALI and a GPU runner are all here).")]
Threads = Annotated[Optional[int], typer.Option(
    "--threads", help="CPU threads for decoding and inference (default: all).")]


def channels(text: str) -> tuple[float, ...]:
    """One number, or three comma-separated (one per channel, in the model's colour order)."""
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give one number or three, comma-separated (e.g. 103.939,116.779,"
                                 "123.68)") from None
    return values[0] if len(values) == 1 else values


Color = Annotated[Optional[str], typer.Option("--color", help="Override the model's colour order: RGB or BGR.")]
Mean = Annotated[Optional[str], typer.Option(
    "--mean", parser=channels, metavar="V[,V,V]", help="Override the model's input mean (0-255 units): one value, "
    "or one per channel in the model's colour order.")]
Std = Annotated[Optional[str], typer.Option(
    "--std", parser=channels, metavar="V[,V,V]", help="Override the model's input std (0-255 units): one value, or "
    "one per channel.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="More detail on what is happening.")]
Recipe = Annotated[Optional[str], typer.Option(
    "--recipe", help="Quality recipe: a name (seed, stability, norm-flip, norm; lognorm-ui-flip once calibrated) "
    "or a recipe JSON file (default: the model's own recipe; a model without one gets stability only, and says so).")]
Realign = Annotated[Optional[str], typer.Option(
    "--realign", help="Template check of the input crops: auto (put them back on the model's template when they "
    "are off it), on, or off (default: the recipe's setting; the seed recipe: off).")]
