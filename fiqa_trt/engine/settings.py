"""The settings of one scoring run, in one frozen object that score, gate, eval, bench, serve and Ray all take.

`ScoringSettings` says which model runs where (model, backend, precision, device, threads, preprocessing
overrides), how each image is perturbed and scored (specs, views, aggregation, seed, batch size) and whether photos
are aligned first, which quality recipe fuses the signals, and whether crops are put back on the model's template.
`engine.models.open_model` / `open_scorer` turn it into a runner and a Scorer. It is plain data
(picklable), so a Ray actor receives it whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class ScoringSettings:
    model: str | None = None  # an ONNX file or checkpoint path; None: the embedded default model
    backend: str = "auto"
    precision: str = "auto"
    device: str = "auto"
    threads: int | None = None  # CPU threads for decoding and inference (None: all)
    color: str | None = None  # preprocessing overrides of the model's config
    mean: float | None = None
    std: float | None = None
    perturb: tuple[str, ...] = ()  # perturbation specs (empty: the default spec)
    views: int = 1
    agg: str = "mean"
    seed: int = 0
    batch_size: int = 32
    align: bool = False  # detect and align photos before scoring
    all_faces: bool = False  # with align: every face, not only the largest
    detector: str = "hog"
    min_face_score: float | None = None  # with align: weaker detections are not faces (None: the detector's default)
    recipe: str | None = None  # a quality recipe name or JSON file (None: the model's default; ignored with perturb)
    realign: str | None = None  # the template check: auto, on, off (None: the recipe's own setting)
    template: tuple | None = None  # the 2x3 realignment matrix the check found (set by `engine.models.check_template`)
    extra: dict = field(default_factory=dict, compare=False)  # options a caller passes through untouched

    def __post_init__(self):
        object.__setattr__(self, "perturb", tuple(self.perturb or ()))

    @property
    def overrides(self) -> dict:
        """The preprocessing overrides given (colour order, mean, std), for `load_runner`."""
        return {k: v for k, v in dict(color=self.color, mean=self.mean, std=self.std).items() if v is not None}

    def with_(self, **changes) -> "ScoringSettings":
        return replace(self, **changes)
