"""The runner interface every backend implements (Polygraphy-style: one interface, many backends)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fiqa_trt.weights.model_config import ModelConfig
from fiqa_trt.errors import FiqaError


class Runner(Protocol):
    config: ModelConfig
    device: str  # "cpu" or "cuda:N"
    name: str  # backend name, for reports

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 decoded images in the model's colour order -> (B, D) float32 embeddings.

        The runner applies the model's normalisation and layout (from `config`) itself."""
        ...


def check_images(batch, config: ModelConfig) -> None:
    """FiqaError unless `batch` (NumPy or CuPy) is a (B, H, W, 3) batch at the model's input size."""
    if batch.ndim != 4 or tuple(batch.shape[1:]) != (*config.input_size, 3):
        raise FiqaError(f"expected uint8 (B, {config.input_size[0]}, {config.input_size[1]}, 3) images, got "
                        f"{tuple(batch.shape)}")


class HostRunner:
    """What the host-memory runners share: batches cut to the model's limit, the embedding size read from a probe.

    Subclasses set `model`, `config`, `batch_limit`, `max_batch` and implement `_run(uint8 chunk) -> (n, ...)`.
    """

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _probe_embedding_size(self) -> None:
        from dataclasses import replace

        if not self.config.embedding_size:
            probe = self.embed(np.zeros((1, *self.model.image_shape()), np.uint8))
            self.config = replace(self.config, embedding_size=int(probe.shape[1]))

    def embed(self, batch: np.ndarray) -> np.ndarray:
        step = self.batch_limit or self.max_batch
        outs = []
        for start in range(0, len(batch), step):
            chunk = np.ascontiguousarray(batch[start : start + step], dtype=np.uint8)
            outs.append(np.asarray(self._run(chunk), dtype=np.float32).reshape(len(chunk), -1))
        return np.concatenate(outs)
