"""The runner interface every backend implements (Polygraphy-style: one interface, many backends)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fiqa_trt.engine.model_config import ModelConfig


class Runner(Protocol):
    config: ModelConfig
    device: str  # "cpu" or "cuda:N"
    name: str  # backend name, for reports

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 decoded images in the model's colour order -> (B, D) float32 embeddings.

        The runner applies the model's normalisation and layout (from `config`) itself."""
        ...
