"""One entry from a model name or path to something that scores: `open_model(settings) -> Runner` and
`open_scorer(settings) -> Scorer`, used by score, gate, eval, bench, serve and the Ray actors alike.

`model=None` is the default FR model: dlib's face-recognition ResNet from the PyPI package face_recognition_models,
converted once to ONNX (112x112 ArcFace-crop input, `onnx_export.dlib_resnet`) and kept in the user cache directory.

The converted file carries its preprocessing in the fiqa-trt ONNX metadata (RGB, mean = dlib's avg_red/green/blue,
std 256), so it needs no registry entry. Its name holds the .dat's sha256 and the importer version, so a changed
package file or a changed converter never reuses a stale conversion.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fiqa_trt.engine.settings import ScoringSettings
from fiqa_trt.errors import FiqaError
from fiqa_trt.files import cache_dir, package_model_file, sha256_of

log = logging.getLogger("fiqa_trt")
DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"


def dlib_model_file() -> Path:
    """The .dat inside the installed face_recognition_models (FiqaError naming the package when it is missing)."""
    return package_model_file(DAT_NAME)


def converted_model_path(dat_sha256: str, importer_version: int | None = None) -> Path:
    """Where the conversion of a .dat with this checksum, by this importer version, is cached."""
    from fiqa_trt.onnx_export import dlib_resnet

    version = dlib_resnet.IMPORTER_VERSION if importer_version is None else importer_version
    return cache_dir() / "models" / f"{dlib_resnet.MODEL_NAME}-arcface112-{dat_sha256[:16]}-v{version}.onnx"


def default_model_path() -> Path:
    """The default model as an ONNX file with 112x112 ArcFace-crop input; converted on first use (a few seconds)."""
    from fiqa_trt.onnx_export import dlib_resnet

    dat = dlib_model_file()
    out = converted_model_path(sha256_of(dat))
    if out.is_file():
        return out
    log.warning("first use of the default model: converting dlib's face-recognition ResNet (%s) to ONNX, once, "
                "into %s", dat.name, out)
    try:
        dlib_resnet.export_arcface_input_model(dat, out)
    except OSError as exc:
        raise FiqaError(f"cannot write the converted default model to {out.parent}: {exc.strerror or exc} "
                        "(set FIQA_TRT_CACHE to a writable folder)") from None
    return out


def model_or_default(model: str | None) -> str:
    """The model a command was given, or the default model's path when it was given none."""
    return str(default_model_path()) if model is None else model


def open_model(settings: ScoringSettings):
    """The runner for `settings.model` (the default model when None) with its backend, precision, device, threads
    and preprocessing overrides."""
    from fiqa_trt.engine.runners import load_runner

    return load_runner(model_or_default(settings.model), backend=settings.backend, precision=settings.precision,
                       threads=settings.threads, device=settings.device, **settings.overrides)


def open_recipe(settings: ScoringSettings):
    """(recipe, where it came from) for `settings`: `recipe` by name or file, else the model's default; (None, ...)
    when `perturb` asks for a plain stability score of those views."""
    from fiqa_trt.engine.recipes import resolve
    from fiqa_trt.kernels import AGGREGATIONS

    if settings.agg not in AGGREGATIONS:
        raise FiqaError(f"unknown aggregation '{settings.agg}'; use one of: {', '.join(AGGREGATIONS)}")
    if settings.perturb:
        if settings.recipe is not None:
            raise FiqaError("--recipe names its own views; --perturb sets the views of a plain stability score: "
                            "give one of them")
        return None, ("a plain stability score of the --perturb views instead of the model's recipe (no 0-100 "
                      "score; not realigned unless --realign auto|on)")
    recipe, source = resolve(settings.recipe, model_or_default(settings.model))
    if settings.agg != "mean":
        raise FiqaError(f"--agg {settings.agg} aggregates the view cosines of a --perturb stability score; recipe "
                        f"'{recipe.name}' fuses its own signals (give --perturb SPEC --agg {settings.agg})")
    if settings.views != 1:
        raise FiqaError(f"--views draws views of the --perturb specs; recipe '{recipe.name}' has its own views "
                        "(give --perturb SPEC --views K)")
    return recipe, source


def check_template(settings: ScoringSettings, items: list, input_size: tuple[int, int]) -> tuple[ScoringSettings, str]:
    """Run the template check on a sample of `items` (unless photos are aligned or realign is off) and return the
    settings carrying the realignment matrix when the check decides to realign, with a one-line report. Done once
    per run (the Ray driver does it and hands the matrix to every actor)."""
    from fiqa_trt.engine.template import realigner_for

    if settings.align or settings.all_faces:
        return settings, "photos are aligned to the ArcFace template by the face aligner: no template check"
    recipe, _ = open_recipe(settings)
    mode = settings.realign or (recipe.realign if recipe is not None else "off")
    realigner, report = realigner_for(items, input_size, mode, settings.seed,
                                      each=recipe is not None and recipe.realign_each)
    if realigner is None and settings.realign is None and mode == "off":
        report = ("template check off: the recipe does not realign" if recipe is not None else
                  "template check off: a --perturb stability score is not realigned") + " (--realign auto realigns)"
    matrix = tuple(map(tuple, realigner.check.matrix.tolist())) if realigner is not None else None
    return settings.with_(template=matrix), report


def open_scorer(settings: ScoringSettings, runner=None):
    """A Scorer for `settings` on `runner` (opened from the settings when not given), with its quality recipe, and a
    face aligner when the settings align photos first or a realigner when `check_template` found one."""
    from fiqa_trt.engine.scorer import Scorer

    aligner = None
    if settings.align or settings.all_faces:
        from fiqa_trt.engine.detect import make_aligner

        aligner = make_aligner(settings.detector, all_faces=settings.all_faces, min_score=settings.min_face_score)
    runner = runner if runner is not None else open_model(settings)
    recipe, source = open_recipe(settings)
    if aligner is None and settings.template is not None:
        from fiqa_trt.engine.template import Realigner, TemplateCheck

        aligner = Realigner(TemplateCheck.of_matrix(settings.template), runner.config.input_size,
                            each=recipe is not None and recipe.realign_each)
    scorer = Scorer(runner, list(settings.perturb) or None, views=settings.views, agg=settings.agg,
                    seed=settings.seed, batch_size=settings.batch_size, threads=settings.threads, aligner=aligner,
                    recipe=recipe)
    scorer.recipe_source = source
    return scorer
