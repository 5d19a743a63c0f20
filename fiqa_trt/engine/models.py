"""The default FR model: where its file is, converted on first use (`model_or_default`).

`model=None` is the default FR model: dlib's face-recognition ResNet from the PyPI package face_recognition_models,
converted once to ONNX (112x112 ArcFace-crop input, `onnx_export.dlib_resnet`) and kept in the user cache directory.

The converted file carries its preprocessing in the fiqa-trt ONNX metadata (RGB, mean = dlib's avg_red/green/blue,
std 256), so it needs no registry entry. Its name holds the .dat's sha256 and the importer version, so a changed
package file or a changed converter never reuses a stale conversion.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fiqa_trt.errors import FiqaError
from fiqa_trt.files import cache_dir, package_model_file, sha256_of

log = logging.getLogger("fiqa_trt")
DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"


def dlib_model_file() -> Path:
    """The .dat inside the installed face_recognition_models (FiqaError naming the package when it is missing)."""
    return package_model_file(DAT_NAME)


def converted_model_path(dat_sha256: str, importer_version: int | None = None) -> Path:
    """Where the conversion of a .dat with this checksum, by this importer version, is cached."""
    from fiqa_trt.onnx_export import dlib_resnet

    version = dlib_resnet.IMPORTER_VERSION if importer_version is None else importer_version
    return cache_dir() / "models" / f"{dlib_resnet.MODEL_NAME}-arcface112-{dat_sha256[:16]}-v{version}.onnx"


def default_model_path() -> Path:
    """The default model as an ONNX file with 112x112 ArcFace-crop input; converted on first use (a few seconds)."""
    from fiqa_trt.onnx_export import dlib_resnet

    dat = dlib_model_file()
    out = converted_model_path(sha256_of(dat))
    if out.is_file():
        return out
    log.warning("first use of the default model: converting dlib's face-recognition ResNet (%s) to ONNX, once, "
                "into %s", dat.name, out)
    try:
        dlib_resnet.export_arcface_input_model(dat, out)
    except OSError as exc:
        raise FiqaError(f"cannot write the converted default model to {out.parent}: {exc.strerror or exc} "
                        "(set FIQA_TRT_CACHE to a writable folder)") from None
    return out


def model_or_default(model: str | None) -> str:
    """The model a command was given, or the default model's path when it was given none."""
    return str(default_model_path()) if model is None else model
