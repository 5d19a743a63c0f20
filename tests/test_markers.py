"""The `gpu` marker: every test that needs a CUDA device carries it, so the device machine runs `pytest -m gpu`
(those tests alone, not the CPU emulation, exports or CLI tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

GPU_FILES = ["test_kernels_cuda.py", "test_pipeline.py", "test_torch_runner.py", "test_tensorrt.py"]


class _Collector:
    def __init__(self):
        self.items = []

    def pytest_collection_modifyitems(self, items):
        self.items.extend(items)


def _needs_a_device(item) -> bool:
    """A skipif whose reason says it needs a CUDA device / GPU (how these files write it)."""
    reasons = " ".join(str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif"))
    return any(word in reasons for word in ("CUDA device", "a GPU", "no GPU"))


def test_every_device_test_is_marked_gpu_and_nothing_else_is():
    here = Path(__file__).parent
    collector = _Collector()
    code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *(str(here / f) for f in GPU_FILES)],
                       plugins=[collector])
    assert code == 0 and collector.items
    device = {i.nodeid for i in collector.items if _needs_a_device(i)}
    marked = {i.nodeid for i in collector.items if i.get_closest_marker("gpu")}
    assert device, "no device test found: the reasons' wording changed"
    assert device == marked, (sorted(device - marked)[:5], sorted(marked - device)[:5])
