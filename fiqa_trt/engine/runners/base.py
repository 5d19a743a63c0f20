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
