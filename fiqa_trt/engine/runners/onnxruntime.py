"""ONNX Runtime CPU runner (fp32): the reference backend, available wherever fiqa-trt installs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fiqa_trt.engine.runners.onnx_model import OnnxModel, _ort_session
from fiqa_trt.errors import FiqaError


class OnnxRuntimeRunner:
    name = "onnxruntime"
    device = "cpu"
    precision = "fp32"

    def __init__(self, model: OnnxModel, threads: int | None = None, max_batch: int = 64):
        self.model, self.config, self.path = model, model.config, model.path
        self.batch_limit = model.batch_limit
        self.max_batch = max_batch
        try:
            self._session = _ort_session(model.with_preprocessing(), threads)
        except Exception as exc:
            raise FiqaError(f"ONNX Runtime cannot run {model.path.name}: {str(exc)[:300]}") from None
        self._input = self._session.get_inputs()[0].name
        if not self.config.embedding_size:
            probe = self.embed(np.zeros((1, *model.image_shape()), np.uint8))
            self.config = replace(self.config, embedding_size=int(probe.shape[1]))

    def embed(self, batch: np.ndarray) -> np.ndarray:
        step = self.batch_limit or self.max_batch
        outs = []
        for start in range(0, len(batch), step):
            chunk = np.ascontiguousarray(batch[start : start + step], dtype=np.uint8)
            outs.append(self._session.run(None, {self._input: chunk})[0].reshape(len(chunk), -1))
        return np.concatenate(outs).astype(np.float32, copy=False)
