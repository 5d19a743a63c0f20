"""Face detector quality on real faces: recall, landmark and alignment error per face size, and false detections on
frames without faces, for the MTCNN detector (engine.detect) and dlib's HOG (engine.align), as JSON.

    python benchmarks/detect_quality.py [--frames 40] [--out benchmarks/results/detect_quality.json]

Frames (1280x720, seeded): backgrounds without faces (examples/photos/coffee.jpg and seeded random textures,
alternately), into which shared LFW crops (../shared/data/lfw112, a seeded draw) are pasted at known positions,
sizes and small rotations (uniform in +-10 degrees), not overlapping, their edges blended into the background
(benchmarks/harness/scenes.py: place_face). A face's size is the side of its pasted 112x112 crop in frame pixels:
24, 32, 48, 64, 96, 128, 192, 256 and 400; each frame holds one face of 192-400 px and several smaller ones. The
known positions of each face's 5 points are the points of the LFW crops' template (the ArcFace 112x112 template
moved 8 px left, where MTCNN put them when the crops were made) carried through the paste.

Per detector and face size:
- recall: the share of faces with a detection whose box centre lies in the face's square and whose box side is
  0.3-2 times the face's size (each detection matched to at most one face);
- alignment error: how far the face's aligned crop is from where it should be: the mean distance, in pixels of the
  112x112 template, between the ArcFace template points and the same points taken through (the true frame ->
  template transform)^-1 and then the detector's aligner's transform (its points onto its template: MTCNN's onto
  ArcFace's, dlib's 5 onto DLIB5_IN_ARCFACE112). Comparable across detectors, whose points differ in kind;
- landmark error (MTCNN, whose 5 points are the template's kind): the mean distance of its points from the known
  ones, in inter-ocular distances (both also carry the crops' own alignment noise: the LFW points lie near the
  template, not on it);
- box side / face size: the median ratio (what `--min-face` refers to is MTCNN's box).
Detections on the face frames that match no face, and all detections on `--empty` frames without faces (the same
kinds of background, and skimage's photos without faces), are false detections, reported per frame.

Detectors: MTCNN with the smallest face 20 px (all sizes) and 64 px (the gate's default), thresholds as shipped,
ONNX Runtime; dlib's HOG with upsample 1 (the gate's earlier default: faces from about 40 px), as `--align` runs it
(its weak-detection threshold 0.2). No timing here (see bench_gate_streams.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

SIZES = (24, 32, 48, 64, 96, 128, 192, 256, 400)
BIG, SMALL = (192, 256, 400), (24, 32, 48, 64, 96, 128)
FRAME = (720, 1280)  # h, w


def layout(rng, sizes) -> list[tuple[float, float, float]]:
    """Non-overlapping (cx, cy, side) in the frame, with a margin of a quarter side around each face."""
    h, w = FRAME
    placed: list[tuple[float, float, float]] = []
    for side in sizes:
        for _ in range(200):
            half = side / 2 * 1.2
            cx, cy = rng.uniform(half, w - half), rng.uniform(half, h - half)
            if all(abs(cx - x) > (side + s) / 2 * 1.25 or abs(cy - y) > (side + s) / 2 * 1.25 for x, y, s in placed):
                placed.append((cx, cy, side))
                break
    return placed


def background(i: int):
    from benchmarks.harness.scenes import photo_background, texture

    if i % 2 == 0:
        photo = photo_background("coffee.jpg", (FRAME[0] * 2, FRAME[1] * 2))
        y, x = (i * 97) % FRAME[0], (i * 211) % FRAME[1]  # a different part of a 2x photo each time
        return np.ascontiguousarray(photo[y:y + FRAME[0], x:x + FRAME[1]])
    return texture(FRAME, 1000 + i)


def empty_frames(count: int) -> list[tuple[str, np.ndarray]]:
    """Frames without faces: the same backgrounds, and skimage's photos without faces tiled to the frame size."""
    import cv2

    frames = [(f"background {i}", background(i)) for i in range(count)]
    try:
        import skimage.data as data
    except ImportError:
        return frames
    for name in ("chelsea", "coffee", "rocket", "brick", "grass", "gravel", "hubble_deep_field", "horse",
                 "immunohistochemistry", "retina"):
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - a sample that needs downloading is left out
            continue
        if image.dtype != np.uint8:
            image = (image * 255 if image.max() <= 1 else image).astype(np.uint8)
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        image = np.ascontiguousarray(image[..., :3][..., ::-1])
        frames.append((f"skimage {name}", cv2.resize(image, (FRAME[1], FRAME[0]), interpolation=cv2.INTER_AREA)))
    return frames


def true_transform(points: np.ndarray) -> np.ndarray:
    """Frame -> ArcFace template for a pasted LFW face (its known points, 8 px left of the template)."""
    from fiqa_trt.engine.geometry import ARCFACE_112, similarity_transform

    return similarity_transform(points, ARCFACE_112)


def alignment_error(estimated: np.ndarray, true: np.ndarray) -> float:
    from fiqa_trt.engine.geometry import ARCFACE_112

    inverse = np.linalg.inv(np.vstack([true, [0, 0, 1]]))[:2]
    in_frame = ARCFACE_112 @ inverse[:, :2].T + inverse[:, 2]
    moved = in_frame @ estimated[:, :2].T + estimated[:, 2]
    return float(np.linalg.norm(moved - ARCFACE_112, axis=1).mean())


class Mtcnn:
    def __init__(self, min_face: float):
        from fiqa_trt.engine.detect import Mtcnn as Detector

        self.detector = Detector(min_face=min_face, channels="bgr", backend="onnxruntime", threads=1)
        self.name = f"mtcnn, smallest face {min_face:g} px"

    def find(self, frame) -> list[dict]:
        from fiqa_trt.engine.geometry import ARCFACE_112, similarity_transform

        (found,) = self.detector.detect([frame])
        return [{"box": b, "points": p, "transform": similarity_transform(p, ARCFACE_112)}
                for b, p in zip(found.boxes, found.points)]


class Hog:
    def __init__(self, upsample: int = 1):
        from fiqa_trt.engine.align import FaceAligner

        self.aligner = FaceAligner(all_faces=True, upsample=upsample)
        self.name = f"dlib hog, upsample {upsample}"

    def find(self, frame) -> list[dict]:
        from fiqa_trt.engine.align import DLIB5_IN_ARCFACE112
        from fiqa_trt.engine.geometry import similarity_transform

        out = []
        for face in self.aligner.align(np.ascontiguousarray(frame[..., ::-1])):
            out.append({"box": np.asarray(face.box, float), "points": None,
                        "transform": similarity_transform(face.landmarks, DLIB5_IN_ARCFACE112)})
        return out


def match(found: list[dict], faces: list[dict]) -> tuple[dict[int, dict], int]:
    """Face index -> its detection, and the count of detections matching no face."""
    pairs = []
    for i, face in enumerate(faces):
        cx, cy, side = face["cx"], face["cy"], face["side"]
        for j, d in enumerate(found):
            b = d["box"]
            bx, by, bs = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, max(b[2] - b[0], b[3] - b[1])
            if abs(bx - cx) <= side / 2 and abs(by - cy) <= side / 2 and 0.3 * side <= bs <= 2 * side:
                pairs.append((np.hypot(bx - cx, by - cy) / side, i, j))
    matched, used = {}, set()
    for _, i, j in sorted(pairs):
        if i not in matched and j not in used:
            matched[i] = found[j]
            used.add(j)
    return matched, len(found) - len(used)


def main() -> None:
    import cv2

    from benchmarks.harness.scenes import place_face
    from fiqa_trt.benchmark import provenance

    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=40, help="frames with faces")
    ap.add_argument("--empty", type=int, default=20, help="backgrounds without faces (plus skimage's photos)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/detect_quality.json"))
    args = ap.parse_args()
    files = sorted((SHARED / "data/lfw112").glob("*/*.jpg"))
    if not files:
        sys.exit("the shared LFW crops are not there (../shared/data/lfw112)")
    rng = np.random.default_rng(args.seed)
    scenes = []
    for i in range(args.frames):
        frame = background(i)
        sizes = [BIG[i % len(BIG)]] + list(rng.permutation(SMALL))
        faces = []
        for cx, cy, side in layout(rng, sizes):
            path = files[int(rng.integers(len(files)))]
            angle = float(rng.uniform(-10, 10))
            points = place_face(frame, cv2.imread(str(path)), (cx, cy), side, angle)
            faces.append({"cx": cx, "cy": cy, "side": side, "angle": angle, "points": points,
                          "file": str(path.relative_to(SHARED / "data/lfw112"))})
        scenes.append((frame, faces))
    empty = empty_frames(args.empty)
    detectors = [Mtcnn(20), Mtcnn(64), Hog(1)]
    report = {**provenance(), "frame_size": [FRAME[1], FRAME[0]], "face_frames": len(scenes),
              "faces": sum(len(f) for _, f in scenes), "empty_frames": len(empty),
              "empty_sources": sorted({name.split(" ")[0] + (" " + name.split(" ")[1] if name.startswith("skimage")
                                                             else "") for name, _ in empty}),
              "sizes": list(SIZES), "seed": args.seed, "detectors": {}}
    for det in detectors:
        per: dict[int, dict] = {s: {"faces": 0, "found": 0, "align": [], "landmark": [], "ratio": []} for s in SIZES}
        false_on_face_frames = 0
        for frame, faces in scenes:
            found = det.find(frame)
            matched, unmatched = match(found, faces)
            false_on_face_frames += unmatched
            for i, face in enumerate(faces):
                row = per[face["side"]]
                row["faces"] += 1
                if i not in matched:
                    continue
                d = matched[i]
                row["found"] += 1
                row["align"].append(alignment_error(d["transform"], true_transform(face["points"])))
                b = d["box"]
                row["ratio"].append(max(b[2] - b[0], b[3] - b[1]) / face["side"])
                if d["points"] is not None:
                    iod = np.linalg.norm(face["points"][1] - face["points"][0])
                    row["landmark"].append(float(np.linalg.norm(d["points"] - face["points"], axis=1).mean() / iod))
        empty_counts = {name: len(det.find(frame)) for name, frame in empty}

        def stat(values, q):
            return round(float(np.percentile(values, q)), 3) if values else None

        report["detectors"][det.name] = {
            "per_size": [{"size": s, "faces": r["faces"], "found": r["found"],
                          "recall": round(r["found"] / r["faces"], 3) if r["faces"] else None,
                          "alignment_error_px_median": stat(r["align"], 50),
                          "alignment_error_px_p90": stat(r["align"], 90),
                          "landmark_error_iod_median": stat(r["landmark"], 50),
                          "box_side_over_face_size_median": stat(r["ratio"], 50)} for s, r in per.items()],
            "false_detections_on_face_frames_per_frame": round(false_on_face_frames / len(scenes), 3),
            "false_detections_on_empty_frames_per_frame": round(sum(empty_counts.values()) / len(empty), 3),
            "false_detections_on_empty_frames": {k: v for k, v in empty_counts.items() if v},
        }
        print(det.name, json.dumps(report["detectors"][det.name]["per_size"]), flush=True)
        print(det.name, "false per frame:", report["detectors"][det.name]["false_detections_on_face_frames_per_frame"],
              report["detectors"][det.name]["false_detections_on_empty_frames_per_frame"], flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("written", args.out)


if __name__ == "__main__":
    main()
