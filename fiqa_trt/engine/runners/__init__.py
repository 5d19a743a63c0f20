"""FR model runners behind one interface: `embed(batch) -> (N, D)`. Backends are imported lazily by `load_runner`."""

from __future__ import annotations

from fiqa_trt.engine.runners.base import Runner


def load_runner(model: str, backend: str = "onnxruntime", threads: int | None = None, **config_overrides) -> Runner:
    """Open `model` with the named backend; `config_overrides` (color, mean, std) replace the model's config."""
    if backend == "onnxruntime":
        from fiqa_trt.engine.runners.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(model, threads=threads, **config_overrides)
    from fiqa_trt.errors import FiqaError

    raise FiqaError(f"unknown backend '{backend}'; available: onnxruntime")


__all__ = ["Runner", "load_runner"]
