"""The quality signals: one class each, registered by name; what a recipe's `signals` name and weigh.

A signal reads one value per image off a `Pass` (`read(pass) -> (N,)` float64, on the pass's device), as a log, so
that a recipe's weighted sum of signals is a weighted log-product:
- `lognorm`: the log of the L2 norm of the original's raw embedding (models trained with margin losses make it
  larger for recognisable faces); `lognorm:all`: the mean of that log-norm over every forward of the pass (the
  original and each view: less of the noise one crop's pixels put in it);
- `ui`: the log of the cosine distance, 1 - cos, of the original's embedding to the recipe's unrecognisable-identity
  `centre` (where faces shrunk to a few pixels end up; Chai et al., CVPR 2023), clipped to [1e-6, 2]; `ui:all`: the
  same for the mean cosine over every forward;
- `cos:<i>`: the log of the cosine of the original's embedding with the view(s) of the recipe's i-th perturbation
  spec (their mean when the spec is random), clipped to [1e-6, 1];
- observer signals, read off the reduced intermediate activations the runner returns with the embeddings
  (`onnx_export.observers`; the recipe's `layers` name the model's layers): `obs:<i>`, the log of the L2 norm of the
  activation of the recipe's i-th layer for the original; `obs-all:<i>`, its mean over every forward; `froq`, the
  log of the mean L2 norm of all the recipe's layers for the original (FROQ's quality, Babnik et al., IJCB 2025).

Adding a signal is one class here: subclass `Signal`, set `name` (the exact name, or the prefix of `name:<i>` with
`indexed = True`), `words` (for messages), `reads_centre` when it needs the recipe's centre and `reads_layers` when
it reads observer outputs; implement
`read(self, p)` with what the Pass computes (`p.norms()`, `p.centre_cosines(c)`, `p.view_cosines()`, or
`p.embeddings` and `p.observed` themselves, with `p.xp` as the array module so it runs where the embeddings are);
decorate it with `@register`. Recipes then validate, describe, evaluate and calibrate it by name, everywhere.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from fiqa_trt.errors import FiqaError
from fiqa_trt.quality.passes import Pass

COS_FLOOR = 1e-6  # the smallest cosine (and cosine distance) a log is taken of
SIGNALS: dict[str, type["Signal"]] = {}


def register(cls: type["Signal"]) -> type["Signal"]:
    """Class decorator: make a signal known by its name."""
    if cls.name in SIGNALS:
        raise ValueError(f"signal '{cls.name}' is registered twice")
    SIGNALS[cls.name] = cls
    return cls


class Signal:
    """One per-image signal of a recipe. `recipe` (a `quality.recipe.Recipe`, possibly still being validated)
    gives what the signal reads besides the pass: its centre, its perturbation specs."""

    name: ClassVar[str]
    words: ClassVar[str]
    indexed: ClassVar[bool] = False  # the name is `name:<i>`, i the index of one of the recipe's specs
    reads_centre: ClassVar[bool] = False
    reads_layers: ClassVar[bool] = False  # reads observer outputs of the recipe's `layers`

    def __init__(self, name: str, recipe):
        self.label, self.recipe = name, recipe
        self.index = int(name.split(":", 1)[1]) if self.indexed else None
        if self.indexed and not self.index < len(recipe.perturb):
            raise FiqaError(f"recipe '{recipe.name}': unknown signal '{name}'; use {help_text()}, i the index of one "
                            f"of its {len(recipe.perturb)} perturbation spec(s)")

    def describe(self) -> str:
        return self.words.replace("<i>", str(self.index)) if self.indexed else self.words

    def read(self, p: Pass):
        """(N,) float64 values, on the pass's device; NaN or infinite where the embeddings give none."""
        raise NotImplementedError


def help_text() -> str:
    return ", ".join(f"{n}:<i>" if c.indexed else n for n, c in SIGNALS.items())


def signal_class(name: str) -> type[Signal] | None:
    """The class of the signal called `name`, or None."""
    if name in SIGNALS and not SIGNALS[name].indexed:
        return SIGNALS[name]
    prefix, _, index = name.partition(":")
    cls = SIGNALS.get(prefix)
    return cls if cls is not None and cls.indexed and index.isdigit() else None


def make(name: str, recipe) -> Signal:
    """The signal `name` of `recipe` (FiqaError for a name no registered signal has)."""
    cls = signal_class(name)
    if cls is None:
        raise FiqaError(f"recipe '{recipe.name}': unknown signal '{name}'; use {help_text()}, i the index of one of "
                        f"its {len(recipe.perturb)} perturbation spec(s)")
    return cls(name, recipe)


def _log(xp, values):
    with np.errstate(divide="ignore", invalid="ignore"):
        return xp.log(values)


@register
class LogNorm(Signal):
    name, words = "lognorm", "log-norm"

    def read(self, p: Pass):
        return _log(p.xp, p.norms()[:, 0].astype(p.xp.float64))


@register
class LogNormAll(Signal):
    name, words = "lognorm:all", "mean log-norm"

    def read(self, p: Pass):
        return _log(p.xp, p.norms().astype(p.xp.float64)).mean(axis=1)


class _CentreDistance(Signal):
    reads_centre = True

    def distances(self, p: Pass):
        """(N, 1 + K) float64 cosine distance of every forward to the recipe's centre."""
        centre = self.recipe.centre
        if centre is None:
            raise FiqaError(f"recipe '{self.recipe.name}' reads {self.label} but has no centre: fiqa-trt calibrate "
                            f"MODEL IMAGES --recipe {self.recipe.name} computes the model's centre")
        if len(centre) != p.dim:
            raise FiqaError(f"recipe '{self.recipe.name}' has a {len(centre)}-d centre but the model's embeddings "
                            f"have {p.dim} dimensions: that recipe was calibrated for another model")
        return 1.0 - p.centre_cosines(centre).astype(p.xp.float64)


@register
class CentreDistance(_CentreDistance):
    name, words = "ui", "log distance to the centre"

    def read(self, p: Pass):
        return _log(p.xp, p.xp.clip(self.distances(p)[:, 0], COS_FLOOR, 2.0))


@register
class CentreDistanceAll(_CentreDistance):
    name, words = "ui:all", "log mean distance to the centre"

    def read(self, p: Pass):
        return _log(p.xp, p.xp.clip(self.distances(p).mean(axis=1), COS_FLOOR, 2.0))


@register
class ViewCosine(Signal):
    name, words, indexed = "cos", "log cos(spec <i>)", True

    def read(self, p: Pass):
        cols = p.columns(self.index)
        if not cols:
            raise FiqaError(f"recipe '{self.recipe.name}' reads spec {self.index}, which gives no view here")
        cos = p.view_cosines().astype(p.xp.float64)
        return _log(p.xp, p.xp.clip(cos[:, cols].mean(axis=1), COS_FLOOR, 1.0))


class _Layers(Signal):
    """Observer signals: the L2 norms of the recipe's layers, reduced in the graph and returned by the runner call
    that embedded the pass (`Pass.layer_norms`)."""

    reads_layers = True

    def __init__(self, name: str, recipe):
        self.label, self.recipe = name, recipe
        self.index = int(name.split(":", 1)[1]) if self.indexed else None
        layers = getattr(recipe, "layers", ())
        if self.indexed and layers and not self.index < len(layers):
            raise FiqaError(f"recipe '{recipe.name}': signal '{name}' names layer {self.index}, but the recipe has "
                            f"{len(layers)} layer(s)")

    def norms(self, p: Pass, layers):
        if not self.recipe.layers or (self.indexed and self.index >= len(self.recipe.layers)):
            raise FiqaError(f"recipe '{self.recipe.name}' reads {self.label} but names no layer for it: fiqa-trt "
                            f"calibrate MODEL IMAGES --recipe {self.recipe.name} chooses the model's layers")
        return p.layer_norms(layers).astype(p.xp.float64)


@register
class LayerNorm(_Layers):
    name, words, indexed = "obs", "log ‖layer <i>‖", True

    def read(self, p: Pass):
        return _log(p.xp, self.norms(p, [self.recipe.layers[self.index]])[:, 0, 0])


@register
class LayerNormAll(_Layers):
    name, words, indexed = "obs-all", "mean log ‖layer <i>‖", True

    def read(self, p: Pass):
        return _log(p.xp, self.norms(p, [self.recipe.layers[self.index]])[:, :, 0]).mean(axis=1)


@register
class Froq(_Layers):
    name, words = "froq", "log mean ‖layer‖ of the recipe's layers (FROQ)"

    def read(self, p: Pass):
        return _log(p.xp, self.norms(p, list(self.recipe.layers))[:, 0, :].mean(axis=1))


def unit_centre(vectors: np.ndarray) -> tuple[float, ...]:
    """The unit mean direction of embeddings (M, D), each normalised first: a recipe's `centre` for the ui signals."""
    v = np.asarray(vectors, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # a zero embedding: a NaN row, left out below
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
    mean = v[np.all(np.isfinite(v), axis=1)].mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if not np.isfinite(norm) or norm == 0:
        raise FiqaError("no centre: the embeddings have no finite mean direction")
    return tuple(float(x) for x in np.float32(mean / norm))
