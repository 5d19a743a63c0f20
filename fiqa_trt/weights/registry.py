"""The model registry: preprocessing configs for known model files that carry no fiqa-trt metadata.

Keyed by the file's sha256, so a renamed copy is still recognised and a different file never gets a wrong config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fiqa_trt.weights.model_config import ModelConfig


@dataclass(frozen=True)
class KnownModel:
    name: str
    sha256: str
    source: str
    licence: str
    config: dict
    # "backend:precision" -> Spearman of quality scores against fp32, measured by `fiqa-trt bench` on shared LFW
    precision_checks: dict = field(default_factory=dict)


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel(
        name="faceplugin-mobilefacenet",
        sha256="87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581",
        source="npm package faceplugin-face-recognition-js 0.0.1, package/model/fr_feature.onnx",
        licence="MIT",
        config=dict(
            input_size=(112, 112), color="RGB", mean=127.0, std=128.0, embedding_size=512, normalized_output=False
        ),
        # `fiqa-trt bench` on the first 1,000 shared LFW images, AMD EPYC with AVX-512 BF16, OpenVINO 2026.4
        precision_checks={"openvino:bf16": 0.99705},
    ),
)


def lookup(sha256: str) -> ModelConfig | None:
    for model in KNOWN_MODELS:
        if model.sha256 == sha256:
            return ModelConfig.from_dict({**model.config, "name": model.name}, source="registry")
    return None
