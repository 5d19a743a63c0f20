"""The `fiqa-trt calibrate` command: fit a quality recipe's weights for one model, report, store in the user cache or
write the model's packaged default recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from fiqa_trt.cli import args
from fiqa_trt.cli.console import ARGUMENTS, err, setup_logging
from fiqa_trt.cli.progress import Reporter
from fiqa_trt.engine.settings import ScoringSettings
from fiqa_trt.errors import FiqaError

FEW_ERRORS = 20  # fewer false non-matches than this on the dev half: the fit is noisy, say so


@args.command(args.MODEL_ARGUMENT, args.RUNTIME, args.REALIGN, args.OUTPUT.without("quiet"))
def calibrate(
    images: str = typer.Argument(..., help="Identity folders IMAGES/<identity>/<image> (a fit on verification "
                                 "pairs), or a folder of face images without identity folders (a fit on "
                                 "pseudo-labels)."),
    pairs: Optional[str] = typer.Option(None, "--pairs", help="A pair file over IMAGES (default: the generated "
                                        "all-mated protocol)."),
    labels: Optional[bool] = typer.Option(None, "--labels/--no-labels", help="Fit on identity labels (identity "
                                          "folders or --pairs) or without (pseudo-labels of the images themselves; no "
                                          "file or folder name is read). Default: with labels where IMAGES holds "
                                          "identity folders, without where it holds images only."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="The recipe whose weights are fitted, by name "
                                         "or JSON file (default: the model's own, else lognorm-ui-flip)."),
    seed: int = typer.Option(0, help="Seed of the identity split, the pair generator and the views (as eval's "
                             "--split-seed and --seed); without labels, of the sample."),
    bootstrap: int = typer.Option(200, help="Bootstrap resamples of the test identities for the 90% intervals (as "
                                  "eval's --bootstrap)."),
    bootstrap_seed: int = typer.Option(0, "--bootstrap-seed", help="Seed of the bootstrap resamples (as eval's)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Also write the report and recipe (JSON)."),
    store: bool = typer.Option(True, "--store/--no-store", help="Store the fitted recipe for this model in the "
                               "user cache (then it is the model's default recipe)."),
    write_package: bool = typer.Option(False, "--write-package", help="Write the fitted recipe as the model's "
                                       "packaged default (fiqa_trt/weights/recipes/<model>.json: a model of the "
                                       "registry), with the named recipes' 0-100 calibrations (two more passes) and "
                                       "this command line, the data, the commit and the date; implies --no-store."),
    package_role: str = typer.Option("default", "--package-role", help="With --write-package: the role the fitted "
                                     "recipe is packaged in: default, or fast (what --recipe fast scores with) or "
                                     "froq; the file's other roles are kept."),
    settings: ScoringSettings = None,
    output: args.Output = None,
) -> None:
    """Fit a recipe's weights on the dev half of a seeded identity split and report the held-out half, or without
    labels on pseudo-labels of the images; store it."""
    from fiqa_trt.benchmark import provenance
    from fiqa_trt.engine import recipes
    from fiqa_trt.engine.resolve import ROLES, resolve, resolve_recipe
    from fiqa_trt.engine.session import open_runner
    from fiqa_trt.evaluation.calibrate import calibrate_model, package_document
    from fiqa_trt.evaluation.labelfree import calibrate_unlabelled
    from fiqa_trt.evaluation.protocols import identities
    from fiqa_trt.files import sha256_of
    from fiqa_trt.weights import registry

    setup_logging(output.verbose)
    settings = settings.check()
    model = settings.model
    if not Path(model).is_file():
        raise FiqaError(f"model file not found: {model}")
    if not Path(images).is_dir():
        raise FiqaError(f"image folder not found: {images}")
    if out and not Path(out).resolve().parent.is_dir():
        raise FiqaError(f"the output folder {Path(out).parent} does not exist")
    if bootstrap < 0 or bootstrap == 1:
        raise FiqaError("--bootstrap: 0 (no intervals) or at least 2 resamples")
    if bootstrap_seed < 0:
        raise FiqaError(f"--bootstrap-seed {bootstrap_seed}: give a seed of at least 0")
    sha = sha256_of(Path(model))
    record = registry.lookup(sha)
    if package_role not in ("default", *ROLES):
        raise FiqaError(f"--package-role {package_role}: use default, {', '.join(ROLES)}")
    if package_role != "default" and not write_package:
        raise FiqaError("--package-role goes with --write-package")
    if write_package:
        if record is None:
            raise FiqaError(f"--write-package writes a registry model's packaged recipe; {model} is not in the "
                            "registry (use --out for a recipe file)")
        store = False
    if recipe is None and write_package and package_role != "default":
        raise FiqaError(f"--package-role {package_role}: name the recipe to fit for it with --recipe NAME|FILE")
    if recipe is None and write_package and record.recipe:  # the packaged one, whatever the user cache holds
        base, source = recipes.Recipe.from_dict(record.recipe, "model registry"), "model registry"
    elif recipe is None:  # the model's own (stored, packaged or in its metadata): refitted
        base, source = resolve_recipe(None, model)
    else:  # the recipe as named or written: its centre and weights are what is fitted here
        base, source = recipes.load_with_source(recipe)
    if package_role == "fast" and base.forwards != 1:
        raise FiqaError(f"--package-role fast: recipe '{base.name}' takes {base.forwards} forwards per image; the fast "
                        "recipe takes one (a recipe without views, e.g. lognorm-ui-check)")
    previous = None
    if write_package:  # the file as it is, whose other roles are kept: read before the fit, not after
        target = registry.RECIPE_DIR / f"{record.name}.json"
        try:
            previous = json.loads(target.read_text()) if target.is_file() else None
        except ValueError as exc:
            raise FiqaError(f"{target} is not a recipe file ({exc}); restore it from the repository") from None
    if base.fusion != "weighted_log":
        if recipe is not None:
            raise FiqaError(f"recipe '{base.name}' has no weights to fit; use a weighted_log recipe "
                            "(e.g. lognorm-ui-flip)")
        base, source = recipes.RECIPES["lognorm-ui-flip"], "named recipe (the model has no weighted recipe)"
    err.print(f"fitting {base.describe()} ({source})")
    settings = settings.with_(recipe=base, seed=seed)
    resolution = resolve(settings)
    if output.verbose:
        for line in resolution.lines():
            err.print(escape(line))
    if labels is None:
        labels = pairs is not None or _has_identity_folders(images)
    if labels:
        identities(images)  # a folder without identity folders is refused before the model loads
    elif pairs or write_package:
        raise FiqaError(f"--no-labels fits on pseudo-labels: {'--pairs' if pairs else '--write-package'} needs the "
                        "identity labels")
    with Reporter(err) as reporter:
        reporter.phase("opening the model")
        runner = open_runner(resolution, settings)
        if not labels:
            done = calibrate_unlabelled(runner, images, base, seed, settings.batch_size, settings.threads,
                                        reporter.advance, settings.realign, reporter.phase)
        else:
            result = calibrate_model(runner, images, base, seed, settings.batch_size, settings.threads, pairs,
                                     reporter.advance, bootstrap, bootstrap_seed, realign=settings.realign,
                                     named=write_package and package_role == "default", phase=reporter.phase)
    if not labels:
        fitted, report = done.recipe, done.report
        lab = report["labels"]
        err.print(f"no identity labels: pseudo-labels of {lab['sample']} sampled images (the mean rank of "
                  + ", ".join(f"{n} (Spearman {c:.3f})" for n, c in lab["component_correlation"].items()) + ")")
        err.print(f"centre: {report['centre']}")
        _report_layers(report)
        err.print(f"weights (fitted to the pseudo-labels, Spearman {lab['fitted_correlation']:.3f}): "
                  + ", ".join(f"{k} {v:g}" for k, v in report["weights"].items()))
        _report_degradations(report)
        err.print(f"0-100 calibration over the {lab['sample']} sampled images: p1 {fitted.calibration[0]:.5f} -> 0, "
                  f"p99 {fitted.calibration[1]:.5f} -> 100")
        _finish(model, sha, record, fitted, {"model": str(model), "sha256": sha, "report": report,
                                             "recipe": fitted.to_dict()}, out, store)
        return
    fitted, report = result.recipe, result.report
    err.print(report["template_check"])
    if report["centre"]:
        err.print(f"centre: {report['centre']}")
    _report_layers(report)
    err.print(f"weights (fitted on the dev half, {report['dev']['identities']} identities): "
              + ", ".join(f"{k} {v:g}" for k, v in report["weights"].items()))
    for half in ("dev", "test"):
        r = report[half]
        err.print(f"{half}: {r['mated']} mated comparisons, normalised pAUC@0.3 " + ", ".join(
            f"FMR {k}: {v:.3f}" + (" [{:.3f}, {:.3f}]".format(*r["npauc30_90"][k]) if "npauc30_90" in r else "")
            + f" ({r['false_non_matches'][k]} false non-matches)" for k, v in r["npauc30"].items()))
    few = {k: n for k, n in report["dev"]["false_non_matches"].items() if n < FEW_ERRORS}
    if few:
        err.print(f"[yellow]warning:[/] the dev half has only {', '.join(f'{n} at FMR {k}' for k, n in few.items())} "
                  f"false non-matches: the weights rest on them and the figures are noisy; calibrate on more "
                  f"identities (or --no-store)")
    _report_degradations(report)
    for name, ref in report["references"].items():
        err.print(f"  vs {name} alone (test): " + ", ".join(
            f"FMR {k}: {v:.3f}" + (", difference 90% [{:+.4f}, {:+.4f}]".format(*ref["difference_90"][k])
                                   if k in ref["difference_90"] else "") for k, v in ref["test_npauc30"].items()))
    err.print(f"0-100 calibration: p1 {fitted.calibration[0]:.5f} -> 0, p99 {fitted.calibration[1]:.5f} -> 100")
    document = {"model": str(model), "sha256": sha, "template_check": report["template_check"],
                "report": report, "recipe": fitted.to_dict()}
    _finish(model, sha, record, fitted, document, out, store)  # store is off with --write-package
    if write_package:
        default_name = record.recipe["name"] if record.recipe else f"{record.name}-default"
        name = default_name if package_role == "default" else \
            f"{default_name.removesuffix('-default')}-{package_role}"
        _write(target, recipes.recipe_json(package_document(
            result, model, sha, record.name, provenance(["fiqa-trt", *ARGUMENTS]), images, name, package_role,
            previous)))
        if package_role == "default":
            err.print(f"written the packaged default recipe of {record.name}: {target} (named calibrations: "
                      + ", ".join(f"{k} {v[0]:.5f} -> {v[1]:.5f}" for k, v in result.calibrations.items()) + ")")
        else:
            err.print(f"written the packaged '{package_role}' recipe of {record.name} ({name}): {target}")


def _has_identity_folders(images: str) -> bool:
    from fiqa_trt.evaluation.protocols import identities

    try:
        return bool(identities(images))
    except FiqaError:
        return False


def _report_layers(report: dict) -> None:
    if report.get("layers"):
        chosen = report["layers"]
        err.print(f"FROQ's layers (chosen on {chosen['faces']} faces; Spearman of their mean norm with the "
                  f"pseudo-labels {chosen['correlation']:.3f}): {', '.join(chosen['layers'])}")
        if chosen.get("check_layer"):
            err.print(f"check layer (obs:0; its norm drops under each degradation for the share of "
                      f"{chosen['check_faces']} faces): {chosen['check_layer']} ("
                      + ", ".join(f"{k} {v:.0%}" for k, v in chosen["check_agreement"].items()) + ")")


def _report_degradations(report: dict) -> None:
    agreed = report["degradation_check"]["agreement"]
    err.print(f"degradation check ({report['degradation_check']['faces']} faces; the share whose quality drops): "
              + ", ".join(f"{k} {v:.0%}" for k, v in agreed.items()))
    if not report["degradation_check"]["meets_floor"]:
        beyond = report["degradation_check"]["out_of_reach"]
        err.print(f"[yellow]warning:[/] the fitted recipe keeps a degraded face below the face for fewer than "
                  f"{report['degradation_check']['floor']:.0%} of the faces under some kind: its signals cannot "
                  "rank those degradations for this model (a recipe with the check layer's obs:0 may, e.g. --recipe "
                  "lognorm-ui-check; or --no-store)"
                  + (f"; no signal alone reaches the floor under {', '.join(beyond)}, so the fit left "
                     f"{'it' if len(beyond) == 1 else 'them'} out" if beyond else ""))


def _finish(model, sha: str, record, fitted, document: dict, out: str | None, store: bool) -> None:
    """Write the report and recipe to `out`, store the fitted recipe as the model's default (`store`)."""
    from fiqa_trt.engine import recipes

    if out:
        _write(Path(out), recipes.recipe_json(document))
        err.print(f"written {out}")
    if store:
        path = recipes.save_calibrated(sha, fitted)
        err.print(f"stored as this model's default recipe: {path}")
        back = f"--recipe {record.recipe['name']} runs the shipped one; " if record is not None and record.recipe \
            else ""
        err.print(f"{back}delete that file to go back to the model's shipped default")


def _write(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file beside it, so that an earlier complete file is never left
    half-written."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text)
        partial.replace(path)
    except OSError as exc:
        raise FiqaError(f"cannot write {path}: {exc.strerror or exc}") from None


def register(app: typer.Typer) -> None:
    app.command()(calibrate)
