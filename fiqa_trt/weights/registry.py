"""The model registry: what is known about model files that are scored as they are, keyed by their sha256.

One `zoo.ModelRecord` per file: its preprocessing when the file carries no fiqa-trt metadata, the reduced-precision
ranking checks that `precision="auto"` consults, its default quality recipe and the 0-100 calibrations of the
recipes on it (benchmarks/quality_recipes.py). Keyed by the file's sha256, so
a renamed copy is still recognised and a different file never gets a wrong record.
"""

from __future__ import annotations

from fiqa_trt.weights.model_config import ModelConfig
from fiqa_trt.weights.zoo import ONNX_ARCH, ModelRecord

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
        # chosen by benchmarks/quality_select.py (inner cross-validation on the dev half of a seeded identity split),
        # weights and 0-100 calibration from the engine's own pass, benchmarks/quality_iso.py (results/quality_iso.json)
        recipe=dict(
            name="mobilefacenet-default",
            perturb=("affine:rot=0,scale=1,flip=1", "affine:rot=0.5,scale=1.01,flip=1",
                     "affine:rot=0,scale=1,tx=-1,flip=1", "affine:rot=0,scale=1,tx=1,flip=1"),
            fusion="weighted_log", signals=(("lognorm:all", 1.0),), realign="auto",  # cos:1 (the seed view) got 0
            calibration=(0.940401, 1.47604),
            figures={"protocol": "shared LFW, all-mated (evaluation.protocols), test half of identity split seed 0, "
                                 "verification on the template-aligned crops (eval --realign auto)",
                     "test_npauc30": {"1e-03": 0.5688, "1e-04": 0.5706},
                     "norm_test_npauc30": {"1e-03": 0.592, "1e-04": 0.5891},
                     "seed_as_is_test_npauc30": {"1e-03": 0.7597, "1e-04": 0.7292},
                     "difference_vs_norm_90": {"1e-03": [-0.044, -0.0019], "1e-04": [-0.0364, -0.0028]}}),
        calibrations={"seed": (0.941871, 0.988608), "stability": (0.941871, 0.988608)},
    ),
    ModelRecord(
        name="dlib-resnet-v1-arcface112", arch=ONNX_ARCH, files=(),
        sha256="dd048666ee58ed90f1b08c28749fa10e26b20acfeefca108531217980670855c",
        source="dlib_face_recognition_resnet_model_v1.dat of the PyPI package face_recognition_models, converted by "
               "fiqa-trt (engine.models: the default model; its preprocessing is in the file's metadata)",
        licence="CC0 (dlib's model file)",
        # its norm carries no quality information (npAUC ~0.95); chosen by benchmarks/quality_select.py, weights and
        # calibration from benchmarks/quality_iso.py (results/quality_iso.json)
        recipe=dict(
            name="dlib-default",
            perturb=("affine:rot=0.5,scale=1.01,flip=1", "affine:rot=6,scale=1,flip=0", "affine:rot=0,scale=0.95,flip=0"),
            fusion="weighted_log", signals=(("cos:0", 1.0), ("cos:1", 1.659519), ("cos:2", 2.904514)), realign="auto",
            calibration=(-0.055565, -0.017547),
            figures={"protocol": "shared LFW, all-mated (evaluation.protocols), test half of identity split seed 0, "
                                 "verification on the template-aligned crops (eval --realign auto)",
                     "test_npauc30": {"1e-03": 0.7599, "1e-04": 0.8363},
                     "seed_view_test_npauc30": {"1e-03": 0.7859, "1e-04": 0.8533},
                     "difference_vs_seed_view_90": {"1e-03": [-0.0589, 0.0032], "1e-04": [-0.0336, 0.0018]}}),
        calibrations={"seed": (0.979633, 0.996111), "stability": (0.979633, 0.996111)},
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
    """The fields of the default quality recipe recorded for this file (for `engine.recipes.Recipe`), or None."""
    record = lookup(sha256)
    return dict(record.recipe) if record is not None and record.recipe else None


def calibration_for(sha256: str, recipe_name: str) -> tuple[float, float] | None:
    """(p1, p99) of the named recipe's raw quality on this file (template-aligned shared LFW crops), or None."""
    record = lookup(sha256)
    found = record.calibrations.get(recipe_name) if record is not None else None
    return tuple(found) if found else None
