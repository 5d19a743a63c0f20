"""Where a quality recipe comes from: by name, from a file, or a model's default; and where calibrate stores one.

The recipe itself (its views, signals, fusion, calibration; `Recipe.evaluate`) is `quality.recipe`. Recipes come by
name (`RECIPES`: `seed` reproduces the seed's scores exactly, `stability` is the same without a realign step
pinned; or a model's packaged default such as `mobilefacenet-default`) or from a JSON file; a model's default recipe
is stored with its record (`weights.registry`, the user cache written by `fiqa-trt calibrate`, or the ONNX
metadata), see `default_for`; `resolve` is what a command runs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from fiqa_trt.errors import FiqaError
from fiqa_trt.quality.recipe import (
    FLIP_SPEC, LOGNORM_UI_FLIP, NORM, NORM_FLIP, RECIPES, SEED, SEED_SPEC, STABILITY, Recipe)

log = logging.getLogger("fiqa_trt")
__all__ = ["FLIP_SPEC", "LOGNORM_UI_FLIP", "NORM", "NORM_FLIP", "RECIPES", "SEED", "SEED_SPEC", "STABILITY", "Recipe",
           "cache_file", "calibrated_name", "default_for", "known_names", "load", "load_with_source", "recipe_json", "resolve",
           "save_calibrated"]


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
