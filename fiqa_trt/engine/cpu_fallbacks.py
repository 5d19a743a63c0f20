"""Operators DALI has only on the GPU, done on the CPU inside the same pipeline (via `fn.python_function`).

The one such operator today is remapping (elastic deformation): `fn.experimental.remap` is GPU-only, so on the CPU
the same maps go through OpenCV's `remap` with identical conventions (pixel centres at integer coordinates,
bilinear, zero outside). Everything else in the graph is the same operator on both devices.
"""

from __future__ import annotations

import numpy as np


def _remap_cpu(image: np.ndarray, mapx: np.ndarray, mapy: np.ndarray) -> np.ndarray:
    import cv2

    h, w = mapx.shape[:2]  # maps are (H, W) or (H, W, 1)
    return cv2.remap(image, np.ascontiguousarray(mapx.reshape(h, w)), np.ascontiguousarray(mapy.reshape(h, w)),
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def remap(image, mapx, mapy, device: str):
    """DALI node: image (H, W, C) uint8 resampled at (mapy, mapx), source coordinates of each output pixel (maps
    (H, W, 1) float32, already where `device` says: made in the graph on that device)."""
    from nvidia.dali import fn, types

    if device == "gpu":
        return fn.experimental.remap(image, mapx, mapy, interp=types.INTERP_LINEAR, pixel_origin="center")
    return fn.python_function(image, mapx, mapy, function=_remap_cpu, num_outputs=1)
