"""Rebuild examples/ from public-domain / CC0 images that ship inside scikit-image (see examples/README.md).

    python examples/make_examples.py      # needs scikit-image and dlib (the `test` and `align` extras)

faces/: the astronaut's face aligned by fiqa-trt's own aligner (dlib HOG + 5 landmarks -> ArcFace 112x112
template) and degraded copies of that crop; photos/: the full astronaut photo and a photo with no face (a coffee
cup), for `--align` and for the full-photo warning. Deterministic: the same packages give the same files.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent


def _save(path: Path, rgb: np.ndarray, jpeg: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if jpeg else [cv2.IMWRITE_PNG_COMPRESSION, 9]
    if not cv2.imwrite(str(path), bgr, params):
        raise SystemExit(f"cannot write {path}")


def degraded(crop: np.ndarray) -> dict[str, np.ndarray]:
    """The honest degradations of one aligned crop, by file name."""
    h, w = crop.shape[:2]
    out = {}
    out["astronaut_blur_sigma2.png"] = cv2.GaussianBlur(crop, (0, 0), 2.0)
    out["astronaut_blur_sigma4.png"] = cv2.GaussianBlur(crop, (0, 0), 4.0)
    small = cv2.resize(crop, (w // 6, h // 6), interpolation=cv2.INTER_AREA)  # an 18x18 face, scaled back up
    out["astronaut_downscaled_1of6.png"] = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    noise = np.random.default_rng(0).normal(0.0, 25.0, crop.shape)
    out["astronaut_noise_sigma25.png"] = np.clip(crop + noise, 0, 255).astype(np.uint8)
    occluded = crop.copy()
    occluded[40:68, 20:92] = 0  # a black band over both eyes
    out["astronaut_occluded_eyes.png"] = occluded
    return out


def main() -> None:
    from skimage import data

    from fiqa_trt.engine.align import FaceAligner

    astronaut = data.astronaut()  # (512, 512, 3) RGB, public domain (NASA)
    faces = FaceAligner().align(astronaut)
    if not faces:
        raise SystemExit("no face found in skimage.data.astronaut()")
    crop = faces[0].crop
    _save(HERE / "faces" / "astronaut.png", crop)
    for name, image in degraded(crop).items():
        _save(HERE / "faces" / name, image)
    _save(HERE / "photos" / "astronaut.jpg", astronaut, jpeg=True)
    _save(HERE / "photos" / "coffee.jpg", data.coffee(), jpeg=True)  # no face: CC0 (Rachel Michetti)
    print("written:", ", ".join(str(p.relative_to(HERE)) for p in sorted(HERE.rglob("*.*")) if p.suffix != ".py"))


if __name__ == "__main__":
    main()
