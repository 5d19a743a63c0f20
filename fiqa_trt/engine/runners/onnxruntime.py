"""ONNX Runtime CPU runner (fp32): the reference backend, available wherever fiqa-trt installs."""

from __future__ import annotations

import numpy as np

from fiqa_trt.engine.runners.base import HostRunner
from fiqa_trt.engine.runners.onnx_model import OnnxModel
from fiqa_trt.onnx_export.graph import ort_session
from fiqa_trt.onnx_export.observers import OUTPUT
from fiqa_trt.errors import FiqaError


class OnnxRuntimeRunner(HostRunner):
    name = "onnxruntime"
    device = "cpu"
    precision = "fp32"

    def __init__(self, model: OnnxModel, threads: int | None = None, max_batch: int = 64, observers=None):
        self.model, self.config, self.path = model, model.config, model.path
        self.batch_limit = model.batch_limit
        self.max_batch, self.threads, self.observers = max_batch, threads, observers
        try:
            self._session = ort_session(model.with_preprocessing(observers), threads)
        except FiqaError:
            raise
        except Exception as exc:
            raise FiqaError(f"ONNX Runtime cannot run {model.path.name}: {str(exc)[:300]}") from None
        self._input = self._session.get_inputs()[0].name
        self._outputs = [self._session.get_outputs()[0].name] + ([OUTPUT] if observers is not None else [])
        self._probe_embedding_size()

    def _observing(self, observers) -> "OnnxRuntimeRunner":
        runner = OnnxRuntimeRunner(self.model, self.threads, self.max_batch, observers)
        runner.config = self.config
        return runner

    def _run(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outs = self._session.run(self._outputs, {self._input: chunk})
        return outs[0], (outs[1] if len(outs) > 1 else None)
