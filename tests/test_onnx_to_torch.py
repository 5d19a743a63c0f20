"""The ONNX -> PyTorch importer (used to run the shared MobileFaceNet on the PyTorch CUDA runner) against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fiqa_trt.engine.runners import load_runner  # noqa: E402
from fiqa_trt.engine.runners.torch_cuda import TorchRunner  # noqa: E402
from fiqa_trt.errors import FiqaError  # noqa: E402
from fiqa_trt.onnx_export import export, onnx_to_torch  # noqa: E402


def test_shared_model_imports_and_matches_onnxruntime(real_model, lfw_files):
    import cv2

    images = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in lfw_files[:6]])
    ort = load_runner(str(real_model), "onnxruntime", "fp32")
    runner = TorchRunner(onnx_to_torch.load(real_model), ort.config, device="cpu")
    got, want = runner.embed(images), ort.embed(images)  # a batch of 6 through a fixed-batch export
    assert got.shape == want.shape == (6, 512)
    assert export.cosines(got, want).min() >= 0.99999


def test_unsupported_operators_are_named(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Softmax", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "softmax.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(FiqaError, match="does not support Softmax"):
        onnx_to_torch.load(path)
