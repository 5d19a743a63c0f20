"""The shipped models the quality benchmarks measure, each with its packaged default recipe."""

from __future__ import annotations

from pathlib import Path

SHARED = Path(__file__).resolve().parents[3] / "shared"
MOBILEFACENET = SHARED / "models/faceplugin-mobilefacenet/fr_feature.onnx"


def packaged(model: str):
    """(path, recipe, source, runner) of `mobilefacenet` (the shared file) or `dlib` (the default model): its
    registry recipe, and a runner on OpenVINO at the precision `auto` picks. Exits when the model's default recipe
    is not the registry's (one the user calibrated would be measured instead)."""
    from fiqa_trt.engine.models import default_model_path
    from fiqa_trt.engine.resolve import resolve_recipe
    from fiqa_trt.engine.runners import load_runner

    path = MOBILEFACENET if model == "mobilefacenet" else default_model_path()
    recipe, source = resolve_recipe(None, path)
    if source != "model registry":
        raise SystemExit(f"{model}: the default recipe comes from {source}, not the model registry: move it away")
    return path, recipe, source, load_runner(str(path), "openvino", "auto")
