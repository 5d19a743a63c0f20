"""Synthetic degradations of face images: the degradation check of a quality (how often it ranks a clearly degraded
copy of a face below the face itself) and the realistic kinds at random strengths of the cross-quality protocol.

A quality tool for enrolment and curation must score a clearly degraded copy of a face lower than the face: labelled
verification pairs (LFW) hold few such images, so an EDC alone does not see whether a recipe does.

Realistic kinds (`REALISTIC`), each a function of a strength s in [0, 1] (0 mild, 1 severe; sizes scaled with the
image; the numbers are for 112 x 112):
- `blur`: Gaussian (defocus) blur, sigma 0.7-4 px;
- `motion`: linear motion blur, 3-17 px long, at a keyed angle;
- `noise`: additive Gaussian noise, sigma 4-30 (0-255 units), clipped, keyed;
- `bright`: over-exposure, the pixels times 1.4-3, clipped;
- `dark`: under-exposure, 255 * gain * (x / 255) ^ gamma with gamma 1.4-3 and gain 0.9-0.3;
- `jpeg`: JPEG compression at quality 40-5;
- `down`: down to 56-14 px (area average) and back up (bilinear);
- `downjpeg`: down to 56-16 px, JPEG at quality 60-15 at that size, and back up (a small face from a compressed
  stream).

Check kinds (`KINDS`): fixed settings a person calls clearly worse, applied to a crop on the model's template:
`BASE_KINDS`: `blur2`, `blur4` (Gaussian sigma 2 and 4 px), `down18` (18 x 18 px), `noise25` (sigma 25), `eyes` (a
black band over both eyes, rows 40-67, columns 20-91 of the ArcFace template); `CAPTURE_KINDS` (`CHECK`: realistic
kinds at fixed strengths): `bright` (x2.5, clipped), `dark` (gamma 2.5, gain 0.4), `motion` (11 px), `jpeg`
(quality 8), `lowjpeg` (24 px at JPEG quality 20).
`agreement(clean, degraded)` is, per kind, the fraction of faces whose quality drops. `evaluation.calibrate.search`
takes a floor on its minimum over the kinds as a constraint of the weight fit (`fiqa-trt calibrate`,
benchmarks/quality_select.py and quality_iso.py use the same check).
"""

from __future__ import annotations

import hashlib

import numpy as np

BASE_KINDS = ("blur2", "blur4", "down18", "noise25", "eyes")
CAPTURE_KINDS = ("bright", "dark", "motion", "jpeg", "lowjpeg")  # realistic kinds at fixed strengths (`CHECK`)
KINDS = BASE_KINDS + CAPTURE_KINDS  # the degradation check
FLOOR = 0.9  # the least agreement the shipped recipes must reach on every kind (nine faces in ten)
SAMPLE = 400  # dev faces the check degrades
REALISTIC = ("blur", "motion", "noise", "bright", "dark", "jpeg", "down", "downjpeg")
# the check kinds at fixed strengths of the realistic ones: kind -> (realistic kind, its parameters)
CHECK = {"bright": ("bright", {"gain": 2.5}), "dark": ("dark", {"gamma": 2.5, "gain": 0.4}),
         "motion": ("motion", {"length": 11.0}), "jpeg": ("jpeg", {"quality": 8}),
         "lowjpeg": ("downjpeg", {"side": 24.0, "quality": 20})}


def _rng(purpose: str, key: str, seed: int) -> np.random.Generator:
    digest = hashlib.blake2b(f"degrade-{purpose}\x1f{seed}\x1f{key}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def _noise_rng(key: str, seed: int) -> np.random.Generator:
    return _rng("noise", key, seed)


def parameters(kind: str, strength: float) -> dict:
    """The settings of a realistic kind at `strength` in [0, 1] (sizes and lengths for 112 x 112)."""
    s = float(np.clip(strength, 0.0, 1.0))
    table = {
        "blur": {"sigma": 0.7 + 3.3 * s},
        "motion": {"length": 3.0 + 14.0 * s},
        "noise": {"sigma": 4.0 + 26.0 * s},
        "bright": {"gain": 1.4 + 1.6 * s},
        "dark": {"gamma": 1.4 + 1.6 * s, "gain": 0.9 - 0.6 * s},
        "jpeg": {"quality": int(round(40 - 35 * s))},
        "down": {"side": 56.0 - 42.0 * s},
        "downjpeg": {"side": 56.0 - 40.0 * s, "quality": int(round(60 - 45 * s))},
    }
    if kind not in table:
        raise ValueError(f"unknown realistic degradation '{kind}'; use one of: {', '.join(REALISTIC)}")
    return table[kind]


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _down_up(image: np.ndarray, side: int, quality: int | None = None) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    small = cv2.resize(image, (side, max(2, int(round(side * h / w)))), interpolation=cv2.INTER_AREA)
    if quality is not None:
        small = _jpeg(small, quality)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def apply(image: np.ndarray, kind: str, params: dict, key: str = "", seed: int = 0) -> np.ndarray:
    """`image` (H, W, 3) uint8 RGB degraded by the realistic `kind` with `params` (as `parameters` gives them);
    random parts (noise, the motion's angle) keyed by (key, seed)."""
    import cv2

    h, w = image.shape[:2]
    scale = min(h, w) / 112.0
    if kind == "blur":
        return cv2.GaussianBlur(image, (0, 0), params["sigma"] * scale)
    if kind == "motion":
        length = max(2, int(round(params["length"] * scale)))
        angle = _rng("motion", key, seed).uniform(0.0, 180.0)
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0
        rot = cv2.getRotationMatrix2D(((length - 1) / 2.0, (length - 1) / 2.0), angle, 1.0)
        kernel = cv2.warpAffine(kernel, rot, (length, length), flags=cv2.INTER_LINEAR)
        return cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)
    if kind == "noise":
        noise = _noise_rng(key, seed).normal(0.0, params["sigma"], image.shape)
        return np.clip(image.astype(np.float64) + noise, 0, 255).astype(np.uint8)
    if kind == "bright":
        return np.clip(image.astype(np.float64) * params["gain"], 0, 255).round().astype(np.uint8)
    if kind == "dark":
        x = image.astype(np.float64) / 255.0
        return np.clip(255.0 * params["gain"] * x ** params["gamma"], 0, 255).round().astype(np.uint8)
    if kind == "jpeg":
        return _jpeg(image, params["quality"])
    if kind in ("down", "downjpeg"):
        side = max(2, int(round(params["side"] * scale)))
        return _down_up(image, side, params.get("quality") if kind == "downjpeg" else None)
    raise ValueError(f"unknown realistic degradation '{kind}'; use one of: {', '.join(REALISTIC)}")


def degrade(crop: np.ndarray, kind: str, key: str = "", seed: int = 0) -> np.ndarray:
    """`crop` (H, W, 3) uint8 on the model's template, degraded by the check kind `kind` (see the module docstring)."""
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
    if kind in CHECK:
        realistic, params = CHECK[kind]
        return apply(crop, realistic, params, key, seed)
    raise ValueError(f"unknown degradation '{kind}'; use one of: {', '.join(KINDS)}")


def check_layer(clean: np.ndarray, degraded: dict[str, np.ndarray], names: list[str]) -> tuple[str, dict[str, float]]:
    """The layer whose activation norm drops most reliably under every kind of the check: of the layers `names`
    (columns of the L2 norms (N, L) of the faces, `clean`, and of their copies of each kind, `degraded`), the one
    whose agreement (the share of faces whose copy lowers its norm) is highest for the kind it agrees least on
    (ties: the highest mean agreement), and that agreement per kind. No label is read. What the observer signal
    `obs:0` of a fitted recipe reads (`evaluation.calibrate.with_layers`)."""
    clean = np.asarray(clean, np.float64)
    if clean.ndim != 2 or clean.shape[1] != len(names) or not degraded:
        raise ValueError("check_layer: clean norms (N, L) of the layers `names` and at least one degraded kind")
    table = np.stack([(np.asarray(v, np.float64) < clean).mean(axis=0) for v in degraded.values()])
    best = int(np.lexsort((-table.mean(axis=0), -table.min(axis=0)))[0])
    return names[best], {k: float(a) for k, a in zip(degraded, table[:, best])}


def agreement(clean: np.ndarray, degraded: dict[str, np.ndarray]) -> dict[str, float]:
    """Per degradation kind: the fraction of faces whose quality is lower for the degraded copy than for the face
    (NaN qualities count as not lower)."""
    clean = np.asarray(clean, np.float64)
    return {kind: float(np.mean(np.asarray(q, np.float64) < clean)) for kind, q in degraded.items()}
