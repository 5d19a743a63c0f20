"""Face templates and 2x3 transforms: where the facial points of an aligned crop lie, the similarity transform that
puts measured points there, and the conversions between OpenCV's and DALI's matrix conventions.

Templates are (5, 2) arrays of (x, y) in pixels of a 112x112 crop:
- `ARCFACE_112`: insightface's ArcFace template (left eye, right eye, nose tip, left and right mouth corners), the one
  most FR models (and fiqa-trt's aligner) expect; `template(size)` scales it to a model's (height, width).
- `SPHEREFACE_112`: the 96x112 SphereFace/CosFace (MTCNN) template centred in a 112-wide canvas: ArcFace's 8 px to
  the left (insightface derives ArcFace's template from it that way). The shared LFW crops follow it.
- `DLIB5_IN_ARCFACE112`: where dlib's 5-point shape predictor puts its points (outer and inner eye corners, base of
  the nose) in an ArcFace-aligned crop, measured (benchmarks/align_template.py).

Matrix conventions. A *forward* matrix (OpenCV's `warpAffine` without WARP_INVERSE_MAP, and every matrix this module
returns unless named otherwise) maps source pixels to output pixels, pixel centres at integer coordinates. DALI's
`warp_affine` takes by default the *inverse* map, output to source, with pixel corners at integer coordinates
(centres at +0.5): `to_dali` converts. Both repeat border pixels outside the source when no fill value is given
(OpenCV's BORDER_REPLICATE).

Also for a face detector that gives 5 points in a photo: `similarity_transform(points, template(size))` is the
warp that aligns the face.
"""

from __future__ import annotations

import math

import numpy as np

ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]])
SPHEREFACE_112 = ARCFACE_112 - [8.0, 0.0]
# (x, y) of dlib's 5 landmarks in an ArcFace-aligned 112x112 crop, in the predictor's order: 200 shared LFW crops,
# averaged, moved by +8 px in x (those crops follow SPHEREFACE_112)
DLIB5_IN_ARCFACE112 = np.array([[79.83, 52.64], [66.16, 52.98], [31.20, 53.09], [44.90, 53.18], [55.79, 79.45]])
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def template(size: tuple[int, int], points: np.ndarray = ARCFACE_112) -> np.ndarray:
    """A 112x112 template's points scaled to a crop of (height, width)."""
    h, w = size
    return np.asarray(points, np.float64) * np.array([w / 112.0, h / 112.0])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, translation) mapping src points onto dst (Umeyama)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sigma) @ sign) / s.var(0).sum()
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def scale_of(matrix: np.ndarray) -> float:
    """The scale of a similarity matrix."""
    return float(math.hypot(matrix[0, 0], matrix[1, 0]))


def rotation_deg(matrix: np.ndarray) -> float:
    """The rotation of a similarity matrix, degrees (counter-clockwise in image coordinates, y down)."""
    return float(math.degrees(math.atan2(matrix[1, 0], matrix[0, 0])))


def homogeneous(matrix: np.ndarray) -> np.ndarray:
    """(..., 2, 3) -> (..., 3, 3) with the row (0, 0, 1)."""
    m = np.asarray(matrix, np.float64)
    last = np.broadcast_to(np.array([0.0, 0.0, 1.0]), (*m.shape[:-2], 1, 3))
    return np.concatenate([m, last], axis=-2)


def compose(*matrices: np.ndarray) -> np.ndarray:
    """The 2x3 matrix applying the last matrix first: compose(a, b)(p) = a(b(p)); batched over leading axes."""
    out = homogeneous(matrices[0])
    for m in matrices[1:]:
        out = out @ homogeneous(m)
    return out[..., :2, :]


def invert(matrix: np.ndarray) -> np.ndarray:
    """The inverse of 2x3 affine matrices (batched)."""
    return np.linalg.inv(homogeneous(matrix))[..., :2, :]


def resize_matrix(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """Forward matrix of a resize from (height, width) `src` to `dst`, pixel centres at integers (as OpenCV's and
    DALI's resize place them: the corners of the two frames coincide)."""
    sy, sx = dst[0] / src[0], dst[1] / src[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


def to_dali(forward: np.ndarray) -> np.ndarray:
    """DALI's `warp_affine` matrices (..., 2, 3) float32 (output to source, pixel corners at integers) of forward
    matrices (source to output, pixel centres at integers), batched over leading axes."""
    inv = invert(forward)
    lin, t = inv[..., :2], inv[..., 2]
    shift = t + 0.5 - lin @ np.array([0.5, 0.5])
    return np.concatenate([lin, shift[..., None]], axis=-1).astype(np.float32)


def point_offset(points: np.ndarray, size: tuple[int, int], reference: np.ndarray = ARCFACE_112) -> np.ndarray:
    """(..., 2): the median over the 5 points of their offset from a template scaled to `size` (+x: right of it)."""
    return np.median(np.asarray(points, np.float64) - template(size, reference), axis=-2)
