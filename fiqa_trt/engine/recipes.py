"""Quality recipes: which signals one embedding pass computes per image, and how they fuse into one quality.

A recipe names
- `perturb`: the perturbation specs of the views (`engine.perturbations`), all embedded in the one runner call that
  also embeds the original, once;
- `signals`: what is read off that pass: `lognorm` (the log of the L2 norm of the original's raw embedding, before
  any normalisation: models trained with margin losses make it larger for recognisable faces), `lognorm:all` (the
  mean of that log-norm over every forward of the pass, the original and each view: the same signal with less of
  the noise one crop's pixels put in it), `ui` (the log of the cosine distance, 1 - cos, of the original's
  embedding to the recipe's `centre`), `ui:all` (the same for the mean cosine over every forward of the pass) and
  `cos:<i>` (the cosine of the original's embedding with the view(s) of the recipe's i-th perturbation spec, mean
  over its views when it is random);
- `centre`: for the `ui` signals, the model's unrecognisable-identity centre: the unit mean of the embeddings of
  faces shrunk to a few pixels (the `lowres` perturbation), where every face that cannot be recognised ends up
  (Chai et al., CVPR 2023, measure recognisability by the distance to that cluster's centre; here the centre is
  computed, not trained: `evaluation.calibrate.ui_centre`);
- `fusion`: `stability` (the seed's score: the mean, min or median of every view's cosine, `agg`; signals unused)
  or `weighted_log`: quality = sum_i w_i * log(s_i), with each cosine clipped to [1e-6, 1] and each distance to
  [1e-6, 2] first;
- `realign`: the template-alignment step (`engine.template`): `auto` (put crops back on the model's template when
  the check finds them off it), `on` or `off`; `realign_each`: when realigning, each crop by its own five points
  (O-Net on the crop put on the template by the check's median transform; that transform alone where O-Net finds
  no face) instead of the one median transform for all;
- `calibration`: the raw quality's 1st and 99th percentile on the data it was calibrated on, the two ends of the
  0-100 unified score (`unified_score`), and `figures`: what chose the recipe (pairs, split, pAUCs).

Recipes come by name (`RECIPES`: `seed` reproduces the seed's scores exactly, `stability` is the same without a
realign step pinned) or from a JSON file; a model's default recipe is stored with its record (`weights.registry`,
the user cache written by `fiqa-trt calibrate`, or the ONNX metadata), see `default_for`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from fiqa_trt.errors import FiqaError

log = logging.getLogger("fiqa_trt")
FUSIONS = ("stability", "weighted_log")
AGGREGATIONS = ("mean", "min", "median")
COS_FLOOR = 1e-6
SEED_SPEC = "affine:rot=0.5,scale=1.01,flip=1"
FLIP_SPEC = "affine:rot=0,scale=1,flip=1"
NORM_SIGNALS = ("lognorm", "lognorm:all")
CENTRE_SIGNALS = ("ui", "ui:all")
SIGNAL_HELP = "lognorm, lognorm:all, ui, ui:all or cos:<i>"
SIGNAL_WORDS = {"lognorm": "log-norm", "lognorm:all": "mean log-norm", "ui": "log distance to the centre",
                "ui:all": "log mean distance to the centre"}  # cos:<i> stays as it is: the log cosine with spec i


def forward_norms(embeddings, xp=np):
    """(N, 1 + K) L2 norms of the raw embeddings (N, 1 + K, D) of one pass: the original's, then each view's."""
    return xp.linalg.norm(embeddings.astype(xp.float32), axis=2)


def centre_cosines(embeddings, centre, xp=np):
    """(N, 1 + K) cosine of every forward's embedding (N, 1 + K, D) with a unit `centre` (D,)."""
    e = embeddings.astype(xp.float32)
    c = xp.asarray(np.asarray(centre, np.float32))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (e @ c) / xp.linalg.norm(e, axis=2)


def unit_centre(vectors: np.ndarray) -> tuple[float, ...]:
    """The unit mean direction of embeddings (M, D), each normalised first: a recipe's `centre`."""
    v = np.asarray(vectors, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # a zero embedding: a NaN row, left out below
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
    mean = v[np.all(np.isfinite(v), axis=1)].mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if not np.isfinite(norm) or norm == 0:
        raise FiqaError("no centre: the embeddings have no finite mean direction")
    return tuple(float(x) for x in np.float32(mean / norm))


def _words(signal: str) -> str:
    """A signal in words, for messages (`cos:1` -> `log cos(spec 1)`)."""
    return SIGNAL_WORDS.get(signal) or (f"log cos(spec {signal[4:]})" if signal.startswith("cos:") else signal)


def _per_image(name: str, values: np.ndarray, log, recipe: str, before_mean: bool = True) -> np.ndarray:
    """One value per image of a per-forward signal (`values` (N, 1 + K), or (N,) of the originals alone): the
    original's (`lognorm`, `ui`) or the mean over every forward (`:all`), then `log`; `before_mean`: the log of
    each forward's value is averaged (the log-norm), else the log of the mean value (the mean cosine distance)."""
    if name.endswith(":all") and values.ndim != 2:
        raise FiqaError(f"recipe '{recipe}' reads {name}, which needs every forward's value")
    with np.errstate(divide="ignore", invalid="ignore"):
        if values.ndim == 1:
            return log(values)
        if not name.endswith(":all"):
            return log(values[:, 0])
        return log(values).mean(axis=1) if before_mean else log(values.mean(axis=1))


@dataclass(frozen=True)
class Recipe:
    name: str
    perturb: tuple[str, ...] = (SEED_SPEC,)
    fusion: str = "stability"
    agg: str = "mean"
    signals: tuple[tuple[str, float], ...] = ()  # (signal, weight) for weighted_log
    realign: str = "auto"  # auto | on | off
    realign_each: bool = False  # realign each crop by its own points (else one median transform for all)
    calibration: tuple[float, float] | None = None  # raw quality at the 1st and 99th percentile (-> 0 and 100)
    figures: dict = field(default_factory=dict, compare=False, hash=False)
    centre: tuple[float, ...] | None = None  # unit unrecognisable-identity centre, for the ui signals
    centre_view: str = "lowres:size=10"  # the view of dev faces whose embeddings give the centre (calibrate)

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise FiqaError(f"recipe '{self.name}': unknown fusion '{self.fusion}'; use {' or '.join(FUSIONS)}")
        if self.agg not in AGGREGATIONS:
            raise FiqaError(f"recipe '{self.name}': unknown aggregation '{self.agg}'")
        if self.realign not in ("auto", "on", "off"):
            raise FiqaError(f"recipe '{self.name}': realign must be auto, on or off, not '{self.realign}'")
        if isinstance(self.perturb, str) or not all(isinstance(p, str) for p in self.perturb):
            raise FiqaError(f"recipe '{self.name}': perturb must be a list of perturbation specs (strings)")
        if not self.perturb:
            raise FiqaError(f"recipe '{self.name}' has no perturbation view")
        object.__setattr__(self, "perturb", tuple(self.perturb))
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
                if name not in NORM_SIGNALS + CENTRE_SIGNALS and not (
                        name.startswith("cos:") and name[4:].isdigit() and int(name[4:]) < len(self.perturb)):
                    raise FiqaError(f"recipe '{self.name}': unknown signal '{name}'; use {SIGNAL_HELP}, i the "
                                    f"index of one of its {len(self.perturb)} perturbation spec(s)")
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

    @property
    def uses_norm(self) -> bool:
        return any(name in NORM_SIGNALS and w != 0 for name, w in self.signals)

    @property
    def uses_centre(self) -> bool:
        """A ui signal with a weight: scoring needs the centre."""
        return any(name in CENTRE_SIGNALS and w != 0 for name, w in self.signals)

    @property
    def reads_centre(self) -> bool:
        """A ui signal, weighted or not: a fit of this recipe needs the centre (it may weigh the signal again)."""
        return any(name in CENTRE_SIGNALS for name, _ in self.signals)

    def check_runnable(self, embedding_size: int | None = None) -> None:
        """Raise FiqaError when this recipe cannot score embeddings of this size: a ui signal needs a centre (a
        named recipe with ui has none until `fiqa-trt calibrate` computes it for a model) of the same size."""
        if not self.uses_centre:
            return
        if self.centre is None:
            raise FiqaError(f"recipe '{self.name}' reads a ui signal but has no centre: fiqa-trt calibrate MODEL "
                            f"IMAGES --recipe {self.name} computes the model's centre and stores the recipe with it")
        if embedding_size is not None:
            self._check_centre_size(embedding_size)

    def forward_stats(self, embeddings, xp=np):
        """(norms, centre cosines) of one pass's raw embeddings (N, 1 + K, D), computed where they are (NumPy or
        CuPy): what `fuse` reads besides the view cosines. The centre cosines are None for a recipe without ui."""
        norms = forward_norms(embeddings, xp)
        if self.centre is None:
            self.check_runnable()  # a weighted ui signal without its centre
            return norms, None
        if len(embeddings) == 0:
            return norms, xp.zeros(norms.shape, xp.float32)
        if self.uses_centre:
            self._check_centre_size(int(embeddings.shape[2]))
        elif len(self.centre) != int(embeddings.shape[2]):  # an unused centre of another size: nothing to read
            return norms, None
        return norms, centre_cosines(embeddings, self.centre, xp)

    def _check_centre_size(self, embedding_size: int) -> None:
        if len(self.centre) != embedding_size:
            raise FiqaError(f"recipe '{self.name}' has a {len(self.centre)}-d centre but the model's embeddings "
                            f"have {embedding_size} dimensions: that recipe was calibrated for another model")

    def fuse(self, norms: np.ndarray, cosines: np.ndarray, view_specs: list[int],
             centre_cos: np.ndarray | None = None) -> np.ndarray:
        """Qualities (N,) from the raw embeddings' norms (N, 1 + K: the original's first, then each view's, as
        `forward_norms` gives them; (N,) of the originals alone serves recipes without `lognorm:all`), the
        per-view cosines (N, K) and, for the ui signals, every forward's cosine with the centre (N, 1 + K, as
        `centre_cosines` gives them; (N,) of the originals alone serves recipes without `ui:all`);
        `view_specs[k]` is the index (into `perturb`) of the spec view k comes from.

        Stability reproduces `kernels.quality` exactly (it is only called for weighted_log fusion by the scorer).
        A NaN input gives a NaN quality."""
        cosines = np.asarray(cosines, np.float64)
        if self.fusion == "stability":
            reduce = {"mean": np.mean, "min": np.min, "median": np.median}[self.agg]
            return reduce(cosines, axis=1).astype(np.float32) if len(cosines) else np.zeros(0, np.float32)
        out = np.zeros(len(cosines), np.float64)
        norms = np.asarray(norms, np.float64)
        for name, weight in self.signals:
            if weight == 0:  # a signal the fit left out: nothing to read (its centre may not even exist)
                continue
            if name in NORM_SIGNALS:
                value = _per_image(name, norms, np.log, self.name)
            elif name in CENTRE_SIGNALS:
                if centre_cos is None:
                    raise FiqaError(f"recipe '{self.name}' reads {name}: give the forwards' centre cosines")
                value = _per_image(name, 1.0 - np.asarray(centre_cos, np.float64),
                                   lambda d: np.log(np.clip(d, COS_FLOOR, 2.0)), self.name, before_mean=False)
            else:
                cols = [k for k, i in enumerate(view_specs) if i == int(name[4:])]
                if not cols:
                    raise FiqaError(f"recipe '{self.name}' reads spec {name[4:]}, which gives no view here")
                value = np.log(np.clip(cosines[:, cols].mean(axis=1), COS_FLOOR, 1.0))
            out += weight * value
        out[~np.isfinite(out)] = np.nan
        return out

    def unified_score(self, quality: np.ndarray) -> np.ndarray:
        """ISO/IEC 29794-5 style unified quality score: integer 0-100, higher is better, linear from the
        calibration's p1 (0) to its p99 (100), clipped. Returns float (NaN where the quality is NaN or the recipe has
        no calibration): callers write NaN as an empty cell."""
        q = np.asarray(quality, np.float64)
        if self.calibration is None:
            return np.full(q.shape, np.nan)
        lo, hi = self.calibration
        with np.errstate(invalid="ignore"):
            return np.round(np.clip(100.0 * (q - lo) / (hi - lo), 0.0, 100.0))

    def describe(self) -> str:
        if self.fusion == "stability":
            what = f"{self.agg} cosine of {len(self.perturb)} view spec(s)"
        else:
            what = " + ".join(f"{w:g} x {_words(n)}" if w != 1 else _words(n) for n, w in self.signals if w != 0)
        each = " (each crop by its own points)" if self.realign_each and self.realign != "off" else ""
        return f"recipe '{self.name}': {what}; views {', '.join(self.perturb)}; realign {self.realign}{each}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["perturb"] = list(self.perturb)
        data["signals"] = [list(s) for s in self.signals]
        data["calibration"] = list(self.calibration) if self.calibration else None
        data["centre"] = list(self.centre) if self.centre is not None else None
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
# The raw embedding's log-norm alone (one forward pass for the quality; a view is still embedded for the pipeline)
NORM = Recipe("norm", (FLIP_SPEC,), "weighted_log", "mean", (("lognorm", 1.0),), "auto")

# What `fiqa-trt calibrate` fits for a model without a recipe: the log-norm and the distance to the centre, each over
# the crop and its mirror, and the mirror's cosine (2 forwards; the fit weighs what the model's embeddings carry)
LOGNORM_UI_FLIP = Recipe("lognorm-ui-flip", (FLIP_SPEC,), "weighted_log", "mean",
                         (("lognorm:all", 1.0), ("ui:all", 1.0), ("cos:0", 1.0)), "auto")

RECIPES: dict[str, Recipe] = {r.name: r for r in (SEED, STABILITY, NORM_FLIP, NORM, LOGNORM_UI_FLIP)}


def load(name_or_file: str) -> Recipe:
    """A recipe by name (`RECIPES`, or a model's packaged default such as `mobilefacenet-default`) or from a JSON
    file written by `Recipe.to_dict` / `fiqa-trt calibrate`."""
    return _load(name_or_file)[0]


def load_with_source(name_or_file: str) -> tuple[Recipe, str]:
    """`load`, and where the recipe came from ("named recipe" or "file PATH")."""
    return _load(name_or_file)[:2]


def _load(name_or_file: str) -> tuple[Recipe, str, str | None, str | None]:
    """(recipe, source, sha256, model name): the last two name the model file a packaged recipe or a recipe file
    was fitted for (None for the named recipes, which belong to no model, and for files that do not say)."""
    if name_or_file in RECIPES:
        return RECIPES[name_or_file], "named recipe", None, None
    from fiqa_trt.weights.registry import record_of_recipe

    record = record_of_recipe(name_or_file)
    if record is not None:
        return Recipe.from_dict(record.recipe, "model registry"), "named recipe", record.sha256, record.name
    path = Path(name_or_file)
    if path.suffix.lower() == ".json" or path.is_file():
        document = _read_file(path)
        return (Recipe.from_dict(document.get("recipe", document), str(path)), f"file {name_or_file}",
                document.get("sha256"), document.get("model"))
    raise FiqaError(f"unknown recipe '{name_or_file}'; use one of: {', '.join(known_names())} or a recipe JSON file")


def known_names() -> list[str]:
    """Every recipe name `load` knows: the named recipes and the models' packaged defaults."""
    from fiqa_trt.weights.registry import KNOWN_MODELS

    return list(RECIPES) + [m.recipe["name"] for m in KNOWN_MODELS if m.recipe]


def _read_file(path: Path) -> dict:
    """The JSON object of a recipe file: a recipe, or a document holding one under `recipe` (and, as `fiqa-trt
    calibrate` writes it, the `sha256` and `model` it was fitted for)."""
    if not path.is_file():
        raise FiqaError(f"recipe file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FiqaError(f"cannot read recipe file {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("recipe", data), dict):
        raise FiqaError(f"{path}: a recipe file holds one JSON object")
    return data


def cache_file(sha256: str) -> Path:
    """Where `fiqa-trt calibrate` stores the recipe fitted for the model file with this sha256."""
    from fiqa_trt.files import cache_dir

    return cache_dir() / "recipes" / f"{sha256}.json"


def recipe_json(document: dict) -> str:
    """A recipe document as JSON, indented, each list of numbers (a centre, a calibration) on one line."""
    import re

    text = json.dumps(document, indent=1)
    return re.sub(r"\[[-0-9.eE,\s]+\]", lambda m: "[" + ", ".join(filter(None, (
        v.strip() for v in m.group(0)[1:-1].split(",")))) + "]", text) + "\n"


def save_calibrated(sha256: str, recipe: Recipe) -> Path:
    path = cache_file(sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe_json({"sha256": sha256, "recipe": recipe.to_dict()}))
    return path


def default_for(sha256: str | None, metadata_recipe: dict | None = None) -> tuple[Recipe, str]:
    """A model's default recipe and where it came from: the user cache (`fiqa-trt calibrate`), the ONNX metadata,
    the model registry; otherwise stability only, said so."""
    if sha256:
        path = cache_file(sha256)
        if path.is_file():
            return load(str(path)), f"calibrated ({path})"
    if metadata_recipe:
        return Recipe.from_dict(metadata_recipe, "ONNX metadata"), "ONNX metadata"
    if sha256:
        from fiqa_trt.weights.registry import recipe_for

        known = recipe_for(sha256)
        if known is not None:
            return Recipe.from_dict(known, "model registry"), "model registry"
    return STABILITY, "no recipe known for this model: stability only (fiqa-trt calibrate fits one)"


def _metadata_recipe(path: Path) -> dict | None:
    """The recipe in a model file's fiqa-trt ONNX metadata (key `recipe` of the model config), if any."""
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return None
    try:
        import onnx

        from fiqa_trt.onnx_export.graph import read_metadata

        meta = read_metadata(onnx.load(str(path), load_external_data=False))
    except Exception:  # not readable as ONNX here: the runner reports that
        return None
    return (meta or {}).get("recipe")


def resolve(option: str | None, model_path: str | Path | None) -> tuple[Recipe, str]:
    """The recipe a command runs (`--recipe NAME|FILE`, or the model's default) and where it came from. A named
    recipe without a calibration takes the model's recorded 0-100 calibration for that name, if any. A named recipe
    that needs a centre (`lognorm-ui-flip`) is the model's calibrated one when `fiqa-trt calibrate` fitted it for
    this model. A recipe file fitted for another model file is used as asked, with a warning."""
    sha = None
    path = Path(model_path) if model_path is not None else None
    if path is not None and path.is_file():
        from fiqa_trt.files import sha256_of

        sha = sha256_of(path)
    if option is None:
        recipe, source = default_for(sha, _metadata_recipe(path) if path is not None else None)
    else:
        recipe, source, fitted_for, model_name = _load(option)
        if option in RECIPES and recipe.uses_centre and recipe.centre is None and sha is not None:
            stored = cache_file(sha)
            fitted = load(str(stored)) if stored.is_file() else None
            if fitted is None or fitted.name != calibrated_name(option):
                raise FiqaError(f"recipe '{option}' needs this model's centre and weights: fiqa-trt calibrate "
                                f"{path} IMAGES --recipe {option} fits them (then --recipe {option} uses them)")
            recipe, source = fitted, f"calibrated ({stored})"
        elif sha is not None and fitted_for and fitted_for != sha:
            log.warning("recipe %s was fitted for %s (sha256 %s...), not for this model file: its weights, "
                        "centre and 0-100 calibration may not fit it", option, model_name or "another model",
                        fitted_for[:12])
    if recipe.calibration is None and sha is not None:
        from fiqa_trt.weights.registry import calibration_for

        known = calibration_for(sha, recipe.name)
        if known is not None:
            recipe = replace(recipe, calibration=known)
    return recipe, source


def calibrated_name(name: str) -> str:
    """The name `fiqa-trt calibrate` gives the recipe it fits from `name` (once, however often it is refitted)."""
    return name if name.endswith("-calibrated") else f"{name}-calibrated"
