"""Latency and throughput of the quality gate on this machine, as JSON.

    python benchmarks/bench_gate.py [--segment 60] [--out benchmarks/results/gate_cpu_amd-epyc-2core.json]

The video is the gate tests' (benchmarks/harness/scenes.py: make_gate_video): 320x240 MJPG at 25 fps, LFW faces
pasted in, two faces per frame (one clean, one pixelated), 4 tracks. Shared MobileFaceNet (backend and precision
`auto`), dlib HOG detector (upsample 1), default perturbation (K=1), batches of up to 4 frames. Two runs:

- `offline`: the file read as fast as the gate takes it (drop policy none): frames/s processed; latency includes the
  time a frame waits in the reader's queue (8 frames) behind the ones before it.
- `live_25fps`, `live_50fps`: the same frames handed to the reader at 25 (50) frames/s like a camera (drop policy
  oldest): frames/s processed, frames dropped, and per-frame latency from arrival to its events.

Also the time per frame of detection + alignment alone and of scoring alone (per face).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))


class _TimedDetector:
    def __init__(self, inner):
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def align(self, rgb):
        t0 = time.perf_counter()
        faces = self.inner.align(rgb)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return faces


class _TimedScorer:
    def __init__(self, inner):
        self.inner, self.seconds, self.faces = inner, 0.0, 0

    def score_crops(self, crops, keys=None):
        t0 = time.perf_counter()
        q = self.inner.score_crops(crops, keys)
        self.seconds += time.perf_counter() - t0
        self.faces += len(crops)
        return q


class _PacedSource:
    """The frames of a video handed over at `fps`, like a camera: reading never waits for the consumer."""

    def __init__(self, images, fps):
        from fiqa_trt.gate.streams import SourceStats

        self.images, self.fps, self.stats = images, fps, SourceStats()

    def frames(self, stop):
        from fiqa_trt.gate.streams import Frame

        start = time.perf_counter()
        for i, image in enumerate(self.images):
            delay = start + i / self.fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if stop.is_set():
                return
            self.stats.read += 1
            yield Frame(i, image, time.time(), time.perf_counter(), i / self.fps)

    def close(self):
        pass


def main() -> None:
    import cv2

    from fiqa_trt.benchmark import provenance
    from fiqa_trt.engine.align import FaceAligner
    from fiqa_trt.gate.gate import Gate
    from fiqa_trt.engine.runners import load_runner
    from fiqa_trt.engine.scorer import Scorer
    from fiqa_trt.gate.streams import FrameReader
    from benchmarks.harness.scenes import THRESHOLD, make_gate_video

    ap = argparse.ArgumentParser()
    ap.add_argument("--segment", type=int, default=60)
    ap.add_argument("--batch-frames", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/gate_cpu_amd-epyc-2core.json"))
    args = ap.parse_args()
    files = sorted((SHARED / "data/lfw112").glob("*/*.jpg"))
    model = str(SHARED / "models/faceplugin-mobilefacenet/fr_feature.onnx")
    runner = load_runner(model)
    scorer = Scorer(runner, batch_size=32)
    report = {**provenance(), "model": Path(model).name, "backend": runner.name, "precision": runner.precision,
              "detector": "dlib hog, upsample 1", "batch_frames": args.batch_frames, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "faces.avi"
        make_gate_video(video, files, segment=args.segment)
        cap = cv2.VideoCapture(str(video))
        images = []
        while (got := cap.read())[0]:
            images.append(got[1])
        cap.release()
        report.update(frames=len(images), frame_size=list(images[0].shape[:2]))
        scorer.score_crops([np.zeros((112, 112, 3), np.uint8)] * 4)  # warm-up: pipeline and model built
        for name in ("offline", "live_25fps", "live_50fps"):
            det, sco = _TimedDetector(FaceAligner(all_faces=True)), _TimedScorer(scorer)
            gate = Gate(sco, det, threshold=THRESHOLD, events=None, batch_frames=args.batch_frames)
            if name == "offline":
                summary = gate.run(str(video))
            else:
                fps = float(name.split("_")[1][:-3])
                reader = FrameReader(_PacedSource(images, fps), queue_size=8, drop="oldest")
                try:
                    summary = gate.process(reader)
                finally:
                    reader.close()
            summary.update(detect_align_ms_per_frame=round(1000 * det.seconds / max(det.calls, 1), 1),
                           score_ms_per_face=round(1000 * sco.seconds / max(sco.faces, 1), 1))
            report["runs"][name] = {k: v for k, v in summary.items() if k not in ("event", "time", "errors")}
            print(name, json.dumps(report["runs"][name]))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("written", args.out)


if __name__ == "__main__":
    main()
