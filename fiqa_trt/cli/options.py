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
