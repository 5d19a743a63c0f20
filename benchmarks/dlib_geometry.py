"""Measure the fixed similarity from ArcFace 112x112 crops to dlib's 150x150 face chips (ARCFACE112_TO_DLIB150).

    python benchmarks/dlib_geometry.py [--step 13] [--out benchmarks/results/dlib_geometry.json]

For every `step`-th shared LFW crop: pad it (border replicated, 40 px), run dlib's HOG face detector (one
upsampling) and 5-point shape predictor (both from the PyPI package face_recognition_models / dlib), build dlib's
own image -> chip mapping for that face exactly as `extract_image_chips` uses it (`get_face_chip_details(shape,
150, 0.25)`, then `get_mapping_to_chip`: the chip rectangle's corners, rotated about its centre by its angle, go to
(0, 0), (149, 0), (149, 149)), check it against `dlib.get_face_chip` on a few faces, map the crops' template
points through it, and fit ONE least-squares similarity from the template to all of those chip positions.

The shared crops are not on ArcFace's 112x112 template: dlib's 68-point predictor puts their eye centres, nose tip
and mouth corners (-8.6, -0.4) px off it on average, i.e. on the 96x112 MTCNN/SphereFace template in a 112-wide
frame (ArcFace's minus 8 px in x). So the fit uses that template ("B"), and the matrix for ArcFace crops is the fit
composed with the 8 px shift. "A" cross-checks without that assumption: ArcFace's template fitted directly to the
68-point estimates of its five points mapped into the chip. Prints and writes both with their residuals (needs
dlib: a test dependency, not a fiqa-trt one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"
ARCFACE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                    [70.7299, 92.2041]])
PAD = 40


def models_dir() -> Path:
    from fiqa_trt.files import package_model_file

    return package_model_file("shape_predictor_5_face_landmarks.dat").parent


def chip_mapping(details) -> np.ndarray:
    """dlib's get_mapping_to_chip: image -> chip affine (2x3) from a chip_details."""
    r, a = details.rect, details.angle
    c = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    corners = [np.array([r.left(), r.top()]), np.array([r.right(), r.top()]), np.array([r.right(), r.bottom()])]
    src = np.array([rot @ (p - c) + c for p in corners], np.float64)
    dst = np.array([[0, 0], [details.cols - 1, 0], [details.cols - 1, details.rows - 1]], np.float64)
    return cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32)).astype(np.float64)


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares [[a, -b, tx], [b, a, ty]] with dst ~ M @ (src, 1)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def main() -> None:
    import dlib

    parser = argparse.ArgumentParser()
    parser.add_argument("--step", type=int, default=13)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dlib_geometry.json"))
    args = parser.parse_args()
    files = sorted((SHARED / "data" / "lfw112").glob("*/*.jpg"))[:: args.step]
    detector = dlib.get_frontal_face_detector()
    predictor5 = dlib.shape_predictor(str(models_dir() / "shape_predictor_5_face_landmarks.dat"))
    predictor68 = dlib.shape_predictor(str(models_dir() / "shape_predictor_68_face_landmarks.dat"))
    to_crop = np.array([[1, 0, -PAD], [0, 1, -PAD], [0, 0, 1]], np.float64)  # padded image -> crop pixels
    start = time.time()
    per_face, arcface_style, chip_check = [], [], []
    for path in files:
        crop = np.asarray(Image.open(path).convert("RGB"))
        padded = cv2.copyMakeBorder(crop, PAD, PAD, PAD, PAD, cv2.BORDER_REPLICATE)
        dets = detector(padded, 1)
        if len(dets) == 0:
            continue
        det = min(dets, key=lambda r: np.hypot(r.center().x - PAD - 56, r.center().y - PAD - 56))
        shape = predictor5(padded, det)
        padded_to_chip = chip_mapping(dlib.get_face_chip_details(shape, 150, 0.25))
        if len(chip_check) < 20:  # our reading of dlib's mapping reproduces dlib's own chips
            ours = cv2.warpAffine(padded, padded_to_chip, (150, 150), flags=cv2.INTER_LINEAR)
            theirs = dlib.get_face_chip(padded, shape, 150, 0.25)
            chip_check.append(float(np.abs(ours[2:-2, 2:-2].astype(int) - theirs[2:-2, 2:-2].astype(int)).mean()))
        per_face.append(padded_to_chip @ np.linalg.inv(to_crop))
        p = np.array([(q.x - PAD, q.y - PAD) for q in predictor68(padded, det).parts()], np.float64)
        # ArcFace's 5 points (MTCNN/RetinaFace: eye centres, nose tip, mouth corners) from the 68 iBUG points
        arcface_style.append([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])
    per_face, arcface_style = np.array(per_face), np.array(arcface_style)
    h = lambda pts: np.concatenate([pts, np.ones((*pts.shape[:-1], 1))], -1)  # noqa: E731

    # (A) where ArcFace's landmarks, as measured in each crop, land in dlib's chip; fitted from the ArcFace template
    measured_in_chip = np.einsum("nij,nkj->nki", per_face, h(arcface_style))
    matrix_a = fit_similarity(np.tile(ARCFACE, (len(per_face), 1)), measured_in_chip.reshape(-1, 2))
    # (B) the crops' own template: the 96x112 MTCNN/SphereFace template in a 112-wide frame (ArcFace's 112x112
    # template minus 8 px in x; the measured offset below says so within the landmark definitions), mapped through
    # dlib's per-face mapping, fitted, then moved back onto ArcFace's template
    offset = (arcface_style - ARCFACE[None]).mean((0, 1))
    data_template = ARCFACE - [8.0, 0.0]
    template_in_chip = np.einsum("nij,kj->nki", per_face, h(data_template))
    matrix_data = fit_similarity(np.tile(data_template, (len(per_face), 1)), template_in_chip.reshape(-1, 2))
    shift = np.array([[1, 0, -8.0], [0, 1, 0], [0, 0, 1]])  # ArcFace crop pixel -> shared crop pixel
    matrix_b = matrix_data @ shift
    grid = np.stack(np.meshgrid(np.linspace(20, 92, 7), np.linspace(30, 100, 7)), -1).reshape(-1, 2)
    gap = np.linalg.norm(h(grid) @ matrix_a.T - h(grid) @ matrix_b.T, axis=1)

    def residual(mapped, matrix, template):
        r = np.linalg.norm(mapped - (h(template) @ matrix.T)[None], axis=2)
        return {"mean": float(r.mean()), "median": float(np.median(r)), "p95": float(np.percentile(r, 95))}

    scales = np.hypot(per_face[:, 0, 0], per_face[:, 1, 0])
    describe = lambda m: {"matrix": m.round(7).tolist(), "scale": float(np.hypot(m[0, 0], m[1, 0])),  # noqa: E731
                          "rotation_deg": float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))}
    result = {
        "images_tried": len(files), "faces_used": len(per_face),
        "arcface_template": ARCFACE.tolist(),
        "measured_arcface_points_in_crops_mean": arcface_style.mean(0).round(3).tolist(),
        "crops_offset_from_arcface_template_px": offset.round(3).tolist(),
        "crops_template_assumed": "ArcFace 112x112 template - (8, 0) (the 96x112 template in a 112-wide frame)",
        "A_arcface112_to_dlib150_from_measured_landmarks": {
            **describe(matrix_a), "residual_px_in_chip": residual(measured_in_chip, matrix_a, ARCFACE)},
        "B_arcface112_to_dlib150_from_crop_template": {
            **describe(matrix_b), "residual_px_in_chip": residual(template_in_chip, matrix_data, data_template)},
        "shared_crops_to_dlib150": describe(matrix_data),
        "A_vs_B_max_gap_px_in_chip_over_face_grid": float(gap.max()),
        "per_face_scale_mean_std": [float(scales.mean()), float(scales.std())],
        "mapping_check_mean_abs_diff_vs_dlib_get_face_chip": float(np.mean(chip_check)),
        "seconds": round(time.time() - start, 1),
    }
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
