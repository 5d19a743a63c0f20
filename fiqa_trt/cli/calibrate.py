"""The `fiqa-trt calibrate` command: fit a quality recipe's weights for one model, report, store in the user cache."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fiqa_trt.cli import options
from fiqa_trt.cli.console import RateColumn, err, setup_logging
from fiqa_trt.errors import FiqaError

FEW_ERRORS = 20  # fewer false non-matches than this on the dev half: the fit is noisy, say so


def calibrate(
    model: str = typer.Argument(..., help="ONNX face-recognition model."),
    images: str = typer.Argument(..., help="Identity folders: IMAGES/<identity>/<image>."),
    pairs: Optional[str] = typer.Option(None, "--pairs", help="A pair file over IMAGES (default: the generated "
                                        "all-mated protocol)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="The recipe whose weights are fitted, by name "
                                         "or JSON file (default: the model's own, else lognorm-ui-flip)."),
    realign: str = typer.Option("auto", "--realign", help="Template check before embedding: auto, on, off."),
    seed: int = typer.Option(0, help="Seed of the identity split, the pair generator and the views."),
    bootstrap: int = typer.Option(1000, help="Bootstrap draws (identities) for the intervals."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Also write the report and recipe (JSON)."),
    store: bool = typer.Option(True, "--store/--no-store", help="Store the fitted recipe for this model in the "
                               "user cache (then it is the model's default recipe)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per batch."),
    threads: options.Threads = None,
    backend: options.Backend = "auto",
    precision: options.Precision = "auto",
    device: options.Device = "auto",
) -> None:
    """Fit a recipe's weights on the dev half of a seeded identity split, report the held-out half, store it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from fiqa_trt.engine import recipes
    from fiqa_trt.engine.inputs import Item
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.files import sha256_of
    from fiqa_trt.engine.template import realigner_for
    from fiqa_trt.evaluation.calibrate import calibrate_model
    from fiqa_trt.evaluation.protocols import identities

    setup_logging(False)
    if not Path(model).is_file():
        raise FiqaError(f"model not found: {model}")
    if not Path(images).is_dir():
        raise FiqaError(f"image folder not found: {images}")
    if out and not Path(out).resolve().parent.is_dir():
        raise FiqaError(f"the output folder {Path(out).parent} does not exist")
    if recipe is None:  # the model's own (stored, packaged or in its metadata): refitted
        base, source = recipes.resolve(None, model)
    else:  # the recipe as named or written: its centre and weights are what is fitted here
        base, source = recipes.load_with_source(recipe)
    if base.fusion != "weighted_log":
        if recipe is not None:
            raise FiqaError(f"recipe '{base.name}' has no weights to fit; use a weighted_log recipe "
                            "(e.g. lognorm-ui-flip)")
        base, source = recipes.RECIPES["lognorm-ui-flip"], "named recipe (the model has no weighted recipe)"
    err.print(f"fitting {base.describe()} ({source})")
    runner = load_runner(model, backend=backend, precision=precision, threads=threads, device=device)
    keys = [k for ks in identities(images).values() for k in ks]
    aligner, check = realigner_for([Item(str(Path(images) / k), k) for k in keys], runner.config.input_size,
                                   realign, seed)
    err.print(check)
    progress = Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                        console=err)
    with progress:
        task = progress.add_task("embed", total=len(keys))
        fitted, report = calibrate_model(runner, images, base, aligner, seed, batch_size, threads, pairs,
                                         lambda n: progress.advance(task, n), bootstrap)
    if report["centre"]:
        err.print(f"centre: {report['centre']}")
    err.print(f"weights (fitted on the dev half, {report['dev']['identities']} identities): "
              + ", ".join(f"{k} {v:g}" for k, v in report["weights"].items()))
    for half in ("dev", "test"):
        r = report[half]
        err.print(f"{half}: {r['mated']} mated comparisons, normalised pAUC@0.3 "
                  + ", ".join(f"FMR {k}: {v:.4f} ({r['false_non_matches'][k]} false non-matches)"
                              for k, v in r["npauc30"].items()))
    few = {k: n for k, n in report["dev"]["false_non_matches"].items() if n < FEW_ERRORS}
    if few:
        err.print(f"[yellow]warning:[/] the dev half has only {', '.join(f'{n} at FMR {k}' for k, n in few.items())} "
                  f"false non-matches: the weights rest on them and the figures are noisy; calibrate on more "
                  f"identities (or --no-store)")
    agreed = report["degradation_check"]["agreement"]
    err.print(f"degradation check ({report['degradation_check']['faces']} dev faces; the share whose quality drops): "
              + ", ".join(f"{k} {v:.0%}" for k, v in agreed.items()))
    if not report["degradation_check"]["meets_floor"]:
        err.print(f"[yellow]warning:[/] the fitted recipe keeps a degraded face below the face for fewer than "
                  f"{report['degradation_check']['floor']:.0%} of the dev faces under some kind: its signals cannot "
                  "rank those degradations for this model (a recipe with the ui signals may; or --no-store)")
    for name, ref in report["references"].items():
        err.print(f"  vs {name} alone (test): " + ", ".join(
            f"FMR {k}: {v:.4f}, difference 90% [{ref['difference_90'][k][0]:+.4f}, "
            f"{ref['difference_90'][k][1]:+.4f}]" for k, v in ref["test_npauc30"].items()))
    err.print(f"0-100 calibration: p1 {fitted.calibration[0]:.5f} -> 0, p99 {fitted.calibration[1]:.5f} -> 100")
    document = {"model": str(model), "sha256": sha256_of(Path(model)), "template_check": check,
                "report": report, "recipe": fitted.to_dict()}
    if out:
        Path(out).write_text(recipes.recipe_json(document))
        err.print(f"written {out}")
    if store:
        path = recipes.save_calibrated(document["sha256"], fitted)
        err.print(f"stored as this model's default recipe: {path}")
        from fiqa_trt.weights.registry import lookup

        record = lookup(document["sha256"])
        back = f"--recipe {record.recipe['name']} runs the shipped one; " if record is not None and record.recipe \
            else ""
        err.print(f"{back}delete that file to go back to the model's shipped default")


def register(app: typer.Typer) -> None:
    app.command()(calibrate)
