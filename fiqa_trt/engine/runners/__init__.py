"""FR model runners behind one interface: `embed(batch) -> (N, D)`. Backends are imported lazily by `load_runner`.

`backend="auto"` takes the fastest backend installed (OpenVINO, else ONNX Runtime); `precision="auto"` takes a
reduced precision only where the CPU runs it natively and `engine.precision` holds a ranking check that passed.
"""

from __future__ import annotations

import importlib.util
import logging

from fiqa_trt.engine.runners.base import Runner
from fiqa_trt.errors import FiqaError

log = logging.getLogger("fiqa_trt")
BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "fp16")


def available_backends() -> list[str]:
    return [b for b in BACKENDS if importlib.util.find_spec(b) is not None]


def supported_precisions(backend: str) -> list[str]:
    if backend == "openvino":
        from fiqa_trt.engine.runners.openvino import cpu_precisions

        return cpu_precisions()
    return ["fp32"]


def load_runner(model: str, backend: str = "auto", precision: str = "auto", threads: int | None = None,
                **config_overrides) -> Runner:
    """Open `model` with a backend and precision; `config_overrides` (color, mean, std) replace the model's config."""
    from fiqa_trt.engine import precision as checks
    from fiqa_trt.engine.runners.onnx_model import open_onnx_model

    if backend == "auto":
        backend = "openvino" if "openvino" in available_backends() else "onnxruntime"
    if backend not in BACKENDS:
        raise FiqaError(f"unknown backend '{backend}'; available: {', '.join(available_backends())}")
    if backend not in available_backends():
        raise FiqaError(f"backend '{backend}' is not installed: pip install 'fiqa-trt[{backend}]'")
    if precision not in ("auto", *PRECISIONS):
        raise FiqaError(f"unknown precision '{precision}'; use auto or one of: {', '.join(PRECISIONS)}")
    opened = open_onnx_model(model, **config_overrides)
    if precision == "auto":
        precision = "fp32"
        for reduced in [p for p in supported_precisions(backend) if p != "fp32"]:
            if (rho := checks.validated(opened.sha256, backend, reduced)) is not None:
                precision = reduced
                log.debug("%s %s: ranking check passed (Spearman %.4f vs fp32)", backend, reduced, rho)
                break
        else:
            if len(supported_precisions(backend)) > 1:
                log.debug("using fp32: no ranking check recorded for a reduced precision of this model "
                         "(`fiqa-trt bench --model ...` measures one)")
    elif precision not in supported_precisions(backend):
        raise FiqaError(f"{backend} on this CPU runs {', '.join(supported_precisions(backend))}, not {precision}")
    if backend == "openvino":
        from fiqa_trt.engine.runners.openvino import OpenVinoRunner

        return OpenVinoRunner(opened, precision=precision, threads=threads)
    from fiqa_trt.engine.runners.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(opened, threads=threads)


__all__ = ["BACKENDS", "Runner", "available_backends", "load_runner", "supported_precisions"]
