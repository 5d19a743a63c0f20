"""The quality recipe: which views one embedding pass holds, which signals are read off it and how they fuse.

A recipe names
- `perturb`: the perturbation specs of the views (`engine.perturbations`), all embedded in the one runner call that
  also embeds the original, once;
- `signals`: (name, weight) pairs of `quality.signals` (lognorm, lognorm:all, ui, ui:all, cos:<i>, obs:<i>,
  obs-all:<i>, froq);
- `layers`: for the observer signals, the model's layers (tensor names of its ONNX graph) whose activations'
  L2 norms the runner returns with the embeddings (`onnx_export.observers`); a recipe may then hold no view at all
  (one forward per image). `fiqa-trt calibrate` chooses them where a recipe names none: FROQ's selection for
  `froq`; for `obs:<i>` / `obs-all:<i>`, the check layer first (the layer whose norm drops most reliably under every
  kind of the degradation check on dev faces, `evaluation.degradations.check_layer`), then FROQ's greedy order
  without it, as many layers as the signals name;
- `centre`: for the ui signals, the model's unrecognisable-identity centre (`quality.signals.unit_centre` of the
  embeddings of dev faces shrunk to a few pixels, the `centre_view`; computed by `fiqa-trt calibrate`);
- `fusion`: `stability` (the seed's score: `kernels.quality`, the mean, min or median of every view's cosine with
  its original, `agg`; no signals) or `weighted_log`: quality = sum_i w_i * s_i over the signals (each already a
  log, so a weighted log-product);
- `realign`: the per-crop template check (`engine.template`): `auto`, `on` or `off`; `realign_each`: every crop by
  its own five points (`auto` acts as `on`);
- `calibration`: the raw quality's 1st and 99th percentile on the data it was calibrated on, the ends of the 0-100
  score (`quality.scale`), and `figures`: what chose the recipe (pairs, split, pAUCs).

`Recipe.evaluate(pass)` is the one computation of a recipe's quality, wherever a pass comes from (the scorer, an
evaluation sweep, calibration). The named recipes (`RECIPES`) are defined here; loading by name or file and a
model's default are `engine.recipes`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from fiqa_trt.errors import FiqaError
from fiqa_trt.quality import signals as sig
from fiqa_trt.quality.passes import Pass

FUSIONS = ("stability", "weighted_log")
AGGREGATIONS = ("mean", "min", "median")
SEED_SPEC = "affine:rot=0.5,scale=1.01,flip=1"
FLIP_SPEC = "affine:rot=0,scale=1,flip=1"


@dataclass(frozen=True)
class Evaluation:
    """A recipe's result on one pass, on the host: the quality (N,) and each view's cosine with its original (N, K)
    (float32; the quality float32 for stability, float64 for weighted_log, NaN where the embeddings give none)."""

    quality: np.ndarray
    cosines: np.ndarray


def fuse(values: dict, weights: dict[str, float], xp=np):
    """sum_i w_i * values_i (float64) over the signals with a non-zero weight (a signal a fit left out is not read
    and may be absent from `values`); non-finite results become NaN."""
    out = None
    for name, weight in weights.items():
        if weight != 0:
            term = weight * values[name]
            out = term if out is None else out + term
    if out is None:
        raise FiqaError("a weighted fusion needs at least one signal with a weight")
    out = xp.asarray(out, xp.float64) + 0.0
    out[~xp.isfinite(out)] = xp.nan
    return out


@dataclass(frozen=True)
class Recipe:
    name: str
    perturb: tuple[str, ...] = (SEED_SPEC,)
    fusion: str = "stability"
    agg: str = "mean"
    signals: tuple[tuple[str, float], ...] = ()  # (signal, weight) for weighted_log
    realign: str = "auto"  # auto | on | off
    realign_each: bool = False  # realign every crop by its own points, also those on a known template (as `on`)
    calibration: tuple[float, float] | None = None  # raw quality at the 1st and 99th percentile (-> 0 and 100)
    figures: dict = field(default_factory=dict, compare=False, hash=False)
    centre: tuple[float, ...] | None = None  # unit unrecognisable-identity centre, for the ui signals
    centre_view: str = "lowres:size=10"  # the view of dev faces whose embeddings give the centre (calibrate)
    layers: tuple[str, ...] = ()  # the model's layers (tensor names) whose L2 norms the observer signals read

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise FiqaError(f"recipe '{self.name}': unknown fusion '{self.fusion}'; use {' or '.join(FUSIONS)}")
        if self.agg not in AGGREGATIONS:
            raise FiqaError(f"recipe '{self.name}': unknown aggregation '{self.agg}'")
        if self.realign not in ("auto", "on", "off"):
            raise FiqaError(f"recipe '{self.name}': realign must be auto, on or off, not '{self.realign}'")
        if isinstance(self.perturb, str) or not all(isinstance(p, str) for p in self.perturb):
            raise FiqaError(f"recipe '{self.name}': perturb must be a list of perturbation specs (strings)")
        if not self.perturb and self.fusion == "stability":
            raise FiqaError(f"recipe '{self.name}' has no perturbation view: a stability score needs one")
        object.__setattr__(self, "perturb", tuple(self.perturb))
        if isinstance(self.layers, str) or not all(isinstance(x, str) and x for x in self.layers) \
                or len(set(self.layers)) != len(self.layers):
            raise FiqaError(f"recipe '{self.name}': layers must be a list of distinct layer names (fiqa-trt weights "
                            "layers MODEL lists them)")
        object.__setattr__(self, "layers", tuple(self.layers))
        try:
            signals = tuple((str(s), float(w)) for s, w in self.signals)
        except (TypeError, ValueError):
            raise FiqaError(f"recipe '{self.name}': signals must be [name, weight] pairs with a numeric weight, "
                            f"e.g. [[\"lognorm\", 1.0]]") from None
        object.__setattr__(self, "signals", signals)
        if self.fusion == "stability" and self.signals:
            raise FiqaError(f"recipe '{self.name}': signals are fused by \"fusion\": \"weighted_log\"; the "
                            "stability fusion reads the view cosines only")
        if self.fusion == "weighted_log":
            if not any(w != 0 for _, w in self.signals):
                raise FiqaError(f"recipe '{self.name}': weighted_log fusion needs at least one signal with a weight")
            for name, _ in self.signals:
                sig.make(name, self)
        if self.centre is not None:
            c = np.asarray(self.centre, np.float64)
            if c.ndim != 1 or len(c) < 2 or not np.all(np.isfinite(c)) or abs(np.linalg.norm(c) - 1) > 1e-3:
                raise FiqaError(f"recipe '{self.name}': its centre must be a finite unit vector")
            object.__setattr__(self, "centre", tuple(float(x) for x in c))
        object.__setattr__(self, "realign_each", bool(self.realign_each))
        if self.calibration is not None:
            if len(self.calibration) != 2:
                raise FiqaError(f"recipe '{self.name}': its calibration is [p1, p99], two numbers")
            lo, hi = (float(v) for v in self.calibration)
            if not hi > lo:
                raise FiqaError(f"recipe '{self.name}': its calibration needs p1 < p99")
            object.__setattr__(self, "calibration", (lo, hi))

    # ---- signals ----

    def signal(self, name: str) -> sig.Signal:
        return sig.make(name, self)

    @property
    def uses_centre(self) -> bool:
        """A ui signal with a weight: scoring needs the centre."""
        return any(w != 0 and sig.signal_class(n).reads_centre for n, w in self.signals)

    @property
    def reads_centre(self) -> bool:
        """A ui signal, weighted or not: a fit of this recipe needs the centre (it may weigh the signal again)."""
        return any(sig.signal_class(n).reads_centre for n, _ in self.signals)

    @property
    def uses_layers(self) -> bool:
        """An observer signal with a weight: scoring needs the recipe's layers observed."""
        return any(w != 0 and sig.signal_class(n).reads_layers for n, w in self.signals)

    @property
    def reads_check_layer(self) -> bool:
        """An `obs:<i>` or `obs-all:<i>` signal: the layers `fiqa-trt calibrate` chooses for it start with the check
        layer (`evaluation.calibrate.with_layers`)."""
        return any(c.reads_layers and c.indexed for c in map(sig.signal_class, (n for n, _ in self.signals)))

    @property
    def observers(self):
        """The observer outputs a pass of this recipe needs (`onnx_export.observers.Observers`: the L2 norm of each
        of its layers), or None when it reads none."""
        if not self.layers or not any(sig.signal_class(n).reads_layers for n, _ in self.signals):
            return None
        from fiqa_trt.onnx_export.observers import Observers

        return Observers(self.layers, ("l2",))

    @property
    def forwards(self) -> int:
        """Forward passes per image: the original and one per view (a random spec gives one view per --views)."""
        return 1 + len(self.perturb)

    def check_runnable(self, embedding_size: int | None = None) -> None:
        """Raise FiqaError when this recipe cannot score embeddings of this size: a ui signal needs a centre (a
        named recipe with ui has none until `fiqa-trt calibrate` computes it for a model) of the same size."""
        if self.uses_layers and not self.layers:
            raise FiqaError(f"recipe '{self.name}' reads observer signals but names no layer: fiqa-trt calibrate "
                            f"MODEL IMAGES --recipe {self.name} chooses the model's layers and stores the recipe "
                            "with them")
        if not self.uses_centre:
            return
        if self.centre is None:
            raise FiqaError(f"recipe '{self.name}' reads a ui signal but has no centre: fiqa-trt calibrate MODEL "
                            f"IMAGES --recipe {self.name} computes the model's centre and stores the recipe with it")
        if embedding_size is not None and len(self.centre) != embedding_size:
            raise FiqaError(f"recipe '{self.name}' has a {len(self.centre)}-d centre but the model's embeddings "
                            f"have {embedding_size} dimensions: that recipe was calibrated for another model")

    def read_signals(self, p: Pass, names=None) -> dict[str, np.ndarray]:
        """Every signal of this recipe (or `names`), weighted or not, read off a pass: name -> (N,) on the host."""
        return {n: p.host(self.signal(n).read(p)) for n in (names or [n for n, _ in self.signals])}

    # ---- the quality ----

    def evaluate(self, p: Pass) -> Evaluation:
        """The quality of every image of the pass and its views' cosines, computed where the embeddings are; only
        the (N,) quality and the (N, K) cosines come to the host. Stability is `kernels.quality`; weighted_log
        reads the weighted signals and `fuse`s them."""
        cosines, quality = p.kernel(self.agg)
        if self.fusion == "weighted_log":
            weights = dict(self.signals)
            quality = fuse({n: self.signal(n).read(p) for n, w in weights.items() if w != 0}, weights, p.xp)
        return Evaluation(p.host(quality), p.host(cosines))

    def describe(self) -> str:
        if self.fusion == "stability":
            what = f"{self.agg} cosine of {len(self.perturb)} view spec(s)"
        else:
            words = {n: self.signal(n).describe() for n, _ in self.signals}
            what = " + ".join(f"{w:g} x {words[n]}" if w != 1 else words[n] for n, w in self.signals if w != 0)
        each = " (each crop by its own points)" if self.realign_each and self.realign != "off" else ""
        layers = f"; layers {', '.join(self.layers)}" if self.layers else ""
        return (f"recipe '{self.name}': {what}; views {', '.join(self.perturb) or 'none (1 forward)'}{layers}; "
                f"realign {self.realign}{each}")

    # ---- files ----

    def to_dict(self) -> dict:
        data = asdict(self)
        data["perturb"] = list(self.perturb)
        data["signals"] = [list(s) for s in self.signals]
        data["calibration"] = list(self.calibration) if self.calibration else None
        data["centre"] = list(self.centre) if self.centre is not None else None
        data["layers"] = list(self.layers)
        if not self.layers:  # recipe files without observer signals stay as they were
            del data["layers"]
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str = "recipe") -> "Recipe":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise FiqaError(f"{where}: unknown recipe field(s) {', '.join(unknown)}")
        try:
            data = dict(data)
            if not isinstance(data.get("perturb", []), (list, tuple)):
                raise FiqaError(f"{where}: perturb must be a list of perturbation specs, e.g. [\"{SEED_SPEC}\"]")
            data["perturb"] = tuple(data.get("perturb", (SEED_SPEC,)))
            data["signals"] = tuple(tuple(s) for s in data.get("signals", ()))
            if data.get("calibration") is not None:
                data["calibration"] = tuple(data["calibration"])
            if data.get("centre") is not None:
                data["centre"] = tuple(data["centre"])
            if not isinstance(data.get("layers", []), (list, tuple)):
                raise FiqaError(f"{where}: layers must be a list of layer names")
            data["layers"] = tuple(data.get("layers", ()))
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise FiqaError(f"{where}: invalid recipe ({exc})") from None

    def with_weights(self, weights: dict[str, float]) -> "Recipe":
        return replace(self, signals=tuple((n, float(weights.get(n, w))) for n, w in self.signals))


# The seed's score, exactly: one affine view (rotation 0.5 deg, scale 1.01, flip), mean cosine, no realignment.
SEED = Recipe("seed", (SEED_SPEC,), "stability", "mean", (), "off")
# Pure stability as a default for models without a recipe: the seed's view, crops put back on the template first.
STABILITY = Recipe("stability", (SEED_SPEC,), "stability", "mean", (), "auto")
# Log-norm and flip consistency on the template-aligned crop (weights fitted per model by `fiqa-trt calibrate`)
NORM_FLIP = Recipe("norm-flip", (FLIP_SPEC,), "weighted_log", "mean", (("lognorm", 1.0), ("cos:0", 1.0)), "auto")
# The raw embedding's log-norm alone (one forward pass per image: no view)
NORM = Recipe("norm", (), "weighted_log", "mean", (("lognorm", 1.0),), "auto")
# What `fiqa-trt calibrate` fits for a model without a recipe: the log-norm and the distance to the centre, each over
# the crop and its mirror, and the mirror's cosine (2 forwards; the fit weighs what the model's embeddings carry)
LOGNORM_UI_FLIP = Recipe("lognorm-ui-flip", (FLIP_SPEC,), "weighted_log", "mean",
                         (("lognorm:all", 1.0), ("ui:all", 1.0), ("cos:0", 1.0)), "auto")

# FROQ (Babnik et al., IJCB 2025): the log mean L2 norm of a few intermediate layers of the model, one forward; the
# layers are chosen per model by `fiqa-trt calibrate --recipe froq` (evaluation.froq: pseudo-labels, greedy selection)
FROQ = Recipe("froq", (), "weighted_log", "mean", (("froq", 1.0),), "auto")

# Observer recipes (`fiqa-trt calibrate` chooses their layers: obs:0 the check layer, obs:1 FROQ's first, and fits
# the centre and weights per model); what benchmarks/quality_forwards.py compares at 1, 2 and 4 forwards per image.
# One forward: the log-norm, the distance to the centre and the check layer's norm, with or without FROQ's layer
LOGNORM_UI_CHECK = Recipe("lognorm-ui-check", (), "weighted_log", "mean",
                          (("lognorm", 1.0), ("ui", 1.0), ("obs:0", 1.0)), "auto")
LOGNORM_UI_FROQ_CHECK = Recipe("lognorm-ui-froq-check", (), "weighted_log", "mean",
                               (("lognorm", 1.0), ("ui", 1.0), ("obs:1", 1.0), ("obs:0", 1.0)), "auto")
# Two forwards: the crop and the seed's view; each signal over both forwards and the view's cosine
LOGNORM_UI_SEED_CHECK = Recipe("lognorm-ui-seed-check", (SEED_SPEC,), "weighted_log", "mean",
                               (("lognorm:all", 1.0), ("ui:all", 1.0), ("cos:0", 1.0), ("obs-all:0", 1.0)), "auto")
# Four forwards: the cosines of three views (the seed's, a 6 degree rotation, a 0.95 zoom), the distance to the
# centre and the check layer's norm over every forward
COS3_UI_CHECK = Recipe("cos3-ui-check", (SEED_SPEC, "affine:rot=6,scale=1,flip=0", "affine:rot=0,scale=0.95,flip=0"),
                       "weighted_log", "mean",
                       (("cos:0", 1.0), ("cos:1", 1.0), ("cos:2", 1.0), ("ui:all", 1.0), ("obs-all:0", 1.0)), "auto")

RECIPES: dict[str, Recipe] = {r.name: r for r in (SEED, STABILITY, NORM_FLIP, NORM, LOGNORM_UI_FLIP, FROQ,
                                                  LOGNORM_UI_CHECK, LOGNORM_UI_FROQ_CHECK, LOGNORM_UI_SEED_CHECK,
                                                  COS3_UI_CHECK)}
