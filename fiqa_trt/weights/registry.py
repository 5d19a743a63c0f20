"""The model registry: what is known about model files that are scored as they are, keyed by their sha256.

One `zoo.ModelRecord` per file: its preprocessing when the file carries no fiqa-trt metadata, the reduced-precision
ranking checks that `precision="auto"` consults, its default quality recipe and the 0-100 calibrations of the
named recipes on it. The default recipes are files of this package (`recipes/<record name>.json`, the format
`fiqa-trt calibrate` stores): written by `fiqa-trt calibrate --write-package` from the engine's own pass on the
shared LFW (centre, weights, calibration and the figures that chose them; the file records the command, data,
commit and date that wrote it), never typed in. Keyed by the file's sha256, so a
renamed copy is still recognised and a different file never gets a wrong record.
"""

from __future__ import annotations

import json
from pathlib import Path

from fiqa_trt.weights.model_config import ModelConfig
from fiqa_trt.weights.zoo import ONNX_ARCH, ModelRecord

RECIPE_DIR = Path(__file__).with_name("recipes")


def _packaged(name: str) -> dict:
    return json.loads((RECIPE_DIR / f"{name}.json").read_text())


def packaged_recipe(name: str) -> dict:
    """The recipe fields (for `quality.Recipe`) stored for the record `name` in this package."""
    return _packaged(name)["recipe"]


def packaged_variants(name: str) -> dict[str, dict]:
    """Role (`fast`, `froq`: a named recipe fitted per model) -> the recipe fields packaged for the record `name`."""
    return dict(_packaged(name).get("variants", {}))


def packaged_calibrations(name: str) -> dict[str, tuple[float, float]]:
    """The 0-100 ends (raw quality at the 1st and 99th percentile) of the named recipes on the record `name`'s
    model, each measured on its own alignment path (`seed`: crops as they are; `stability`: template-aligned)."""
    return {k: tuple(v) for k, v in _packaged(name).get("calibrations", {}).items()}


KNOWN_MODELS: tuple[ModelRecord, ...] = (
    ModelRecord(
        name="faceplugin-mobilefacenet", arch=ONNX_ARCH, files=("fr_feature.onnx",),
        sha256="87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581",
        source="npm package faceplugin-face-recognition-js 0.0.1, package/model/fr_feature.onnx",
        licence="MIT",
        config=dict(
            input_size=(112, 112), color="RGB", mean=127.0, std=128.0, embedding_size=512, normalized_output=False
        ),
        # `fiqa-trt bench` on the first 1,000 shared LFW images, AMD EPYC with AVX-512 BF16, OpenVINO 2026.4
        precision_checks={"openvino:bf16": 0.99705},
        # signals chosen by benchmarks/quality_select.py (inner cross-validation on the dev half of a seeded identity
        # split); centre, weights and 0-100 calibration from the engine's own pass (the file says what wrote it)
        recipe=packaged_recipe("faceplugin-mobilefacenet"),
        calibrations=packaged_calibrations("faceplugin-mobilefacenet"),
        variants=packaged_variants("faceplugin-mobilefacenet"),
    ),
    ModelRecord(
        name="dlib-resnet-v1-arcface112", arch=ONNX_ARCH, files=(),
        sha256="dd048666ee58ed90f1b08c28749fa10e26b20acfeefca108531217980670855c",
        source="dlib_face_recognition_resnet_model_v1.dat of the PyPI package face_recognition_models, converted by "
               "fiqa-trt (engine.models: the default model; its preprocessing is in the file's metadata)",
        licence="CC0 (dlib's model file)",
        # its norm carries no quality information (npAUC ~0.95); signals chosen by benchmarks/quality_select.py,
        # weights and calibration from the engine's own pass (the file says what wrote it)
        recipe=packaged_recipe("dlib-resnet-v1-arcface112"),
        calibrations=packaged_calibrations("dlib-resnet-v1-arcface112"),
        variants=packaged_variants("dlib-resnet-v1-arcface112"),
    ),
)


def lookup(sha256: str) -> ModelRecord | None:
    """The record of the file with this sha256, or None."""
    return next((m for m in KNOWN_MODELS if m.sha256 == sha256), None)


def config_for(sha256: str) -> ModelConfig | None:
    """The preprocessing config the registry holds for this file, or None."""
    record = lookup(sha256)
    if record is None or record.config is None:
        return None
    return ModelConfig.from_dict({**record.config, "name": record.name}, source="registry")


def recipe_for(sha256: str) -> dict | None:
    """The fields of the default quality recipe recorded for this file (for `quality.Recipe`), or None."""
    record = lookup(sha256)
    return dict(record.recipe) if record is not None and record.recipe else None


def record_of_recipe(name: str) -> ModelRecord | None:
    """The record whose packaged default recipe (or one of its variants) is called `name` (e.g.
    `mobilefacenet-default`, `mobilefacenet-fast`), or None."""
    return next((m for m in KNOWN_MODELS if name in packaged_names(m)), None)


def packaged_names(record: ModelRecord) -> dict[str, dict]:
    """Recipe name -> fields of every recipe packaged for `record`: its default and its variants."""
    recipes = ([record.recipe] if record.recipe else []) + list(record.variants.values())
    return {r["name"]: r for r in recipes}


def variant_for(sha256: str, role: str) -> dict | None:
    """The recipe fields packaged for this file in the role `role` (`fast`, `froq`), or None."""
    record = lookup(sha256)
    found = record.variants.get(role) if record is not None else None
    return dict(found) if found else None


def calibration_for(sha256: str, recipe_name: str) -> tuple[float, float] | None:
    """(p1, p99) of the named recipe's raw quality on this file (template-aligned shared LFW crops), or None."""
    record = lookup(sha256)
    found = record.calibrations.get(recipe_name) if record is not None else None
    return tuple(found) if found else None
