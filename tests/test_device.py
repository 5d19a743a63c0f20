"""--device: parsing, resolution against this machine, and the runner each device gets."""

from __future__ import annotations

import logging

import pytest

from fiqa_trt.engine.device import Device, parse_device, resolve_device
from fiqa_trt.files import is_checkpoint
from fiqa_trt.engine.runners import load_runner
from fiqa_trt.errors import FiqaError
from fiqa_trt.kernels.cuda import usable_device
from tests.cli_runner import run_cli

NO_GPU = usable_device()


@pytest.mark.parametrize("text, want", [("auto", ("auto", None)), ("cpu", ("cpu", None)), ("cuda", ("cuda", None)),
                                        ("cuda:1", ("cuda", 1)), (" CUDA:0 ", ("cuda", 0))])
def test_parse(text, want):
    assert parse_device(text) == want


@pytest.mark.parametrize("text", ["gpu", "cpu:0", "cuda:x", "auto:1", ""])
def test_parse_refuses(text):
    with pytest.raises(FiqaError, match="use cpu, cuda, cuda:N or auto"):
        parse_device(text)


def test_device_names_and_runner_choice():
    assert str(Device()) == "cpu" and str(Device("cuda", 2)) == "cuda:2" and Device("cuda").is_cuda
    assert is_checkpoint("backbone.PTH") and is_checkpoint("adaface.ckpt") and not is_checkpoint("m.onnx")


@pytest.mark.skipif(NO_GPU is None, reason="a CUDA device is usable here")
def test_without_gpu_auto_is_cpu_and_cuda_says_why(caplog, random_model):
    with caplog.at_level(logging.DEBUG, logger="fiqa_trt"):
        assert resolve_device("auto", str(random_model)) == Device("cpu")
    assert "running on the CPU" in caplog.text
    with pytest.raises(FiqaError, match="--device cuda:1: the GPU path cannot run here"):
        resolve_device("cuda:1", str(random_model))
    with pytest.raises(FiqaError, match="the GPU path cannot run here"):
        load_runner(str(random_model), device="cuda")


def test_cpu_backends_and_gpu_backends_are_kept_apart(random_model):
    with pytest.raises(FiqaError, match="backend 'tensorrt' runs on a CUDA device: add --device cuda"):
        load_runner(str(random_model), backend="tensorrt", device="cpu")
    runner = load_runner(str(random_model), backend="onnxruntime", device="cpu")
    assert runner.device == "cpu"


def test_cli_device_errors_are_clean(random_model, tmp_path):
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "face.png"), np.zeros((112, 112, 3), np.uint8))
    run = run_cli("score", tmp_path, "--model", random_model, "--device", "gpu")
    assert run.returncode == 2 and "use cpu, cuda, cuda:N or auto" in run.stderr and "Traceback" not in run.stderr
