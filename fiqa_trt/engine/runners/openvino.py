"""OpenVINO CPU runner: fp32, or bf16 / fp16 execution where the CPU has it (AVX-512 BF16, AMX).

The precision is OpenVINO's inference-precision hint; the precision actually compiled is read back and reported,
so a CPU without bf16 never passes fp32 results off as bf16.
"""

from __future__ import annotations

import os

import numpy as np

from fiqa_trt.engine.runners.base import HostRunner
from fiqa_trt.engine.runners.onnx_model import OnnxModel
from fiqa_trt.errors import FiqaError, require
from fiqa_trt.onnx_export.observers import OUTPUT

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def _core():
    return require("openvino", extra="openvino").Core()


def cpu_precisions() -> list[str]:
    """Precisions this CPU executes natively through OpenVINO ("fp32" always; "bf16" / "fp16" where supported)."""
    caps = set(_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return ["fp32"] + [p for p, cap in (("bf16", "BF16"), ("fp16", "FP16")) if cap in caps]


class OpenVinoRunner(HostRunner):
    name = "openvino"
    device = "cpu"

    def __init__(self, model: OnnxModel, precision: str = "fp32", threads: int | None = None, max_batch: int = 64,
                 observers=None):
        if precision not in HINTS:
            raise FiqaError(f"unknown precision '{precision}' for OpenVINO; use one of: {', '.join(HINTS)}")
        if precision not in cpu_precisions():
            raise FiqaError(f"this CPU has no native {precision} in OpenVINO; available: {', '.join(cpu_precisions())}")
        core = _core()
        self.model, self.config, self.path = model, model.config, model.path
        self.batch_limit, self.max_batch = model.batch_limit, max_batch
        self.threads, self.observers, self._asked = threads, observers, precision
        try:
            ov_model = core.read_model(model.with_preprocessing(observers).SerializeToString())
            compiled = core.compile_model(ov_model, "CPU", {
                "INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1})
        except Exception as exc:
            raise FiqaError(f"OpenVINO cannot compile {model.path.name}: {str(exc)[:300]}") from None
        compiled_type = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16", "f16"
        self.precision = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(compiled_type, compiled_type)
        self._request = compiled.create_infer_request()
        self._embedding_port = compiled.output(0)
        self._observer_port = compiled.output(OUTPUT) if observers is not None else None
        self._probe_embedding_size()

    def _observing(self, observers) -> "OpenVinoRunner":
        runner = OpenVinoRunner(self.model, self._asked, self.threads, self.max_batch, observers)
        runner.config = self.config
        return runner

    def _run(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outs = self._request.infer({0: chunk})
        return outs[self._embedding_port], (outs[self._observer_port] if self._observer_port is not None else None)
