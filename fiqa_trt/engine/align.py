"""Face detection and 5-point alignment to the ArcFace 112x112 template, for photos that are not aligned yet.

- Detector: dlib's HOG frontal-face detector (built into dlib; fast on a CPU) or dlib's MMOD CNN detector
  (`mmod_human_face_detector.dat` from the PyPI package face_recognition_models; slower, finds more faces).
- Landmarks: dlib's 5-point shape predictor (`shape_predictor_5_face_landmarks.dat`, same package): the outer and
  inner corners of both eyes and the base of the nose.
- Alignment: the least-squares similarity transform (Umeyama) from the 5 detected points to DLIB5_IN_ARCFACE112,
  where those 5 points lie in an ArcFace-aligned 112x112 crop; the photo is warped with it (bilinear, border
  replicated).
- Large photos: the detector runs on a copy whose longest side is at most `detect_size` (1600 px; dlib's HOG
  with one upsampling finds faces down to about 40 px of that copy), the landmarks are found and the face is
  warped on the full-resolution photo, so an 8000x8000 photo costs about what a 1600x1600 one does.
- Weak detections: a detection scoring below `min_score` is not a face (HOG default 0.2: a mission patch in
  skimage's astronaut photo scores 0.12; 1% of the shared LFW faces, padded by half a crop, score below 0.22 and
  2 of 300 below 0.2). The CNN detector's confidence is on another scale: its default keeps dlib's own threshold.

DLIB5_IN_ARCFACE112 was measured (benchmarks/align_template.py) by running the same detector and predictor on 200
shared LFW 112x112 crops and averaging the points, then shifting them by +8 px in x: those crops follow the
96x112 template of the MTCNN/SphereFace convention in a 112-wide canvas (the measured eye midpoint is at x = 47.5,
the 96x112 template's at 47.9), and the ArcFace 112x112 template is that template moved 8 px right (eye midpoint
55.9). Uses dlib (the `align` extra) at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fiqa_trt.files import package_model_file
from fiqa_trt.errors import FiqaError, MissingDependency

# (x, y) of dlib's 5 landmarks in an ArcFace-aligned 112x112 crop, in the predictor's order.
DLIB5_IN_ARCFACE112 = np.array([[79.83, 52.64], [66.16, 52.98], [31.20, 53.09], [44.90, 53.18], [55.79, 79.45]])
CROP_SIZE = 112
DETECT_SIZE = 1600
MIN_SCORE = {"hog": 0.2, "cnn": 0.0}



def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, translation) mapping src points onto dst (Umeyama)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sigma) @ sign) / s.var(0).sum()
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


@dataclass
class Face:
    crop: np.ndarray  # (112, 112, 3) uint8, same channel order as the photo
    box: tuple[int, int, int, int]  # left, top, right, bottom in the photo
    score: float
    landmarks: np.ndarray  # (5, 2) in the photo


class FaceAligner:
    """Finds faces in an RGB photo and returns them aligned to the ArcFace 112x112 template, largest first."""

    def __init__(self, detector: str = "hog", upsample: int = 1, all_faces: bool = False,
                 min_score: float | None = None, detect_size: int = DETECT_SIZE):
        try:
            import dlib
        except ImportError:
            raise MissingDependency("dlib", "align") from None
        if detector not in ("hog", "cnn"):
            raise FiqaError(f"unknown face detector '{detector}'; use hog or cnn")
        if detect_size < 64:
            raise FiqaError("the detection size must be at least 64 px")
        self.detector_name, self.upsample, self.all_faces = detector, upsample, all_faces
        self.min_score = MIN_SCORE[detector] if min_score is None else float(min_score)
        self.detect_size = detect_size
        if detector == "hog":
            self._detector = dlib.get_frontal_face_detector()
        else:
            self._detector = dlib.cnn_face_detection_model_v1(str(package_model_file("mmod_human_face_detector.dat")))
        self._predictor = dlib.shape_predictor(str(package_model_file("shape_predictor_5_face_landmarks.dat")))

    def _detect(self, rgb: np.ndarray) -> list[tuple[object, float]]:
        if self.detector_name == "hog":
            rects, scores, _ = self._detector.run(rgb, self.upsample, 0.0)
            return list(zip(rects, scores))
        return [(d.rect, d.confidence) for d in self._detector(rgb, self.upsample)]

    def _detect_scaled(self, rgb: np.ndarray) -> list[tuple[object, float]]:
        """Detections in full-photo coordinates, found on a copy no larger than `detect_size` on its longest side."""
        import cv2
        import dlib

        h, w = rgb.shape[:2]
        factor = self.detect_size / max(h, w)
        if factor >= 1:
            return self._detect(rgb)
        small = cv2.resize(rgb, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
        up = lambda v: int(round(v / factor))  # noqa: E731
        return [(dlib.rectangle(up(r.left()), up(r.top()), up(r.right()), up(r.bottom())), score)
                for r, score in self._detect(small)]

    def align(self, rgb: np.ndarray) -> list[Face]:
        import cv2

        rgb = np.ascontiguousarray(rgb)
        found = [d for d in self._detect_scaled(rgb) if d[1] >= self.min_score]
        found = sorted(found, key=lambda d: -d[0].width() * d[0].height())
        faces = []
        for rect, score in found if self.all_faces else found[:1]:
            shape = self._predictor(rgb, rect)
            points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], np.float64)
            matrix = similarity_transform(points, DLIB5_IN_ARCFACE112)
            crop = cv2.warpAffine(rgb, matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
            box = (rect.left(), rect.top(), rect.right(), rect.bottom())
            faces.append(Face(crop, box, float(score), points))
        return faces


_CROP_CHECKER = None


def looks_like_face_crop(encoded: np.ndarray, size: tuple[int, int]) -> bool:
    """Whether an encoded image, resized to the model's input `size` as the pipeline does, has a face where the
    ArcFace template puts one (dlib HOG on the resized image padded by half its size, lenient threshold -0.3):
    the face's box centre within the middle of the crop, its width 50-110% of the crop. Full photos and other
    non-crops fail; so do some heavily degraded crops (a blur of sigma 4 on 112 px), which is why this only warns.
    True when dlib is not installed (nothing to check with)."""
    global _CROP_CHECKER
    import cv2

    try:
        import dlib
    except ImportError:
        return True
    if _CROP_CHECKER is None:
        _CROP_CHECKER = dlib.get_frontal_face_detector()
    image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    if image is None:
        return True  # the pipeline reports it
    h, w = size
    rgb = cv2.cvtColor(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    padded = cv2.copyMakeBorder(rgb, h // 2, h // 2, w // 2, w // 2, cv2.BORDER_REPLICATE)
    rects, _, _ = _CROP_CHECKER.run(padded, 1, -0.3)
    for r in rects:
        cx, cy = (r.left() + r.right()) / 2 - w // 2, (r.top() + r.bottom()) / 2 - h // 2
        if 0.25 * w <= cx <= 0.7 * w and 0.4 * h <= cy <= 0.8 * h and 0.5 * w <= r.width() <= 1.1 * w:
            return True
    return False
