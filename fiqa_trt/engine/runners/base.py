"""The runner interface every backend implements (Polygraphy-style: one interface, many backends).

`Runner.embed` is the public entry: it checks the batch against the model's input and calls the backend's
`_embed`. Every runner says its backend (`name`), `device` ("cpu" or "cuda:N") and the `precision` it really runs.

Observer signals: `runner.observing(Observers(...))` opens the same model on the same backend, precision and device
with the observer output added to its graph (`onnx_export.observers`); that runner's `forward(batch)` returns the
embeddings and the reduced activations of the observed layers from the same one call (`Forward`), and its `embed`
the embeddings alone. A runner without observers gives `Forward(embeddings, None)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fiqa_trt.errors import FiqaError
from fiqa_trt.weights.model_config import ModelConfig


@dataclass
class Forward:
    """One runner call: (B, D) float32 embeddings and, with observers, (B, M) float32 reduced activations (the
    columns of `Runner.observers`), both where the runner computes (NumPy on the CPU, CuPy on a CUDA device)."""

    embeddings: object
    observed: object | None = None


class Runner:
    config: ModelConfig
    name: str = "runner"  # backend name, for reports
    device: str = "cpu"  # "cpu" or "cuda:N"
    precision: str = "fp32"  # what the backend really runs: fp32, bf16 or fp16
    sha256: str | None = None  # of the model file, where the runner was opened from one
    observers = None  # onnx_export.observers.Observers: the layers each call also reduces, or None

    def embed(self, batch):
        """(B, H, W, 3) uint8 decoded images in the model's colour order -> (B, D) float32 embeddings, NumPy on the
        CPU, CuPy on a CUDA device. The runner applies the model's normalisation and layout (from `config`)."""
        check_images(batch, self.config)
        return self._embed(batch)

    def forward(self, batch) -> Forward:
        """`embed`, and the observed layers' reduced activations of the same call (None without observers)."""
        check_images(batch, self.config)
        if self.observers is None:
            return Forward(self._embed(batch))
        return self._forward(batch)

    def observing(self, observers) -> "Runner":
        """A runner on the same model, backend, precision and device whose calls also reduce `observers`' layers
        (`onnx_export.observers.Observers`; None: a runner without observers); this one when it observes those."""
        if observers == self.observers:
            return self
        opened = self.__dict__.setdefault("_observing_runners", {})  # one runner per set of observers, reused
        if observers not in opened:
            opened[observers] = self._observing(observers)
        return opened[observers]

    def _observing(self, observers) -> "Runner":
        raise FiqaError(f"the {self.name} runner cannot observe intermediate layers: observer signals need an ONNX "
                        "model (fiqa-trt export writes one from a checkpoint)")

    def layers(self) -> list:
        """The model's observable layers (`onnx_export.observers.Layer`), in graph order."""
        raise FiqaError(f"the {self.name} runner has no ONNX graph whose layers could be observed")

    def _embed(self, batch):
        raise NotImplementedError

    def _forward(self, batch) -> Forward:
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

    Subclasses set `model` (an `OnnxModel`), `config`, `batch_limit`, `max_batch`, `observers` and implement
    `_run(uint8 chunk) -> (embeddings (n, ...), observed (n, M) or None)` and `observing`.
    """

    def _run(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def layers(self) -> list:
        return self.model.layers()

    def _probe_embedding_size(self) -> None:
        from dataclasses import replace

        if not self.config.embedding_size:
            probe = self.embed(np.zeros((1, *self.model.image_shape()), np.uint8))
            self.config = replace(self.config, embedding_size=int(probe.shape[1]))

    @property
    def sha256(self) -> str:
        return self.model.sha256

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        return self._forward(batch).embeddings

    def _forward(self, batch: np.ndarray) -> Forward:
        step = self.batch_limit or self.max_batch
        embeddings, observed = [], []
        for start in range(0, len(batch), step):
            chunk = np.ascontiguousarray(batch[start : start + step], dtype=np.uint8)
            emb, obs = self._run(chunk)
            embeddings.append(np.asarray(emb, dtype=np.float32).reshape(len(chunk), -1))
            if obs is not None:
                observed.append(np.asarray(obs, dtype=np.float32).reshape(len(chunk), -1))
        return Forward(np.concatenate(embeddings), np.concatenate(observed) if observed else None)
