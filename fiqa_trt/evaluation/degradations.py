"""The degradation check of a quality: synthetic degradations of aligned face crops, and how often a quality ranks
the degraded copy of a face below the face itself.

A quality tool for enrolment and curation must score a clearly degraded copy of a face lower than the face: labelled
verification pairs (LFW) hold few such images, so an EDC alone does not see whether a recipe does. Five kinds, each
applied to a crop on the model's template (sizes scaled with the crop; the numbers are for 112 x 112):
- `blur2`, `blur4`: Gaussian blur of sigma 2 and 4 px;
- `down18`: the whole crop down to 18 x 18 px (area average) and back up (bilinear): the eyes about 6 px apart;
- `noise25`: additive Gaussian noise of sigma 25 (0-255 units), clipped; keyed by the image's key and the seed;
- `eyes`: a black band over both eyes (rows 40-67, columns 20-91 of the ArcFace template).

`agreement(clean, degraded)` is, per kind, the fraction of faces whose quality drops. `evaluation.calibrate.search`
takes a floor on its minimum over the kinds as a constraint of the weight fit (`fiqa-trt calibrate`,
benchmarks/quality_select.py and quality_iso.py use the same check).
"""

from __future__ import annotations

import hashlib

import numpy as np

KINDS = ("blur2", "blur4", "down18", "noise25", "eyes")
FLOOR = 2 / 3  # the least agreement the shipped recipes must reach on every kind (a clear majority of faces)
SAMPLE = 400  # dev faces the check degrades


def _noise_rng(key: str, seed: int) -> np.random.Generator:
    digest = hashlib.blake2b(f"degrade-noise\x1f{seed}\x1f{key}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def degrade(crop: np.ndarray, kind: str, key: str = "", seed: int = 0) -> np.ndarray:
    """`crop` (H, W, 3) uint8 on the model's template, degraded by `kind` (see the module docstring)."""
    import cv2

    h, w = crop.shape[:2]
    scale = min(h, w) / 112.0
    if kind in ("blur2", "blur4"):
        sigma = (2.0 if kind == "blur2" else 4.0) * scale
        return cv2.GaussianBlur(crop, (0, 0), sigma)
    if kind == "down18":
        side = max(2, int(round(18 * scale)))
        small = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if kind == "noise25":
        noise = _noise_rng(key, seed).normal(0.0, 25.0, crop.shape)
        return np.clip(crop.astype(np.float64) + noise, 0, 255).astype(np.uint8)
    if kind == "eyes":
        out = crop.copy()
        out[int(round(40 * h / 112)):int(round(68 * h / 112)), int(round(20 * w / 112)):int(round(92 * w / 112))] = 0
        return out
    raise ValueError(f"unknown degradation '{kind}'; use one of: {', '.join(KINDS)}")


def agreement(clean: np.ndarray, degraded: dict[str, np.ndarray]) -> dict[str, float]:
    """Per degradation kind: the fraction of faces whose quality is lower for the degraded copy than for the face
    (NaN qualities count as not lower)."""
    clean = np.asarray(clean, np.float64)
    return {kind: float(np.mean(np.asarray(q, np.float64) < clean)) for kind, q in degraded.items()}
