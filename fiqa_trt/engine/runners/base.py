"""The runner interface every backend implements (Polygraphy-style: one interface, many backends).

`Runner.embed` is the public entry: it checks the batch against the model's input and calls the backend's
`_embed`. Every runner says its backend (`name`), `device` ("cpu" or "cuda:N") and the `precision` it really runs.
"""

from __future__ import annotations

import numpy as np

from fiqa_trt.errors import FiqaError
from fiqa_trt.weights.model_config import ModelConfig


class Runner:
    config: ModelConfig
    name: str = "runner"  # backend name, for reports
    device: str = "cpu"  # "cpu" or "cuda:N"
    precision: str = "fp32"  # what the backend really runs: fp32, bf16 or fp16
    sha256: str | None = None  # of the model file, where the runner was opened from one

    def embed(self, batch):
        """(B, H, W, 3) uint8 decoded images in the model's colour order -> (B, D) float32 embeddings, NumPy on the
        CPU, CuPy on a CUDA device. The runner applies the model's normalisation and layout (from `config`)."""
        check_images(batch, self.config)
        return self._embed(batch)

    def _embed(self, batch):
        raise NotImplementedError


def check_images(batch, config: ModelConfig) -> None:
    """FiqaError unless `batch` (NumPy or CuPy) is a (B, H, W, 3) batch at the model's input size."""
    if batch.ndim != 4 or tuple(batch.shape[1:]) != (*config.input_size, 3):
        raise FiqaError(f"expected uint8 (B, {config.input_size[0]}, {config.input_size[1]}, 3) images, got "
                        f"{tuple(batch.shape)}")


def power_of_two_bucket(n: int, low: int, high: int) -> int:
    """The buffer / CUDA-graph bucket of a batch of n: the next power of two, clipped to [low, high]."""
    return max(low, min(high, 1 << max(0, (n - 1).bit_length())))


class HostRunner(Runner):
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

    @property
    def sha256(self) -> str:
        return self.model.sha256

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        step = self.batch_limit or self.max_batch
        outs = []
        for start in range(0, len(batch), step):
            chunk = np.ascontiguousarray(batch[start : start + step], dtype=np.uint8)
            outs.append(np.asarray(self._run(chunk), dtype=np.float32).reshape(len(chunk), -1))
        return np.concatenate(outs)
