"""FR model runners behind one interface: `embed(batch) -> (N, D)`. Backends are imported lazily by `load_runner`.

On the CPU, `backend="auto"` takes the fastest backend installed (OpenVINO, else ONNX Runtime) and
`precision="auto"` takes a reduced precision only where the CPU runs it natively and `weights.precision_checks` holds a
ranking check that passed. On a CUDA device an ONNX model runs on TensorRT and a checkpoint on PyTorch, and
`precision="auto"` means FP16 (TensorRT engines are strongly typed: an FP32 ONNX is converted to FP16 first).
A PyTorch checkpoint on the CPU runs on PyTorch in FP32.
"""

from __future__ import annotations

import importlib.util
import logging

from fiqa_trt.engine.runners.base import Runner
from fiqa_trt.errors import FiqaError

log = logging.getLogger("fiqa_trt")
BACKENDS = ("onnxruntime", "openvino")
GPU_BACKENDS = ("tensorrt", "torch")
PRECISIONS = ("fp32", "bf16", "fp16")


def available_backends() -> list[str]:
    return [b for b in BACKENDS if importlib.util.find_spec(b) is not None]


def supported_precisions(backend: str) -> list[str]:
    if backend == "openvino":
        from fiqa_trt.engine.runners.openvino import cpu_precisions

        return cpu_precisions()
    return ["fp32"]


def load_runner(model: str, backend: str = "auto", precision: str = "auto", threads: int | None = None,
                device="cpu", **config_overrides) -> Runner:
    """Open `model` with a backend and precision on `device` ('cpu', 'cuda[:N]', 'auto' or an engine.device.Device);
    `config_overrides` (color, mean, std, input_size) replace the model's config."""
    from fiqa_trt.weights import precision_checks as checks
    from fiqa_trt.engine.device import Device, resolve_device
    from fiqa_trt.files import is_checkpoint
    from fiqa_trt.engine.runners.onnx_model import open_onnx_model

    if precision not in ("auto", *PRECISIONS):
        raise FiqaError(f"unknown precision '{precision}'; use auto or one of: {', '.join(PRECISIONS)}")
    target = device if isinstance(device, Device) else resolve_device(device, model)
    if is_checkpoint(model):
        return _torch_runner(model, backend, precision, target, config_overrides)
    if target.is_cuda:
        return _tensorrt_runner(model, backend, precision, target, config_overrides)
    if backend in GPU_BACKENDS:
        raise FiqaError(f"backend '{backend}' runs on a CUDA device: add --device cuda")
    if backend == "auto":
        backend = "openvino" if "openvino" in available_backends() else "onnxruntime"
    if backend not in BACKENDS:
        raise FiqaError(f"unknown backend '{backend}'; available: {', '.join(available_backends())}")
    if backend not in available_backends():
        raise FiqaError(f"backend '{backend}' is not installed: pip install 'fiqa-trt[{backend}]'")
    opened = open_onnx_model(model, **config_overrides)
    precision, why = checks.choose(opened.sha256, backend, supported_precisions(backend), precision)
    log.debug("%s %s: %s", backend, precision, why)
    if backend == "openvino":
        from fiqa_trt.engine.runners.openvino import OpenVinoRunner

        return OpenVinoRunner(opened, precision=precision, threads=threads)
    from fiqa_trt.engine.runners.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(opened, threads=threads)


def _torch_runner(model: str, backend: str, precision: str, device, overrides: dict) -> Runner:
    from fiqa_trt.engine.runners.torch_cuda import load_torch_runner

    if backend not in ("auto", "torch"):
        raise FiqaError(f"{model} is a PyTorch checkpoint: it runs on the torch backend, not '{backend}'")
    if precision == "bf16":
        raise FiqaError("the PyTorch runner runs fp32, or fp16 on a CUDA device")
    runner = load_torch_runner(model, device=str(device), fp16=None if precision == "auto" else precision == "fp16")
    runner.config = runner.config.with_overrides(**overrides)
    return runner


def _tensorrt_runner(model: str, backend: str, precision: str, device, overrides: dict) -> Runner:
    from fiqa_trt.engine.runners.tensorrt import load_tensorrt_runner

    if backend not in ("auto", "tensorrt"):
        raise FiqaError(f"on {device} an ONNX model runs on TensorRT, not '{backend}' (use --device cpu for it)")
    if precision == "bf16":
        raise FiqaError("TensorRT engines here are fp16 or fp32")
    return load_tensorrt_runner(model, precision="fp16" if precision == "auto" else precision,
                                device_id=device.index, **overrides)  # mean/std go into the engine


__all__ = ["BACKENDS", "GPU_BACKENDS", "Runner", "available_backends", "load_runner", "supported_precisions"]
