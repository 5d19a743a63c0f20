"""Shared fixtures: paths into ../shared (tests skip cleanly without it) and small synthetic inputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(os.environ.get("FIQA_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
LFW = SHARED / "data" / "lfw112"
LFW_PAIRS = SHARED / "data" / "lfw112_pairs.txt"
MOBILEFACENET = SHARED / "models" / "faceplugin-mobilefacenet" / "fr_feature.onnx"


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` (minutes each) run in CI (CI=true), with FIQA_TRT_SLOW=1, or when `-m` names them."""
    if os.environ.get("CI") == "true" or os.environ.get("FIQA_TRT_SLOW") == "1" or "slow" in config.option.markexpr:
        return
    skip = pytest.mark.skip(reason="slow (whole shared LFW): runs in CI, or with FIQA_TRT_SLOW=1 or -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory):
    """The tests' own user cache: a recipe someone stored with `fiqa-trt calibrate` on this machine would otherwise
    replace a model's shipped default recipe in the tests (the default model is converted into it once)."""
    before = os.environ.get("FIQA_TRT_CACHE")
    os.environ["FIQA_TRT_CACHE"] = str(tmp_path_factory.mktemp("fiqa-trt-cache"))
    yield
    if before is None:
        os.environ.pop("FIQA_TRT_CACHE", None)
    else:
        os.environ["FIQA_TRT_CACHE"] = before


@pytest.fixture(scope="session")
def lfw() -> Path:
    if not LFW.is_dir():
        pytest.skip("shared LFW data not available (../shared/data/lfw112)")
    return LFW


@pytest.fixture(scope="session")
def real_model() -> Path:
    if not MOBILEFACENET.is_file():
        pytest.skip("shared MobileFaceNet model not available")
    return MOBILEFACENET


@pytest.fixture(scope="session")
def lfw_files(lfw) -> list[Path]:
    return sorted(lfw.glob("*/*.jpg"))


@pytest.fixture(scope="session")
def random_model(tmp_path_factory) -> Path:
    """A random-weight conv net with a fixed batch of 1 and a Reshape to [1, -1]: for format checks only."""
    from tests.onnx_models import fixed_batch_embedder

    path = tmp_path_factory.mktemp("models") / "random_fixed_batch.onnx"
    fixed_batch_embedder(path)
    return path


def write_image(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def face_like(tmp_path) -> list[Path]:
    """Four 112x112 RGB images with structure (gradients + shapes), different from one another."""
    rng = np.random.default_rng(7)
    paths = []
    yy, xx = np.mgrid[0:112, 0:112]
    for i in range(4):
        img = np.stack([(xx * (i + 1)) % 256, (yy * 2 + 40 * i) % 256, ((xx + yy) * 3) % 256], -1).astype(np.uint8)
        img[30 + 5 * i : 60, 20:50] = rng.integers(0, 255, 3)
        paths.append(write_image(tmp_path / f"img{i}.png", img))
    return paths
