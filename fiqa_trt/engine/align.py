"""Face detection and 5-point alignment to the ArcFace 112x112 template, for photos that are not aligned yet.

- Detector: dlib's HOG frontal-face detector (built into dlib; fast on a CPU) or dlib's MMOD CNN detector
  (`mmod_human_face_detector.dat` from the PyPI package face_recognition_models; slower, finds more faces).
- Landmarks: dlib's 5-point shape predictor (`shape_predictor_5_face_landmarks.dat`, same package): the outer and
  inner corners of both eyes and the base of the nose.
- Alignment: the least-squares similarity transform (Umeyama, `engine.geometry`) from the 5 detected points to
  `geometry.DLIB5_IN_ARCFACE112`, where those 5 points lie in an ArcFace-aligned 112x112 crop; the scorer's pipeline
  warps the photo with it (bilinear, border replicated) from `locate`'s matrices; `align` warps here with OpenCV.
- Large photos: the detector runs on a copy whose longest side is at most `detect_size` (1600 px; dlib's HOG
  with one upsampling finds faces down to about 40 px of that copy), the landmarks are found and the face is
  warped on the full-resolution photo, so an 8000x8000 photo costs about what a 1600x1600 one does.
- Weak detections: a detection scoring below `min_score` is not a face (HOG default 0.2: a mission patch in
  skimage's astronaut photo scores 0.12; 1% of the shared LFW faces, padded by half a crop, score below 0.22 and
  2 of 300 below 0.2). The CNN detector's confidence is on another scale: its default keeps dlib's own threshold.

`geometry.DLIB5_IN_ARCFACE112` was measured (benchmarks/align_template.py) by running the same detector and
predictor on 200 shared LFW 112x112 crops and averaging the points, then shifting them by +8 px in x: those crops
follow the 96x112 template of the MTCNN/SphereFace convention in a 112-wide canvas (the measured eye midpoint is at
x = 47.5, the 96x112 template's at 47.9), and the ArcFace 112x112 template is that template moved 8 px right (eye
midpoint 55.9). Uses dlib (the `align` extra) at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from fiqa_trt.engine.geometry import DLIB5_IN_ARCFACE112, similarity_transform
from fiqa_trt.files import package_model_file
from fiqa_trt.errors import FiqaError, MissingDependency

CROP_SIZE = 112
DETECT_SIZE = 1600
MIN_SCORE = {"hog": 0.2, "cnn": 0.0}


@dataclass
class Face:
    crop: np.ndarray | None  # (112, 112, 3) uint8, same channel order as the photo (None: not warped on the host)
    box: tuple[int, int, int, int]  # left, top, right, bottom in the photo
    score: float
    landmarks: np.ndarray  # (5, 2) in the photo
    matrix: np.ndarray | None = None  # 2x3 forward: photo pixels -> pixels of the 112x112 ArcFace crop


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

    def locate(self, rgb: np.ndarray) -> list[Face]:
        """The faces of an RGB photo, largest first, each with the matrix that aligns it and no crop: the scorer's
        pipeline warps each face from the photo's pixels with its matrix."""
        rgb = np.ascontiguousarray(rgb)
        found = [d for d in self._detect_scaled(rgb) if d[1] >= self.min_score]
        found = sorted(found, key=lambda d: -d[0].width() * d[0].height())
        faces = []
        for rect, score in found if self.all_faces else found[:1]:
            shape = self._predictor(rgb, rect)
            points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], np.float64)
            box = (rect.left(), rect.top(), rect.right(), rect.bottom())
            faces.append(Face(None, box, float(score), points, similarity_transform(points, DLIB5_IN_ARCFACE112)))
        return faces

    def align(self, rgb: np.ndarray) -> list[Face]:
        """`locate`, each face also warped here (OpenCV, bilinear, border pixels repeated) into its crop."""
        import cv2

        rgb = np.ascontiguousarray(rgb)
        return [replace(face, crop=cv2.warpAffine(rgb, face.matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                                                  borderMode=cv2.BORDER_REPLICATE)) for face in self.locate(rgb)]


_CROP_CHECKER = None


def looks_like_face_crop(image: np.ndarray, size: tuple[int, int]) -> bool:
    """Whether an image (encoded bytes, or RGB pixels (H, W, 3)), resized to the model's input `size` as the
    pipeline does, has a face where the ArcFace template puts one (dlib HOG on the resized image padded by half its
    size, lenient threshold -0.3):
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
    h, w = size
    if np.ndim(image) == 3:
        rgb = cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_AREA)
    else:
        bgr = cv2.imdecode(image, cv2.IMREAD_COLOR)
        if bgr is None:
            return True  # the pipeline reports it
        rgb = cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    padded = cv2.copyMakeBorder(rgb, h // 2, h // 2, w // 2, w // 2, cv2.BORDER_REPLICATE)
    rects, _, _ = _CROP_CHECKER.run(padded, 1, -0.3)
    for r in rects:
        cx, cy = (r.left() + r.right()) / 2 - w // 2, (r.top() + r.bottom()) / 2 - h // 2
        if 0.25 * w <= cx <= 0.7 * w and 0.4 * h <= cy <= 0.8 * h and 0.5 * w <= r.width() <= 1.1 * w:
            return True
    return False
