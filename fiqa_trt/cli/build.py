"""The `fiqa-trt build` command: build (or find in the cache) the TensorRT engine of an ONNX model.

`register(app)` adds it to the main typer app. tensorrt and cupy are imported only when a build runs. NOT YET
EXECUTED on a GPU: the command has only been checked for its options and its error without TensorRT.
"""

from __future__ import annotations

from typing import Optional

import typer


def build(
    model: str = typer.Argument(..., help="An ONNX FR model (FP16 comes from an FP16 ONNX: `fiqa-trt export --fp16`)."),
    profile: str = typer.Option("1,64,256", "--profile", help="Dynamic batch MIN,OPT,MAX of the optimisation profile."),
    workspace_gib: float = typer.Option(4.0, "--workspace-gib", help="Builder workspace limit (GiB)."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Engine and timing-cache folder (default: "
                                            "the user cache directory's tensorrt/)."),
    precision: str = typer.Option("auto", "--precision", help="auto (the ONNX file's), fp32, or fp16 (an FP32 ONNX "
                                  "is converted to FP16 first: engines are strongly typed)."),
    device: str = typer.Option("cuda", "--device", help="The GPU to build for: cuda or cuda:N (engines are "
                               "specific to a GPU model)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when a cached engine matches."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More detail."),
) -> None:
    """Build a TensorRT engine (strongly typed, dynamic batch) cached under ONNX + TensorRT + GPU + profile."""
    from fiqa_trt.cli.console import err, setup_logging
    from fiqa_trt.engine.runners.tensorrt import Profile, build_engine

    from fiqa_trt.engine.device import parse_device
    from fiqa_trt.errors import FiqaError

    setup_logging(verbose)
    kind, index = parse_device(device)
    if kind != "cuda":
        raise FiqaError(f"--device {device}: TensorRT engines are built for a GPU; use cuda or cuda:N")
    parsed = Profile.parse(profile)
    path, key = build_engine(model, parsed, cache_dir, workspace_gib=workspace_gib, force=force,
                             device_id=index or 0, precision=precision)
    err.print(f"engine {path} ({key['precision']}, TensorRT {key['tensorrt']}, {key['gpu']}, "
                       f"sm {key['compute_capability']}, batch {parsed.min}..{parsed.max})")
    typer.echo(path)


def register(app: typer.Typer) -> None:
    app.command(name="build")(build)
