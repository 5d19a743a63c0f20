"""The 0-100 unified quality score (ISO/IEC 29794-5 style: an integer, higher is better) of a raw quality.

- Calibrated (`Scale.calibrated(p1, p99)`, what `fiqa-trt calibrate` fits: `fit_calibration`): linear from the raw
  quality at the 1st percentile of the data it was calibrated on (0) to the 99th (100), clipped and rounded. The
  ends are a recipe's `calibration`; a model's packaged calibrations come from the shared LFW crops on the model's
  template.
- Generic (`Scale.generic()`), for a stability score (mean view cosine) of a model without a calibration: the
  cosine distance d = 1 - cos on a log scale, 0 at d = 0.1 (cos 0.9) and 100 at d = 0.001 (cos 0.999):
  score = 50 * (-log10(d) - 1), clipped and rounded. It means the same thing for every model (how far the views
  move the embedding), not the same rank: one model's spread of stability scores may use only part of it. A
  model's own scale comes from `fiqa-trt calibrate` (`GENERIC_WARNING` says so).

`for_recipe(recipe)` is the scale a recipe's qualities get: its calibration, else the generic scale for a stability
recipe when `generic` is asked for, else None (no 0-100 score: NaN, written as an empty cell).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GENERIC_DISTANCES = (0.1, 0.001)  # cosine distance of the views at 0 and at 100 on the generic scale
GENERIC_WARNING = ("no 0-100 calibration is known for this model and recipe: the score is the generic scale of the "
                   "stability score (mean view cosine 0.9 -> 0, 0.999 -> 100, log scale); fiqa-trt calibrate MODEL "
                   "IMAGES fits this model's own")


@dataclass(frozen=True)
class Scale:
    """A map from raw qualities to the 0-100 score: `kind` "calibrated" (linear between `low` -> 0 and `high` ->
    100) or "generic" (the generic scale of the stability score; `low`, `high` are its cosines at 0 and 100)."""

    low: float
    high: float
    kind: str = "calibrated"

    @classmethod
    def calibrated(cls, p1: float, p99: float) -> "Scale":
        return cls(float(p1), float(p99), "calibrated")

    @classmethod
    def generic(cls) -> "Scale":
        return cls(1.0 - GENERIC_DISTANCES[0], 1.0 - GENERIC_DISTANCES[1], "generic")

    def __call__(self, quality) -> np.ndarray:
        """Integer-valued float scores, NaN where the quality is NaN."""
        q = np.asarray(quality, np.float64)
        if self.kind == "generic":
            lo, hi = (-np.log10(d) for d in GENERIC_DISTANCES)
            with np.errstate(divide="ignore", invalid="ignore"):
                q = -np.log10(np.clip(1.0 - q, 0.0, None))
        else:
            lo, hi = self.low, self.high
        with np.errstate(invalid="ignore"):
            return np.round(np.clip(100.0 * (q - lo) / (hi - lo), 0.0, 100.0))

    def quality_at(self, score: float) -> float:
        """The raw quality that maps to `score` (0-100) on this scale, before rounding."""
        if self.kind == "generic":
            lo, hi = (-np.log10(d) for d in GENERIC_DISTANCES)
            return float(1.0 - 10.0 ** -(lo + score / 100.0 * (hi - lo)))
        return float(self.low + score / 100.0 * (self.high - self.low))

    def describe(self) -> str:
        if self.kind == "generic":
            return f"generic scale of the stability score (cosine {self.low:g} -> 0, {self.high:g} -> 100, log scale)"
        return f"calibrated: {self.low:.5g} -> 0, {self.high:.5g} -> 100"


def for_recipe(recipe, generic: bool = False) -> Scale | None:
    """The scale of a recipe's qualities: its calibration; without one, the generic scale for a stability recipe
    if `generic`; else None."""
    if recipe is None:
        return None
    if recipe.calibration is not None:
        return Scale.calibrated(*recipe.calibration)
    return Scale.generic() if generic and recipe.fusion == "stability" else None


def unified(quality, scale: Scale | None) -> np.ndarray:
    """The 0-100 scores of `quality` on `scale` (all NaN without a scale)."""
    if scale is None:
        return np.full(np.shape(quality), np.nan)
    return scale(quality)


def fit_calibration(quality) -> tuple[float, float]:
    """The calibration of qualities measured on a data set: their 1st and 99th percentile (rounded to 6 decimals)."""
    p1, p99 = np.percentile(np.asarray(quality, np.float64), [1, 99])
    return round(float(p1), 6), round(float(p99), 6)
