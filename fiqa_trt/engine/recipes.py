"""Where a quality recipe comes from: by name, from a file, or a model's default; and where calibrate stores one.

The recipe itself (its views, signals, fusion, calibration; `Recipe.evaluate`) is `quality.recipe`. Recipes come by
name (`RECIPES`: `seed` reproduces the seed's scores exactly, `stability` is the same without a realign step
pinned; or a model's packaged default such as `mobilefacenet-default`) or from a JSON file; a model's default recipe
is stored with its record (`weights.registry`, the user cache written by `fiqa-trt calibrate`, or the ONNX
metadata); which of them a command runs is decided by the resolver (`engine.resolve.resolve_recipe`).
"""

from __future__ import annotations

import json
from pathlib import Path

from fiqa_trt.errors import FiqaError
from fiqa_trt.quality.recipe import (
    FLIP_SPEC, LOGNORM_UI_FLIP, NORM, NORM_FLIP, RECIPES, SEED, SEED_SPEC, STABILITY, Recipe)

__all__ = ["FLIP_SPEC", "LOGNORM_UI_FLIP", "NORM", "NORM_FLIP", "RECIPES", "SEED", "SEED_SPEC", "STABILITY", "Recipe",
           "cache_file", "calibrated_name", "known_names", "load", "load_with_source", "recipe_json", "save_calibrated"]


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
        from fiqa_trt.weights.registry import packaged_names

        return (Recipe.from_dict(packaged_names(record)[name_or_file], "model registry"), "named recipe",
                record.sha256, record.name)
    path = Path(name_or_file)
    if path.suffix.lower() == ".json" or path.is_file():
        document = _read_file(path)
        return (Recipe.from_dict(document.get("recipe", document), str(path)), f"file {name_or_file}",
                document.get("sha256"), document.get("model"))
    raise FiqaError(f"unknown recipe '{name_or_file}'; use one of: {', '.join(known_names())} or a recipe JSON file")


def known_names() -> list[str]:
    """Every recipe name `load` knows: the named recipes and the models' packaged defaults."""
    from fiqa_trt.weights.registry import KNOWN_MODELS

    from fiqa_trt.weights.registry import packaged_names

    return list(RECIPES) + [name for m in KNOWN_MODELS for name in packaged_names(m)]


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


def calibrated_name(name: str) -> str:
    """The name `fiqa-trt calibrate` gives the recipe it fits from `name` (once, however often it is refitted)."""
    return name if name.endswith("-calibrated") else f"{name}-calibrated"
