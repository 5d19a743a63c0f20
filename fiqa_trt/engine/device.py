"""Where scoring runs: `--device cpu|cuda[:i]|auto`, resolved against what this machine has.

Owns: parsing the device text, the checks the GPU path needs (a CUDA device usable through CuPy, DALI, and a GPU
runner for the model: TensorRT for an ONNX file, PyTorch CUDA for a checkpoint), and the array module of a device.
On the GPU path the pipeline's output stays in device memory and reaches the runner and the quality kernel as CuPy
arrays (DLPack); on the CPU the same hand-over gives NumPy arrays.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass

from fiqa_trt.files import is_checkpoint
from fiqa_trt.errors import FiqaError

log = logging.getLogger("fiqa_trt")


@dataclass(frozen=True)
class Device:
    kind: str = "cpu"  # "cpu" or "cuda"
    index: int = 0

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.is_cuda else "cpu"


def parse_device(text: str) -> tuple[str, int | None]:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> (kind, index or None)."""
    match = re.fullmatch(r"(auto|cpu|cuda)(?::(\d+))?", text.strip().lower())
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise FiqaError(f"--device {text!r}: use cpu, cuda, cuda:N or auto")
    return match.group(1), None if match.group(2) is None else int(match.group(2))



def _tensorrt_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install 'fiqa-trt[tensorrt]')"
    return None


def _torch_cuda_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed (pip install 'fiqa-trt[export]')"
    import torch

    return None if torch.cuda.is_available() else f"PyTorch {torch.__version__} sees no CUDA device"


def gpu_path_problems(model: str, index: int = 0) -> list[str]:
    """Why the GPU path cannot score `model` on cuda:index here (empty: it can)."""
    from fiqa_trt.kernels.cuda import usable_device

    if (reason := usable_device()) is not None:
        return [reason]
    import cupy

    problems = []
    if index >= (count := cupy.cuda.runtime.getDeviceCount()):
        problems.append(f"cuda:{index} does not exist ({count} CUDA device(s))")
    if importlib.util.find_spec("nvidia.dali") is None:
        problems.append("DALI is not installed (pip install nvidia-dali-cuda130)")
    runner = _torch_cuda_reason() if is_checkpoint(model) else _tensorrt_reason()
    if runner is not None:
        problems.append(runner)
    return problems


def resolve_device(text: str, model: str) -> Device:
    """The device to score `model` on. 'auto' takes the GPU path when everything it needs is here, else the CPU
    (saying why at info level when a GPU exists); an explicit 'cuda[:N]' that cannot work is an error."""
    kind, index = parse_device(text)
    if kind == "cpu":
        return Device("cpu")
    problems = gpu_path_problems(model, index or 0)
    if not problems:
        return Device("cuda", index or 0)
    if kind == "cuda":
        raise FiqaError(f"--device {text}: the GPU path cannot run here: {'; '.join(problems)}")
    no_gpu = problems[0].startswith(("'cupy' is not installed", "no CUDA device", "CUDA device not usable"))
    (log.debug if no_gpu else log.info)("running on the CPU: %s", "; ".join(problems))
    return Device("cpu")


def array_module(device: Device):
    """NumPy for the CPU, CuPy for a CUDA device."""
    if device.is_cuda:
        import cupy

        return cupy
    import numpy

    return numpy
