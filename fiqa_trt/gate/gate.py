"""Real-time quality gating of face streams: the `Gate` owns detection, tracking, batched quality scoring, per-track
best shots, accept/reject decisions and the outputs (JSON-lines events, best-shot crops, an annotated video).

Per frame: the detector finds every face and aligns it to the ArcFace 112x112 template (dlib's HOG detector by
default: any object with `align(rgb) -> list[engine.align.Face]` plugs in, e.g. an ONNX SCRFD/RetinaFace detector
on a GPU); the IoU tracker gives each face a track id. The faces of several frames are scored together
(`Scorer.score_crops`: the same perturbations, runner and aggregation as `fiqa-trt score`). A batch holds at most
`batch_frames` frames and is scored as soon as no further frame is waiting, so batching only adds latency when
scoring is behind.

Score and decision: `quality` is the recipe's raw quality (engine.recipes; the scorer's). `score` is what the
threshold applies to: the raw quality (scale `raw`) or the 0-100 unified score (scale `calibrated`), the `score`
column of `fiqa-trt score`: a linear map from the recipe's 1st percentile (0) to its 99th percentile (100) on the
shared LFW crops put back on the ArcFace template, clipped and rounded (`Recipe.calibration`). The gate aligns every
face to that template, so the calibration and the gate see faces the same way (the seed's scale was fitted on the
off-template crops and put clean aligned faces, and with the default model a face pixelated to 24 px, at 100). A
face event is `accept` when its score >= threshold. A track's final decision is made on its best shot (highest quality over the track): accept when
the best score >= threshold.

Events (one JSON object per line): `face` (per face per processed frame: time, pts, captured, frame, track, box,
quality, score, decision, latency_ms, stream_latency_ms), `track_end` (per track once: frames, best
quality/score/frame/box, decision, the saved best-shot file), `outage` (network streams, per lost connection once
the next one has settled: cause, last frame before, first frame after, gap_s, frames_lost; see gate.network),
`resolution` (the frame size changed: frame, width, height, previous) and a final `summary` (frames read /
processed / dropped / unreadable / lost (in the stream and to outages) / unprocessed (read, but still queued or
in hand when the run was interrupted), reconnections, outages, faces, tracks, accepted, rejected,
frames/s, latency p50/p99, stream latency p50/p99, interrupted). Latency: from the moment the reader got the frame
to the moment its events are written. Stream latency (network streams whose camera sends RTCP sender reports):
from the frame's capture time on the camera's clock (`captured`, seconds since the epoch) to that moment.
A new connection and a change of frame size end every track (their boxes are not comparable across it): the
tracks after an outage are new tracks.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol, TextIO

import numpy as np

from fiqa_trt.engine.align import Face
from fiqa_trt.gate.streams import Frame, FrameReader, SourceStats, kind_of, open_source
from fiqa_trt.gate.tracking import IouTracker
from fiqa_trt.errors import FiqaError

log = logging.getLogger("fiqa_trt")
SCALES = ("raw", "calibrated")



class Detector(Protocol):
    def align(self, rgb: np.ndarray) -> list[Face]:
        """Every face of an RGB frame, aligned to the ArcFace 112x112 template."""
        ...


def calibration_for(recipe) -> tuple[float, float] | None:
    """(p1, p99) of a scorer's recipe (engine.recipes.Recipe, as resolved for its model), else None."""
    return None if recipe is None else recipe.calibration


def calibrate(quality: float, calibration: tuple[float, float]) -> float:
    """The 0-100 unified score of one quality, as `Recipe.unified_score`: linear p1 -> 0, p99 -> 100, clipped,
    rounded to an integer."""
    lo, hi = calibration
    return float(np.round(np.clip(100.0 * (quality - lo) / (hi - lo), 0.0, 100.0)))


class JsonlWriter:
    """Events as JSON lines to a file path, a text stream, or standard output ('-'); flushed line by line."""

    def __init__(self, target: str | Path | TextIO = "-"):
        if target == "-":
            self._file, self._own = sys.stdout, False
        elif isinstance(target, (str, Path)):
            try:
                if Path(target).is_dir():
                    raise IsADirectoryError(21, "it is a folder")
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                self._file, self._own = open(target, "w"), True
            except OSError as exc:
                raise FiqaError(f"cannot write the events to {target}: {exc.strerror or exc}") from None
        else:
            self._file, self._own = target, False

    def __call__(self, event: dict) -> None:
        try:
            self._file.write(json.dumps(event) + "\n")
            self._file.flush()
        except OSError as exc:
            raise FiqaError(f"cannot write the events: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._own:
            self._file.close()


@dataclass
class _Best:
    quality: float
    frame: int
    box: tuple[int, int, int, int]
    crop: np.ndarray
    faces: int = 0


class Gate:
    """Quality gate over a stream of frames; see the module docstring. `run(source)` reads a source; `process`
    takes any iterable of `streams.Frame`. Both return the summary (also written as the last event)."""

    def __init__(self, scorer, detector: Detector | None = None, threshold: float = 0.95, scale: str = "raw",
                 calibration: tuple[float, float] | None = None, events: str | Path | TextIO | None = "-",
                 on_event: Callable[[dict], None] | None = None, best_dir: str | Path | None = None,
                 video_out: str | Path | None = None, batch_frames: int = 4, min_iou: float = 0.3,
                 max_missed: int = 5):
        if scale not in SCALES:
            raise FiqaError(f"unknown score scale '{scale}'; use raw or calibrated")
        if scale == "calibrated" and calibration is None:
            raise FiqaError("no calibration is known for this model: use --scale raw (a threshold on the cosine)")
        if calibration is not None and not calibration[1] > calibration[0]:
            raise FiqaError("a calibration needs p1 < p99")
        if batch_frames < 1:
            raise FiqaError("--batch-frames must be at least 1")
        if max_missed < 0 or not 0 < min_iou <= 1:
            raise FiqaError("--max-missed must be >= 0 and --min-iou in (0, 1]")
        low, high = (0.0, 100.0) if scale == "calibrated" else (-1.0, 1.0)
        if not low <= threshold <= high:
            raise FiqaError(f"--threshold {threshold:g} is outside the {scale} scale [{low:g}, {high:g}]"
                            + (" (a 0-100 threshold needs --scale calibrated)" if scale == "raw" else
                               " (a cosine threshold needs --scale raw)"))
        if detector is None:
            from fiqa_trt.engine.align import FaceAligner

            detector = FaceAligner(all_faces=True)
        self.scorer, self.detector, self.threshold, self.scale = scorer, detector, threshold, scale
        self.calibration, self.batch_frames = calibration, batch_frames
        self.min_iou, self.max_missed = min_iou, max_missed
        self.events_target, self.on_event = events, on_event
        self.best_dir = Path(best_dir) if best_dir is not None else None
        if self.best_dir is not None:
            try:
                self.best_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FiqaError(f"cannot create --best-dir {self.best_dir}: {exc.strerror or exc}") from None
        self.video_out = Path(video_out) if video_out is not None else None

    # ---- scores and decisions ----

    def score_of(self, quality: float) -> float:
        if self.scale == "calibrated":
            return calibrate(quality, self.calibration)
        return float(quality)

    def decide(self, quality: float) -> str:
        return "accept" if np.isfinite(quality) and self.score_of(quality) >= self.threshold else "reject"

    # ---- running ----

    def run(self, source: str, drop: str | None = None, queue_size: int = 8, network: dict | None = None,
            **source_options) -> dict:
        """Read SOURCE (see streams; a URL through gate.network, with the `network` options: transport,
        open_timeout, read_timeout, max_reconnects, backoff) in a thread and gate it. `drop`: the reader's policy
        (default: `oldest` for cameras and URLs, `none` for files and folders)."""
        kind = kind_of(source)
        if drop is None:
            drop = "none" if kind in ("file", "folder") else "oldest"
        if kind == "url":
            from fiqa_trt.gate.network import NetworkSource

            opened = NetworkSource(source, **(network or {}))
        else:
            opened = open_source(source, **source_options)
        reader = FrameReader(opened, queue_size=queue_size, drop=drop)
        try:
            return self.process(reader, stats=reader.stats, backlog=reader.backlog)
        finally:
            reader.close()

    def process(self, frames: Iterable[Frame], stats: SourceStats | None = None,
                backlog: Callable[[], int] | None = None) -> dict:
        stats = stats if stats is not None else SourceStats()
        writer = JsonlWriter(self.events_target) if self.events_target is not None else None
        emit = _Emitter(writer, self.on_event)
        state = _RunState(self, emit)
        pending: list[tuple[Frame, list[Face]]] = []
        interrupted = False
        started = time.perf_counter()
        try:
            try:
                for frame in frames:
                    if stats is not None and backlog is None:
                        stats.read = max(stats.read, frame.index + 1)
                    state.outages(stats)
                    rgb = frame.image[..., ::-1]
                    pending.append((frame, self.detector.align(rgb)))
                    if len(pending) >= self.batch_frames or (backlog is not None and backlog() == 0):
                        state.flush(pending)
                        pending = []
            except KeyboardInterrupt:
                interrupted = True
            state.flush(pending)  # the frames already detected (also after Ctrl-C)
            state.finish()
        except KeyboardInterrupt:
            interrupted = True
            state.finish()
        finally:
            state.outages(stats)
            elapsed = time.perf_counter() - started
            summary = state.summary(stats, elapsed, interrupted)
            emit(summary)
            state.close()
            if writer is not None:
                writer.close()
        return summary


class _Emitter:
    def __init__(self, writer: JsonlWriter | None, on_event: Callable[[dict], None] | None):
        self.writer, self.on_event = writer, on_event

    def __call__(self, event: dict) -> None:
        if self.writer is not None:
            self.writer(event)
        if self.on_event is not None:
            self.on_event(event)


class _RunState:
    """One run's tracker, best shots, counters, latencies and video writer."""

    def __init__(self, gate: Gate, emit: _Emitter):
        self.gate, self.emit = gate, emit
        self.tracker = IouTracker(gate.min_iou, gate.max_missed)
        self.best: dict[int, _Best] = {}
        self.latencies: list[float] = []
        self.stream_latencies: list[float] = []
        self.frames = self.faces = self.accepted = self.rejected = 0
        self.connection, self.size = 0, None  # of the last frame: a new connection or frame size ends every track
        self.outages_emitted = 0
        self.video = None
        if gate.best_dir is not None:
            gate.best_dir.mkdir(parents=True, exist_ok=True)

    def flush(self, pending: list[tuple[Frame, list[Face]]]) -> None:
        if not pending:
            return
        crops = [face.crop for _, faces in pending for face in faces]
        keys = [f"{frame.index}#{j}" for frame, faces in pending for j in range(len(faces))]
        qualities = iter(self.gate.scorer.score_crops(crops, keys) if crops else [])
        for frame, faces in pending:
            self._continuity(frame)
            boxes = [face.box for face in faces]
            ids, ended = self.tracker.update(boxes, frame.index)
            for track in ended:
                self._end(track.id)
            events = []
            for face, tid in zip(faces, ids):
                q = float(next(qualities))
                best = self.best.get(tid)
                if best is None or (np.isfinite(q) and not q <= best.quality):
                    best = _Best(q, frame.index, face.box, face.crop, best.faces if best else 0)
                    self.best[tid] = best
                best.faces += 1
                events.append({"event": "face", "time": round(frame.wall_time, 3), "pts": _round(frame.pts),
                               "captured": _round(frame.captured, 3), "frame": frame.index, "track": tid,
                               "box": [int(v) for v in face.box], "quality": _round(q),
                               "score": _round(self.gate.score_of(q)), "decision": self.gate.decide(q)})
            latency = (time.perf_counter() - frame.read_at) * 1000.0
            self.latencies.append(latency)
            stream_latency = (time.time() - frame.captured) * 1000.0 if frame.captured is not None else None
            if stream_latency is not None:
                self.stream_latencies.append(stream_latency)
            for event in events:
                event["latency_ms"] = round(latency, 1)
                event["stream_latency_ms"] = _round(stream_latency, 1)
                self.emit(event)
            self.faces += len(faces)
            self.frames += 1
            if self.gate.video_out is not None:
                self._annotate(frame, events)

    def _continuity(self, frame: Frame) -> None:
        """A frame from a new connection (after an outage) or of another size ends every track: the boxes of
        the frames before it are not comparable with its own."""
        size = frame.image.shape[1], frame.image.shape[0]
        if self.size is not None and (frame.connection != self.connection or size != self.size):
            for track in self.tracker.finish():
                self._end(track.id)
            if size != self.size:
                self.emit({"event": "resolution", "time": round(frame.wall_time, 3), "frame": frame.index,
                           "width": size[0], "height": size[1], "previous": list(self.size)})
        self.connection, self.size = frame.connection, size

    def outages(self, stats: SourceStats) -> None:
        """Emit the outage records the source completed since the last call."""
        while self.outages_emitted < len(stats.outages):
            self.emit(dict(stats.outages[self.outages_emitted]))
            self.outages_emitted += 1

    def _end(self, tid: int) -> None:
        best = self.best.pop(tid, None)
        if best is None:
            return
        decision = self.gate.decide(best.quality)
        self.accepted += decision == "accept"
        self.rejected += decision == "reject"
        path = None
        if self.gate.best_dir is not None:
            import cv2

            path = str(self.gate.best_dir / f"track{tid:05d}_frame{best.frame:06d}.png")
            try:
                written = cv2.imwrite(path, np.ascontiguousarray(best.crop[..., ::-1]))
            except cv2.error:
                written = False
            if not written:
                raise FiqaError(f"cannot write the best shot {path}")
        self.emit({"event": "track_end", "time": round(time.time(), 3), "track": tid, "faces": best.faces,
                   "best_frame": best.frame, "best_box": [int(v) for v in best.box],
                   "best_quality": _round(best.quality), "best_score": _round(self.gate.score_of(best.quality)),
                   "decision": decision, "best_shot": path})

    def finish(self) -> None:
        for track in self.tracker.finish():
            self._end(track.id)

    def _annotate(self, frame: Frame, events: list[dict]) -> None:
        import cv2

        image = np.ascontiguousarray(frame.image.copy())
        if self.video is None:
            fourcc = "mp4v" if self.gate.video_out.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"
            self.gate.video_out.parent.mkdir(parents=True, exist_ok=True)
            self.video_size = (image.shape[1], image.shape[0])
            self.video = cv2.VideoWriter(str(self.gate.video_out), cv2.VideoWriter_fourcc(*fourcc), 25.0,
                                         self.video_size)
            if not self.video.isOpened():
                raise FiqaError(f"cannot write the video {self.gate.video_out} (try a .avi file)")
        for e in events:
            colour = (0, 200, 0) if e["decision"] == "accept" else (0, 0, 230)
            x0, y0, x1, y1 = e["box"]
            cv2.rectangle(image, (x0, y0), (x1, y1), colour, 2)
            cv2.putText(image, f"#{e['track']} {e['score']:.3g}", (x0, max(y0 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4, colour, 1, cv2.LINE_AA)
        if (image.shape[1], image.shape[0]) != self.video_size:  # a resolution change: the video keeps its size
            image = cv2.resize(image, self.video_size, interpolation=cv2.INTER_AREA)
        self.video.write(image)

    def summary(self, stats: SourceStats, elapsed: float, interrupted: bool) -> dict:
        lat = np.asarray(self.latencies) if self.latencies else None
        stream = np.asarray(self.stream_latencies) if self.stream_latencies else None
        return {"event": "summary", "time": round(time.time(), 3), "frames_read": stats.read,
                "frames_processed": self.frames, "frames_dropped": stats.dropped,
                "frames_unreadable": stats.unreadable, "frames_lost": stats.frames_lost,
                "frames_unprocessed": max(0, stats.read - self.frames - stats.dropped),
                "reconnects": stats.reconnects, "outages": len(stats.outages), "faces": self.faces,
                "tracks": self.accepted + self.rejected, "accepted": self.accepted, "rejected": self.rejected,
                "seconds": round(elapsed, 3), "frames_per_s": round(self.frames / elapsed, 2) if elapsed > 0 else None,
                "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if lat is not None else None,
                "latency_ms_p99": round(float(np.percentile(lat, 99)), 1) if lat is not None else None,
                "stream_latency_ms_p50": round(float(np.percentile(stream, 50)), 1) if stream is not None else None,
                "stream_latency_ms_p99": round(float(np.percentile(stream, 99)), 1) if stream is not None else None,
                "scale": self.gate.scale, "threshold": self.gate.threshold, "interrupted": interrupted,
                "errors": list(stats.errors)}

    def close(self) -> None:
        if self.video is not None:
            self.video.release()


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)
