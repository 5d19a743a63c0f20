"""The settings of one scoring run, in one frozen object that score, gate, eval, calibrate, bench, serve and Ray all
take, and the checks of every value in it that need no model.

`ScoringSettings` says which model runs where (model, backend, precision, device, threads, preprocessing
overrides), how each image is perturbed and scored (specs, views, aggregation, seed, batch size) and whether photos
are aligned first, which quality recipe fuses the signals, and whether crops are put back on the model's template.
`engine.resolve.resolve` turns it into what a session runs (each value with where it came from) and
`engine.session.open_session` into a runner and a Scorer. It is plain data (picklable), so a Ray actor receives it
whole. `check()` refuses a bad value in one line before anything is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from fiqa_trt.errors import FiqaError

REALIGN_MODES = ("auto", "on", "off")
COLORS = ("RGB", "BGR")


@dataclass(frozen=True)
class ScoringSettings:
    model: str | None = None  # an ONNX file or checkpoint path; None: the embedded default model
    backend: str = "auto"
    precision: str = "auto"
    device: str = "auto"
    threads: int | None = None  # CPU threads for decoding and inference (None: all)
    color: str | None = None  # preprocessing overrides of the model's config (None: the model's own)
    mean: float | tuple[float, ...] | None = None  # one value for every channel, or one per channel
    std: float | tuple[float, ...] | None = None
    input_size: tuple[int, int] | None = None  # (height, width)
    perturb: tuple[str, ...] = ()  # perturbation specs of a plain stability score (empty: the recipe's views)
    views: int = 1
    agg: str = "mean"
    seed: int = 0
    batch_size: int = 32
    align: bool = False  # detect and align photos before scoring
    all_faces: bool = False  # with align: every face, not only the largest
    detector: str = "hog"
    min_face_score: float | None = None  # with align: weaker detections are not faces (None: the detector's default)
    recipe: object = None  # a recipe name, a recipe JSON file or an engine.recipes.Recipe (None: the model's own)
    realign: str | None = None  # the template check of each crop: auto, on, off (None: the recipe's own setting)
    realign_each: bool | None = None  # realign every crop by its own points, as `on` (None: the recipe's own setting)
    extra: dict = field(default_factory=dict, compare=False)  # options a caller passes through untouched

    def __post_init__(self):
        object.__setattr__(self, "perturb", tuple(self.perturb or ()))
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.input_size, list):
            object.__setattr__(self, "input_size", tuple(self.input_size))

    @property
    def overrides(self) -> dict:
        """The preprocessing overrides given (colour order, mean, std, input size), for `load_runner`."""
        given = dict(color=self.color, mean=self.mean, std=self.std, input_size=self.input_size)
        return {k: v for k, v in given.items() if v is not None}

    @property
    def aligns(self) -> bool:
        """Photos are detected and aligned first (--align or --all-faces)."""
        return self.align or self.all_faces

    def with_(self, **changes) -> "ScoringSettings":
        return replace(self, **changes)

    def check(self) -> "ScoringSettings":
        """FiqaError (one line, naming the option) for a value no run could use; checked before any model loads."""
        from fiqa_trt.engine.runners import BACKENDS, GPU_BACKENDS, PRECISIONS
        from fiqa_trt.kernels import AGGREGATIONS

        if self.backend not in ("auto", *BACKENDS, *GPU_BACKENDS):
            raise FiqaError(f"unknown --backend '{self.backend}'; use auto, {', '.join(BACKENDS + GPU_BACKENDS)}")
        if self.precision not in ("auto", *PRECISIONS):
            raise FiqaError(f"unknown --precision '{self.precision}'; use auto or one of: {', '.join(PRECISIONS)}")
        from fiqa_trt.engine.device import parse_device

        parse_device(self.device)
        if self.threads is not None and self.threads < 1:
            raise FiqaError(f"--threads {self.threads}: give at least 1 (or leave it out for all cores)")
        if self.color is not None and str(self.color).upper() not in COLORS:
            raise FiqaError(f"--color {self.color}: use RGB or BGR")
        check_channels("--mean", self.mean)
        check_channels("--std", self.std, positive=True)
        if self.input_size is not None and (len(self.input_size) != 2 or min(self.input_size) < 1):
            raise FiqaError(f"--input-size {self.input_size}: give HEIGHTxWIDTH, e.g. 112x112")
        if self.views < 1:
            raise FiqaError(f"--views {self.views}: give at least 1")
        if self.batch_size < 1:
            raise FiqaError(f"--batch-size {self.batch_size}: give at least 1")
        if self.agg not in AGGREGATIONS:
            raise FiqaError(f"unknown aggregation '{self.agg}' (--agg); use one of: {', '.join(AGGREGATIONS)}")
        if self.perturb:
            from fiqa_trt.engine.perturbations import parse_spec

            specs = [parse_spec(spec) for spec in self.perturb]
            if self.views > 1 and all(spec.deterministic for spec in specs):
                raise FiqaError(f"--views {self.views} draws views of random specs, but every --perturb spec here is "
                                "fixed (one view each): give a range (e.g. affine:rot=-6:6) or a random kind, or "
                                "leave out --views")
        if self.realign is not None and self.realign not in REALIGN_MODES:
            raise FiqaError(f"unknown --realign '{self.realign}'; use one of: {', '.join(REALIGN_MODES)}")
        from fiqa_trt.engine.detect import DETECTORS

        if self.detector not in DETECTORS:
            raise FiqaError(f"unknown --detector '{self.detector}'; use one of: {', '.join(DETECTORS)}")
        if not self.aligns:
            if self.min_face_score is not None:
                raise FiqaError("--min-face-score applies to detected faces: add --align or --all-faces")
            if self.detector != ScoringSettings.detector:
                raise FiqaError(f"--detector {self.detector} finds faces in photos: add --align or --all-faces")
        elif self.min_face_score is not None and not math.isfinite(self.min_face_score):
            raise FiqaError(f"--min-face-score {self.min_face_score}: give a finite number")
        if isinstance(self.recipe, str) and not self.recipe.strip():
            raise FiqaError("--recipe: give a recipe name or a recipe JSON file")
        return self


def check_channels(option: str, value, positive: bool = False) -> None:
    """One value for every channel or one per channel (three), each finite (and positive for a std)."""
    if value is None:
        return
    values = (value,) if isinstance(value, (int, float)) else tuple(value)
    if len(values) not in (1, 3):
        raise FiqaError(f"{option}: give one value or three (one per channel, in the model's colour order), "
                        f"not {len(values)}")
    for v in values:
        if not math.isfinite(v) or (positive and v <= 0):
            raise FiqaError(f"{option} {','.join(f'{x:g}' for x in values)}: every value must be a finite "
                            + ("positive number" if positive else "number"))
