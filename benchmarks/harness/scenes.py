"""Frames made of real faces for the gate's and the detector's tests and benchmarks: shared LFW crops pasted into
larger frames at known positions and sizes, degraded copies, backgrounds without faces, and the test video.

The LFW crops (../shared/data/lfw112) were aligned by MTCNN's 5 points to the 96x112 template in a 112-wide canvas
(../shared/data/README.md), so their facial points lie near `LFW_POINTS`: the ArcFace 112x112 template moved 8 px
left. A crop pasted by `place_face` carries those points through the same transform: the known positions the
detectors' landmarks are compared with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# ArcFace's 5 points in a 112x112 crop (insightface), 8 px left: where the shared LFW crops have their faces' points
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]])
LFW_POINTS = ARCFACE_112 - np.array([8.0, 0.0])
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def pixelate(crop: np.ndarray, factor: float) -> np.ndarray:
    """Downscale (area) to `factor`, upscale back with nearest neighbour: a blocky, low-resolution face."""
    import cv2

    h, w = crop.shape[:2]
    small = cv2.resize(crop, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def paste(frame: np.ndarray, crop: np.ndarray, centre, scale: float = 0.9) -> np.ndarray:
    """The crop, with 24 replicated border pixels, scaled by `scale` and centred at `centre` in `frame` (in place)."""
    import cv2

    big = cv2.copyMakeBorder(crop, 24, 24, 24, 24, cv2.BORDER_REPLICATE)
    h, w = big.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0, scale)
    m[:, 2] += np.array(centre, float) - [w / 2, h / 2]
    return cv2.warpAffine(big, m, (frame.shape[1], frame.shape[0]), dst=frame, borderMode=cv2.BORDER_TRANSPARENT)


def place_face(frame: np.ndarray, crop: np.ndarray, centre, side: float, angle: float = 0.0) -> np.ndarray:
    """Paste a 112x112 LFW crop into `frame` (in place) as a square of `side` pixels centred at `centre`, rotated
    by `angle` degrees (counter-clockwise), its edge blended into the frame over a few pixels so that no hard
    border frames the face. Returns the known positions of its 5 facial points in the frame ((5, 2), pixel
    centres)."""
    import cv2

    points = LFW_POINTS
    if side < crop.shape[1]:  # shrink by area first (warpAffine's bilinear would alias), the points with it
        n = max(4, int(round(side)))
        points = (points + 0.5) * (n / crop.shape[1]) - 0.5
        crop = cv2.resize(crop, (n, n), interpolation=cv2.INTER_AREA)
    h, w = crop.shape[:2]
    s = side / w
    m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, s)  # about the crop's centre, in pixel centres
    m[:, 2] += np.array(centre, float) - [w / 2 - 0.5, h / 2 - 0.5]
    # a soft mask: 1 inside, falling to 0 over the outer 6% of the crop
    ramp = np.minimum(np.arange(w) + 0.5, w - 0.5 - np.arange(w)) / (0.06 * w)
    mask = np.clip(np.minimum(ramp[None, :], ramp[:, None]), 0, 1).astype(np.float32)
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]]) @ m[:, :2].T + m[:, 2]
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 2, [frame.shape[1], frame.shape[0]])
    if x1 > x0 and y1 > y0:  # warp and blend only the region the face covers
        local = m.copy()
        local[:, 2] -= [x0, y0]
        roi = frame[y0:y1, x0:x1]
        warped = cv2.warpAffine(crop, local, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(mask, local, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)[..., None]
        roi[:] = np.rint(roi * (1 - alpha) + warped * alpha).astype(np.uint8)
    return points @ m[:, :2].T + m[:, 2]


def texture(size: tuple[int, int], seed: int) -> np.ndarray:
    """A (h, w, 3) uint8 background without faces: smoothed coloured noise at several scales plus a few lines and
    blocks, seeded."""
    import cv2

    h, w = size
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w, 3), np.float32)
    for cell in (4, 16, 64):
        noise = rng.uniform(0, 255, (max(1, h // cell), max(1, w // cell), 3)).astype(np.float32)
        image += cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC) / 3
    for _ in range(12):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        p, q = rng.integers(0, [w, h], 2), rng.integers(0, [w, h], 2)
        if rng.random() < 0.5:
            cv2.line(image, tuple(int(v) for v in p), tuple(int(v) for v in q), colour, int(rng.integers(2, 12)))
        else:
            cv2.rectangle(image, tuple(int(v) for v in p), tuple(int(v) for v in q), colour, -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def photo_background(name: str, size: tuple[int, int]) -> np.ndarray:
    """examples/photos/NAME resized (area or cubic) to `size` (h, w), BGR."""
    import cv2

    image = cv2.imread(str(EXAMPLES / "photos" / name))
    if image is None:
        raise FileNotFoundError(EXAMPLES / "photos" / name)
    h, w = size
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if w < image.shape[1] else cv2.INTER_CUBIC)


# ---- the gate's test video ----

# LFW faces (sorted shared LFW files, by index) chosen once so that the clean and degraded ones are far apart for the
# shared MobileFaceNet; not a claim that pixelation always lowers the quality this much (over 26 LFW faces the
# best-shot qualities of clean and 0.2-pixelated faces overlap).
CLEAN, DEGRADED = (1000, 7000), (0, 6000)
PIXELATE = 0.2
THRESHOLD = 0.955  # raw quality of the shared MobileFaceNet's stability score: the clean faces above, the others below


def make_gate_video(path: Path, lfw_files: list[Path], segment: int = 30, gap: int = 6) -> list[dict]:
    """A 320x240 MJPG video, 25 fps: two segments of `segment` frames, each with a clean and a pixelated face side by
    side drifting slowly (4 tracks), separated by `gap` empty frames. Returns the expected tracks."""
    import cv2

    clean = [cv2.imread(str(lfw_files[i])) for i in CLEAN]
    bad = [pixelate(cv2.imread(str(lfw_files[i])), PIXELATE) for i in DEGRADED]
    plan = [((clean[0], True), (bad[0], False)), ((bad[1], False), (clean[1], True))]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (320, 240))
    expected, start = [], 0
    for seg in plan:
        for t in range(segment):
            frame = np.full((240, 320, 3), 90, np.uint8)
            for side, (crop, _) in enumerate(seg):
                paste(frame, crop, ((80 + 0.5 * t) if side == 0 else (240 - 0.5 * t), 120 + 0.3 * t))
            writer.write(frame)
        expected += [{"side": side, "first": start, "last": start + segment - 1, "clean": ok}
                     for side, (_, ok) in enumerate(seg)]
        for _ in range(gap):
            writer.write(np.full((240, 320, 3), 90, np.uint8))
        start += segment + gap
    writer.release()
    return expected


def face_clip(lfw_files: list[Path], size=(320, 240), count: int = 50, faces=(1000, 7000)) -> list[np.ndarray]:
    """`count` frames of `size` (w, h) with two clean LFW faces side by side, swaying a few pixels and back (so the
    clip loops without a jump)."""
    import cv2

    w, h = size
    crops = [cv2.imread(str(lfw_files[i])) for i in faces]
    scale = 0.9 * h / 240
    frames = []
    for t in range(count):
        sway = 4 * np.sin(2 * np.pi * t / count) * h / 240
        frame = np.full((h, w, 3), 90, np.uint8)
        for side, crop in enumerate(crops):
            paste(frame, crop, (w * (0.25 if side == 0 else 0.75) + sway, h / 2), scale)
        frames.append(frame)
    return frames


def camera_clip(lfw_files: list[Path], size=(1280, 720), count: int = 50, faces=(1000, 7000),
                face_height: float = 0.15) -> list[np.ndarray]:
    """`count` frames of `size` (w, h) as a fixed camera sees a scene: a still background (the coffee photo) and
    clean LFW faces of `face_height` x the frame height side by side, swaying a few pixels and back (so that the
    clip loops without a jump)."""
    w, h = size
    background = photo_background("coffee.jpg", (h, w))
    crops = [_read(lfw_files[i]) for i in faces]
    side = face_height * h
    frames = []
    for t in range(count):
        sway = 0.01 * w * np.sin(2 * np.pi * t / count)
        frame = background.copy()
        for k, crop in enumerate(crops):
            place_face(frame, crop, (w * (k + 1) / (len(crops) + 1) + sway, 0.45 * h), side)
        frames.append(frame)
    return frames


def _read(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path))
    if image is None:
        raise FileNotFoundError(path)
    return image
