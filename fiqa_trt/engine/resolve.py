"""The resolver: from a model and the settings to what a scoring session runs, each value with where it came from.

`resolve(settings)` decides, without loading the model, the model file, the quality recipe and its 0-100
calibration, the device, backend and precision, the realignment, and where the model's preprocessing comes from;
`Resolution.opened(runner)` adds the preprocessing values the runner reads. Precedence, highest first:

- preprocessing (colour order, mean, std, input size), per field: the command-line option, the fiqa-trt ONNX
  metadata of the file, the model registry (by sha256), the graph's input shape with the ArcFace convention;
- recipe: `--recipe` (name or file), else a `--perturb` stability score, else the model's own (`fiqa-trt
  calibrate`'s stored fit, the ONNX metadata, the registry), else stability only;
- 0-100 calibration: the recipe's own, else the registry's for that recipe and model file;
- precision: `--precision`, else on the CPU a reduced precision whose ranking check passed (`engine.precision`),
  else fp32; on a GPU fp16;
- realignment: none for photos the face aligner aligns; else `--realign`, else the recipe's setting (`--perturb`:
  off); each crop is checked and realigned by itself, so `score`, `serve` and the gate realign a crop alike.

Every command prints the resolution with `-v`; `serve` returns it from /v1/model and `score` writes it into the
Parquet metadata (`Resolution.to_dict`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from fiqa_trt.engine.settings import ScoringSettings
from fiqa_trt.errors import FiqaError

log = logging.getLogger("fiqa_trt")
PREPROCESSING = ("color", "mean", "std", "input_size")
OPTION = {"color": "--color", "mean": "--mean", "std": "--std", "input_size": "--input-size"}


@dataclass(frozen=True)
class Resolution:
    model: str  # the model file
    sha256: str | None
    recipe: object  # engine.recipes.Recipe, or None for a plain --perturb stability score
    device: str
    backend: str
    precision: str
    realign: str  # auto | on | off: the template check this session runs
    realign_each: bool  # realigned crops each by their own points
    sources: dict = field(default_factory=dict)  # value name -> where it came from
    config: object = None  # weights.model_config.ModelConfig, once the runner has read it (`opened`)

    @property
    def calibration(self) -> tuple[float, float] | None:
        """The 0-100 calibration (the raw quality at p1 and p99), or None."""
        return self.recipe.calibration if self.recipe is not None else None

    def opened(self, runner) -> "Resolution":
        """This resolution with what the opened runner reads: its config, and the backend and precision it runs."""
        return replace(self, config=runner.config, backend=runner.name,
                       precision=getattr(runner, "precision", self.precision))

    def values(self) -> dict:
        """Each resolved value, JSON-ready."""
        c = self.config
        out = {"model": self.model, "sha256": self.sha256, "device": self.device, "backend": self.backend,
               "precision": self.precision, "recipe": self.recipe.name if self.recipe is not None else None,
               "calibration": list(self.calibration) if self.calibration else None, "realign": self.realign,
               "realign_each": self.realign_each}
        if c is not None:
            out |= {"color": c.color, "mean": list(c.mean), "std": list(c.std), "input_size": list(c.input_size)}
        return out

    def to_dict(self) -> dict:
        """{value name: {"value": ..., "source": ...}}: what /v1/model returns and the Parquet metadata holds."""
        return {k: {"value": v, "source": self.sources.get(k, "")} for k, v in self.values().items()}

    def lines(self) -> list[str]:
        """One line per value, `name: value (source)`, for `-v`."""
        out = []
        for k, v in self.values().items():
            if k == "sha256":
                continue
            shown = "x".join(map(str, v)) if k == "input_size" else (
                ", ".join(f"{x:g}" for x in v) if isinstance(v, list) else v)
            out.append(f"{k}: {shown}" + (f" ({self.sources[k]})" if self.sources.get(k) else ""))
        return out


def resolve(settings: ScoringSettings, runner=None) -> Resolution:
    """What a session with `settings` runs, each value with its source (see the module docstring). `runner`: one
    already open, whose model, device, backend, precision and preprocessing are taken as they are. FiqaError for a
    mistake, before any model is loaded."""
    from fiqa_trt.engine.models import model_or_default
    from fiqa_trt.files import is_checkpoint, sha256_of

    settings.check()
    if runner is not None:
        return _of_runner(settings, runner)
    model = model_or_default(settings.model)
    if not Path(model).is_file():
        raise FiqaError(f"model file not found: {model}")
    sha = sha256_of(Path(model))
    metadata = _metadata(model)
    sources = {"model": "option --model" if settings.model is not None else
               "the default model (dlib's face-recognition ResNet, converted to ONNX)", "sha256": "the model file"}
    sources |= _preprocessing_sources(settings, metadata, sha, checkpoint=is_checkpoint(model))
    recipe, sources["recipe"] = _recipe(settings, model, sha, metadata)
    sources["calibration"] = _calibration_source(recipe, sources["recipe"], sha)
    device, backend, precision, run_sources = _runtime(settings, model, sha)
    sources |= run_sources
    realign, each, sources["realign"], sources["realign_each"] = _realign(settings, recipe)
    return Resolution(model, sha, recipe, device, backend, precision, realign, each, sources)


def _of_runner(settings: ScoringSettings, runner) -> Resolution:
    """The resolution of a session on a runner already open (its model file where it has one)."""
    path = getattr(getattr(runner, "model", None), "path", None) or settings.model
    model = str(path) if path is not None else f"the {runner.name} runner given"
    sha = getattr(runner, "sha256", None)
    model_file = model if path is not None and Path(model).is_file() else None
    sources = {"model": "the runner given", "sha256": "the runner given",
               "device": "the runner given", "backend": "the runner given", "precision": "the runner given"}
    sources |= {k: f"the runner's config ({runner.config.source})" for k in PREPROCESSING}
    recipe, sources["recipe"] = _recipe(settings, model_file, sha, _metadata(model_file) if model_file else None)
    sources["calibration"] = _calibration_source(recipe, sources["recipe"], sha)
    realign, each, sources["realign"], sources["realign_each"] = _realign(settings, recipe)
    return Resolution(model, sha, recipe, str(getattr(runner, "device", "cpu")), runner.name,
                      getattr(runner, "precision", "fp32"), realign, each, sources)


def _preprocessing_sources(settings: ScoringSettings, metadata: dict | None, sha: str, checkpoint: bool) -> dict:
    """Where each preprocessing value comes from: the option, else the file's metadata, the registry or the graph."""
    if checkpoint:
        base = "the checkpoint's architecture (weights.zoo)"
    elif metadata is not None:
        base = "ONNX metadata"
    else:
        from fiqa_trt.weights.registry import config_for

        base = ("model registry" if config_for(sha) is not None else
                "the graph's input shape and the ArcFace convention (RGB, (x - 127.5) / 127.5)")
    given = settings.overrides
    return {k: f"option {OPTION[k]}" if k in given else base for k in PREPROCESSING}


def _metadata(model: str) -> dict | None:
    """The fiqa-trt metadata of an ONNX file, or None (not ONNX, or none written)."""
    if Path(model).suffix.lower() != ".onnx":
        return None
    try:
        import onnx

        from fiqa_trt.onnx_export.graph import read_metadata

        return read_metadata(onnx.load(model, load_external_data=False))
    except Exception:  # not readable as ONNX here: the runner says why
        return None


def _recipe(settings: ScoringSettings, model: str | None, sha: str | None, metadata: dict | None):
    """(recipe, where it came from): `--recipe`, a `--perturb` stability score (None), or the model's own."""
    from fiqa_trt.engine.recipes import Recipe

    if settings.perturb:
        if settings.recipe is not None:
            raise FiqaError("--recipe names its own views; --perturb sets the views of a plain stability score: "
                            "give one of them")
        return None, "a plain stability score of the --perturb views instead of the model's recipe (no 0-100 score)"
    if isinstance(settings.recipe, Recipe):
        recipe, source = settings.recipe, "given by the caller"
    else:
        recipe, source = resolve_recipe(settings.recipe, model, sha, metadata or {})
        if settings.recipe is not None:
            source = f"option --recipe: {source}"
    if settings.agg != "mean":
        raise FiqaError(f"--agg {settings.agg} aggregates the view cosines of a --perturb stability score; recipe "
                        f"'{recipe.name}' fuses its own signals (give --perturb SPEC --agg {settings.agg})")
    if settings.views != 1:
        raise FiqaError(f"--views draws views of the --perturb specs; recipe '{recipe.name}' has its own views "
                        "(give --perturb SPEC --views K)")
    return recipe, source


def default_recipe(sha256: str | None, metadata_recipe: dict | None = None):
    """A model's default recipe and where it came from: the user cache (`fiqa-trt calibrate`), the ONNX metadata,
    the model registry; otherwise stability only, said so."""
    from fiqa_trt.engine.recipes import STABILITY, Recipe, cache_file, load

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


ROLES = ("fast", "froq")  # named recipes packaged per model beside its default (`weights.registry.variant_for`)


def resolve_recipe(option: str | None, model_path: str | Path | None, sha256: str | None = None,
                   metadata: dict | None = None):
    """The recipe a command runs (`--recipe NAME|FILE`, or the model's default) and where it came from. A named
    recipe without a calibration takes the model's recorded 0-100 calibration for that name, if any. A named recipe
    that needs a centre or layers of the model (`lognorm-ui-flip`, `froq`) is the one packaged for the model in that
    role, else the model's calibrated one when `fiqa-trt calibrate` fitted it for this model; `fast` (one forward
    per image) is the one packaged for the model. A recipe file fitted for another model file is used as asked,
    with a warning. `sha256` and
    `metadata` (the file's fiqa-trt ONNX metadata): what the caller already read of the model file."""
    from fiqa_trt.engine.recipes import RECIPES, _load, cache_file, calibrated_name, load

    path = Path(model_path) if model_path is not None else None
    sha = sha256
    if sha is None and path is not None and path.is_file():
        from fiqa_trt.files import sha256_of

        sha = sha256_of(path)
    if option is None:
        if metadata is None and path is not None:
            metadata = _metadata(str(path))
        recipe, source = default_recipe(sha, (metadata or {}).get("recipe"))
    elif option in ROLES and option not in RECIPES:
        from fiqa_trt.engine.recipes import Recipe
        from fiqa_trt.weights.registry import variant_for

        packaged = variant_for(sha, option) if sha is not None else None
        if packaged is None:
            raise FiqaError(f"no '{option}' recipe is packaged for {path.name if path else 'this model'}: fit one "
                            "with fiqa-trt calibrate MODEL IMAGES --recipe FILE (a recipe without views that names "
                            "the model's layers: fiqa-trt weights layers MODEL)")
        recipe, source = Recipe.from_dict(packaged, "model registry"), f"model registry ('{option}' of this model)"
    else:
        recipe, source, fitted_for, model_name = _load(option)
        needs_model = (recipe.uses_centre and recipe.centre is None) or (recipe.uses_layers and not recipe.layers)
        if option in RECIPES and needs_model and sha is not None:
            from fiqa_trt.engine.recipes import Recipe
            from fiqa_trt.weights.registry import variant_for

            stored = cache_file(sha)
            fitted = load(str(stored)) if stored.is_file() else None
            packaged = variant_for(sha, option)
            if packaged is not None:
                recipe, source = Recipe.from_dict(packaged, "model registry"), \
                    f"model registry ('{option}' of this model)"
            elif fitted is None or fitted.name != calibrated_name(option):
                raise FiqaError(f"recipe '{option}' needs this model's centre, layers or weights: fiqa-trt calibrate "
                                f"{path} IMAGES --recipe {option} fits them (then --recipe {option} uses them)")
            else:
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


def _calibration_source(recipe, recipe_source: str, sha: str) -> str:
    from fiqa_trt.weights.registry import calibration_for

    if recipe is None:
        return "none: a --perturb stability score has no 0-100 calibration"
    if recipe.calibration is None and recipe.fusion == "stability":
        return "none for this model: the generic scale of the stability score (fiqa-trt calibrate fits its own)"
    if recipe.calibration is None:
        return "none for this recipe and model (fiqa-trt calibrate fits one; the score column stays empty)"
    if calibration_for(sha, recipe.name) == tuple(recipe.calibration):
        return f"model registry (recipe '{recipe.name}' on this model file)"
    return f"recipe '{recipe.name}'"


def _runtime(settings: ScoringSettings, model: str, sha: str) -> tuple[str, str, str, dict]:
    """(device, backend, precision, their sources) for `settings` on this machine."""
    from fiqa_trt.weights import precision_checks as checks
    from fiqa_trt.engine.device import resolve_device
    from fiqa_trt.engine.runners import available_backends, supported_precisions
    from fiqa_trt.files import is_checkpoint

    target = resolve_device(settings.device, model)
    sources = {"device": "option --device" if settings.device != "auto" else
               f"auto: {'the GPU path is available' if target.is_cuda else 'the CPU'}"}
    asked = settings.backend != "auto"
    if is_checkpoint(model):
        backend, why = "torch", "a PyTorch checkpoint runs on the torch backend"
    elif target.is_cuda:
        backend, why = "tensorrt", "an ONNX model on a GPU runs on TensorRT"
    else:
        backend = "openvino" if "openvino" in available_backends() else "onnxruntime"
        why = f"auto: the fastest CPU backend installed ({', '.join(available_backends())})"
    if asked:
        backend, why = settings.backend, "option --backend"
    sources["backend"] = why
    if is_checkpoint(model) or target.is_cuda:
        precision = settings.precision if settings.precision != "auto" else ("fp16" if target.is_cuda else "fp32")
        sources["precision"] = "option --precision" if settings.precision != "auto" else f"auto: {precision} on {target}"
        return str(target), backend, precision, sources
    if backend not in available_backends():  # the runner's own message names the extra to install
        return str(target), backend, settings.precision, sources | {"precision": "option --precision"}
    precision, sources["precision"] = checks.choose(sha, backend, supported_precisions(backend), settings.precision)
    return str(target), backend, precision, sources


def _realign(settings: ScoringSettings, recipe) -> tuple[str, bool, str, str]:
    """(mode, each, their sources): the one place the realignment of a session is decided. A crop is checked and
    realigned by itself (`engine.template`), so files, uploads and the gate's crops are realigned alike."""
    each = settings.realign_each if settings.realign_each is not None else bool(recipe is not None
                                                                                 and recipe.realign_each)
    each_source = "given by the caller" if settings.realign_each is not None else (
        f"recipe '{recipe.name}'" if recipe is not None else "a --perturb stability score")
    if settings.aligns:
        return "off", each, "photos are aligned to the ArcFace template by the face aligner: no template check", \
            each_source
    if settings.realign is not None:
        mode, source = settings.realign, "option --realign"
    elif recipe is not None:
        mode, source = recipe.realign, f"recipe '{recipe.name}'"
    else:
        mode, source = "off", "a --perturb stability score is not realigned (--realign auto realigns)"
    return mode, each, source, each_source
