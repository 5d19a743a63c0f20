"""The quality layer: from one embedding pass to a quality per image and its 0-100 score (NumPy or CuPy only).

Below `engine` (which embeds) and above `kernels` (which computes the view cosines and the stability score). Shaped
like OFIQ's measures: one object per signal, one object per pass, one recipe that evaluates a pass.

- `passes.Pass`: one embedding pass, (N, 1 + K, D) raw embeddings of the originals and their views on the device
  they were computed on, the view-to-spec map, and what signals read off it (norms, centre cosines, the kernel's
  cosines), computed there once.
- `signals`: one class per signal (`lognorm`, `lognorm:all`, `ui`, `ui:all`, `cos:<i>`, and the observer signals
  `obs:<i>`, `obs-all:<i>`, `froq`, read off the layers the pass carries), registered by name,
  `read(pass) -> (N,)`. To add a signal: one `@register`ed subclass of `signals.Signal` (see that module); nothing
  else changes.
- `recipe.Recipe`: the views, signals, weights, centre and calibration of a quality method, validated;
  `Recipe.evaluate(pass)` is the one computation of a quality (the scorer, eval's sweep, calibrate and the benchmarks
  call it); `recipe.fuse` the weighted sum of signals (the fit's too). The named recipes (`RECIPES`).
- `scale`: the 0-100 score: a recipe's calibration, or the generic scale of the stability score.
"""

from fiqa_trt.quality.passes import Pass
from fiqa_trt.quality.recipe import RECIPES, Evaluation, Recipe, fuse
from fiqa_trt.quality.scale import Scale

__all__ = ["Evaluation", "Pass", "RECIPES", "Recipe", "Scale", "fuse"]
