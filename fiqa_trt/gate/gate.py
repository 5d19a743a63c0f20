"""Real-time quality gating of face streams: the `Gate` owns detection, tracking, batched quality scoring, per-track
best shots, accept/reject decisions and the outputs (JSON-lines events, best-shot crops, annotated videos), for one
stream or several in one process.

Threads: one reader per stream (gate.streams.FrameReader: its own bounded queue and drop policy, so a stream that
stalls or reconnects holds up no other), one detection thread, and the calling thread, which scores and writes the
events. The detection thread takes the frames waiting in every stream's queue (at most `batch_frames` per stream),
finds and aligns their faces in one batched detector call, and hands them over; the calling thread scores the faces
of the batch in one call (`Scorer.score_crops`: the same recipe, perturbations and runner as `fiqa-trt score`) while
the next batch is being detected. Nothing waits for a batch to fill: a batch is whatever is queued when the
detector is free, so batching only adds latency when the gate is behind.

Detector: anything with `align(rgb) -> list[engine.align.Face]` (faces aligned to the model's template), or
`align_frames(images) -> list[list[Face]]` for a batch of frames in the order `channels` says (engine.detect's
MtcnnAligner: MTCNN on the model's backend; dlib's HOG through engine.align). Default: MTCNN, faces of at least
MIN_FACE px.

Score and decision: `quality` is the recipe's raw quality. `score` is what the threshold applies to: the raw quality
(scale `raw`) or the 0-100 unified score (scale `calibrated`), the `score` column of `fiqa-trt score`: an integer,
the recipe's calibration mapping its 1st percentile to 0 and its 99th to 100 on the shared LFW crops put back on
the ArcFace template (`Recipe.calibration`), which is how the gate aligns every face; for a stability recipe without
a calibration the generic scale of the stability score (`quality.scale`). Default threshold: 50 on the
calibrated scale; on the raw scale the raw quality that scores 50 where the recipe has a calibration, else it must
be given (the raw scale is the recipe's own: about -0.05 for the default model's, 1.2 for the MobileFaceNet's). A
raw threshold outside the calibration's [p1, p99] is warned about (it accepts or rejects nearly every face), one
more than RAW_MARGIN times that range away from it refused (a 0-100 threshold given on the raw scale). A face
event is `accept` when its score >= threshold; a track's final decision is made on its best shot (highest quality
over the track).

Events (one JSON object per line, each with the `stream` it belongs to: the source's position on the command line):
`face` (per face per processed frame: time, pts, captured, frame, track, box, quality, score, decision, latency_ms,
stream_latency_ms), `track_end` (per track once: faces, best quality/score/frame/box, decision, the saved best-shot
file), `outage` (network streams, per lost connection once the next one has settled: cause, last frame before,
first frame after, gap_s, frames_lost; see gate.network), `resolution` (the frame size changed: frame, width,
height, previous) and a final `summary`: the totals over all streams (frames read / processed / dropped /
unreadable / lost (in the stream and to outages) / unprocessed (read, but still queued or in hand when the run was
interrupted), reconnections, outages, faces, tracks, accepted, rejected, frames/s, latency p50/p99, stream latency
p50/p99, interrupted, CPU seconds of reading, detection and the whole process) and `streams`, the same counts per
stream with its source and errors. Track ids count per stream. Latency: from the moment the reader got the frame to
the moment its events are written. Stream latency (network streams whose camera sends RTCP sender reports): from
the frame's capture time on the camera's clock (`captured`, seconds since the epoch) to that moment. A new
connection and a change of frame size end every track of that stream (their boxes are not comparable across it):
the tracks after an outage are new tracks.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, TextIO
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from fiqa_trt.engine.align import Face
from fiqa_trt.errors import FiqaError, NothingDone
from fiqa_trt.gate.streams import Frame, FrameReader, IterableSource, SourceStats, kind_of, open_source
from fiqa_trt.gate.tracking import IouTracker
from fiqa_trt.quality.scale import Scale

log = logging.getLogger("fiqa_trt")
SCALES = ("raw", "calibrated")
MIN_FACE = 64  # frame pixels: the smallest face the default detector looks for
RAW_MARGIN = 10  # a raw threshold more than this many calibration ranges (p99 - p1) outside it is refused


class Detector(Protocol):
    def align(self, rgb: np.ndarray) -> list[Face]:
        """Every face of an RGB frame, aligned to the model's template."""
        ...


def calibration_for(recipe) -> tuple[float, float] | None:
    """(p1, p99) of a scorer's recipe (quality.Recipe, as resolved for its model), else None."""
    return None if recipe is None else recipe.calibration


def calibrate(quality: float, calibration: "tuple[float, float] | Scale") -> int:
    """The 0-100 unified score of one quality on the calibration's scale (`quality.scale`), as `score` writes it."""
    return int(unified(calibration)(quality))


def unified(calibration: "tuple[float, float] | Scale | None") -> Scale | None:
    """The 0-100 scale of a calibration: (p1, p99), or a `quality.scale.Scale` (the generic scale of a stability
    recipe without a calibration); None for none."""
    if calibration is None or isinstance(calibration, Scale):
        return calibration
    return Scale.calibrated(*calibration)


def default_detector(min_face: float = MIN_FACE, backend: str = "auto", device: str = "cpu",
                     size: tuple[int, int] = (112, 112)):
    """MTCNN for BGR frames on one thread (it runs beside the scoring), every face."""
    from fiqa_trt.engine.detect import MtcnnAligner

    return MtcnnAligner(size, all_faces=True, min_face=min_face, channels="bgr", backend=backend, threads=1,
                        device=device)


def align_frames(detector, images: list[np.ndarray]) -> list[list[Face]]:
    """The faces of BGR frames, through whichever interface the detector has."""
    if hasattr(detector, "align_frames"):
        if getattr(detector, "channels", "rgb") == "bgr":
            return detector.align_frames(images)
        return detector.align_frames([np.ascontiguousarray(im[..., ::-1]) for im in images])
    return [detector.align(im[..., ::-1]) for im in images]


def public_name(source: str) -> str:
    """A source as events may show it: a URL's password replaced by ***."""
    if "://" not in source:
        return source
    try:
        parts = urlsplit(source)
        if parts.password is None:
            return source
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return source.split("@")[-1]


class JsonlWriter:
    """Events as JSON lines to a file path, a text stream, or standard output ('-'); flushed line by line."""

    def __init__(self, target: str | Path | TextIO = "-"):
        self._name = "standard output" if target == "-" else str(getattr(target, "name", target))
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
        except OSError as exc:  # a full disk while the gate runs: exit 1, not a usage mistake
            raise NothingDone(f"cannot write the events to {self._name}: {exc.strerror or exc}") from None

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


def check_video_out(path: str | Path | None) -> None:
    """FiqaError (one line) when --video-out cannot be written: its folder cannot be created or written to."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise FiqaError(f"--video-out {path} is a folder: give a file name ending in .avi or .mp4")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FiqaError(f"cannot write --video-out {path}: cannot create {folder}: {exc.strerror or exc}") from None
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise FiqaError(f"cannot write --video-out {path}: the folder {folder} takes no file "
                        f"({exc.strerror or exc})") from None


def check_tracking(batch_frames: int, min_iou: float, max_missed: int) -> None:
    """FiqaError (one line) for batching and tracking settings that cannot work."""
    if batch_frames < 1:
        raise FiqaError("--batch-frames must be at least 1")
    if max_missed < 0 or not 0 < min_iou <= 1:
        raise FiqaError("--max-missed must be >= 0 and --min-iou in (0, 1]")


def gate_threshold(scale: str, calibration: "tuple[float, float] | Scale | None", threshold: float | None,
                   warn: bool = True) -> float:
    """The threshold to use on this scale (see the module docstring), checked: FiqaError (one line) for a scale
    without a calibration, or a threshold outside its scale; a raw threshold outside the calibration's range is
    warned about (`warn`). Needs the calibration only, so a command checks it before the model loads."""
    if scale not in SCALES:
        raise FiqaError(f"unknown score scale '{scale}'; use raw or calibrated")
    if scale == "calibrated" and calibration is None:
        raise FiqaError("no calibration is known for this model and recipe: use --scale raw with a --threshold "
                        "on the recipe's raw quality")
    unit = unified(calibration)
    if unit is not None and not unit.high > unit.low:
        raise FiqaError("a calibration needs p1 < p99")
    cal = (unit.low, unit.high) if unit is not None else None  # the raw qualities that score 0 and 100
    span = "its generic 0-100 scale spans {:.4g} to {:.4g}" if unit is not None and unit.kind == "generic" else \
        "its clean faces span {:.4g} to {:.4g}, 1st to 99th percentile"
    if scale == "calibrated":
        threshold = 50 if threshold is None else threshold
        if not 0 <= threshold <= 100:
            raise FiqaError(f"--threshold {threshold:g} is outside the calibrated scale [0, 100] (a threshold on "
                            "the recipe's raw quality needs --scale raw)")
        return threshold
    if threshold is None:
        if cal is None:
            raise FiqaError("no 0-100 calibration is known for this model and recipe to take a default "
                            "threshold from: give --threshold on the recipe's raw quality (--scale raw)")
        return round(unit.quality_at(50), 6)  # the raw quality that scores 50
    if not np.isfinite(threshold):
        raise FiqaError("--threshold must be a finite number")
    if cal is not None and not cal[0] - RAW_MARGIN * (cal[1] - cal[0]) <= threshold <= \
            cal[1] + RAW_MARGIN * (cal[1] - cal[0]):
        raise FiqaError(f"--threshold {threshold:g} is far outside the raw scale of this recipe ({span.format(*cal)}): "
                        "a 0-100 threshold needs --scale calibrated")
    if warn and cal is not None and not cal[0] <= threshold <= cal[1]:
        log.warning("--threshold %g on the raw scale is outside this recipe's range (%s): it %s nearly every face",
                    threshold, span.format(*cal), "rejects" if threshold > cal[1] else "accepts")
    return threshold


class Gate:
    """Quality gate over one stream of frames or several; see the module docstring. `run(sources)` opens and reads
    sources; `process(streams)` takes FrameReaders or iterables of `streams.Frame`. Both return the summary (also
    written as the last event)."""

    def __init__(self, scorer, detector: Detector | None = None, threshold: float | None = None, scale: str = "raw",
                 calibration: tuple[float, float] | None = None, events: str | Path | TextIO | None = "-",
                 on_event: Callable[[dict], None] | None = None, best_dir: str | Path | None = None,
                 video_out: str | Path | None = None, batch_frames: int = 4, min_iou: float = 0.3,
                 max_missed: int = 5):
        check_tracking(batch_frames, min_iou, max_missed)
        self.scorer, self.scale, self.calibration = scorer, scale, calibration
        self.threshold = gate_threshold(scale, calibration, threshold)
        if detector is None:
            config = getattr(getattr(scorer, "runner", None), "config", None)
            detector = default_detector(size=tuple(config.input_size) if config is not None else (112, 112),
                                        device=str(getattr(scorer, "device", "cpu")))
        self.detector = detector
        self.batch_frames, self.min_iou, self.max_missed = batch_frames, min_iou, max_missed
        self.events_target, self.on_event = events, on_event
        self.best_dir = Path(best_dir) if best_dir is not None else None
        if self.best_dir is not None:
            try:
                self.best_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FiqaError(f"cannot create --best-dir {self.best_dir}: {exc.strerror or exc}") from None
        self.video_out = Path(video_out) if video_out is not None else None
        check_video_out(self.video_out)

    # ---- scores and decisions ----

    def score_of(self, quality: float) -> float | int | None:
        """The score the threshold applies to (None where the quality is not a number)."""
        if not np.isfinite(quality):
            return None
        if self.scale == "calibrated":
            return calibrate(quality, self.calibration)
        return float(quality)

    def decide(self, quality: float) -> str:
        score = self.score_of(quality)
        return "accept" if score is not None and score >= self.threshold else "reject"

    # ---- running ----

    def run(self, sources: str | list[str], drop: str | None = None, queue_size: int = 8,
            network: dict | None = None, **source_options) -> dict:
        """Read each SOURCE (see gate.streams; URLs through gate.network, with the `network` options: transport,
        open_timeout, read_timeout, max_reconnects, backoff) in its own thread and gate them together. `drop`: the
        readers' policy (default per source: `oldest` for cameras and URLs, `none` for files and folders).

        A source that cannot be opened ends its stream with the error in its summary; when no source could be
        opened, the first error is raised after the summary (gate.network.StreamUnavailable for a URL)."""
        sources = [sources] if isinstance(sources, str) else list(sources)
        if not sources:
            raise FiqaError("give at least one source")
        kinds = [kind_of(s) for s in sources]
        wake = threading.Event()
        readers = []
        try:
            for i, (source, kind) in enumerate(zip(sources, kinds)):
                policy = drop if drop is not None else ("none" if kind in ("file", "folder") else "oldest")
                readers.append(FrameReader(_opener(source, kind, network, source_options), queue_size=queue_size,
                                           drop=policy, wake=wake, name=f"fiqa-gate-read-{i}"))
            summary = self.process(readers, names=[public_name(s) for s in sources], wake=wake)
        finally:
            for reader in readers:
                reader.close()
        failed = [r.open_error for r in readers if r.open_error is not None]
        if failed and len(failed) == len(readers):
            raise failed[0]
        return summary

    def process(self, streams, names: list[str] | None = None, wake: threading.Event | None = None) -> dict:
        """Gate streams: FrameReaders (sharing `wake`, the Event they set when a frame is queued) or iterables of
        frames (each read in a thread with drop policy none), or one of them alone."""
        if isinstance(streams, FrameReader) or not isinstance(streams, (list, tuple)):
            streams = [streams]
        wake = wake or threading.Event()
        readers, own = [], []
        for i, s in enumerate(streams):
            if isinstance(s, FrameReader):
                s.wake = s.wake or wake
                readers.append(s)
            else:
                own.append(FrameReader(IterableSource(s), queue_size=8, drop="none", wake=wake,
                                       name=f"fiqa-gate-read-{i}"))
                readers.append(own[-1])
        wakes = {r.wake for r in readers}
        try:
            return _Run(self, readers, names or [f"stream {i}" for i in range(len(readers))],
                        wakes.pop() if len(wakes) == 1 else wake).run()
        finally:
            for reader in own:
                reader.close()


def _opener(source: str, kind: str, network: dict | None, source_options: dict) -> Callable:
    def open_():
        if kind == "url":
            from fiqa_trt.gate.network import NetworkSource

            return NetworkSource(source, **(network or {}))
        return open_source(source, **source_options)

    return open_


class _Emitter:
    def __init__(self, writer: JsonlWriter | None, on_event: Callable[[dict], None] | None):
        self.writer, self.on_event = writer, on_event

    def __call__(self, event: dict) -> None:
        if self.writer is not None:
            self.writer(event)
        if self.on_event is not None:
            self.on_event(event)


_END = object()


class _Run:
    """One run: the detection thread and the scoring loop over the streams' readers."""

    def __init__(self, gate: Gate, readers: list[FrameReader], names: list[str], wake: threading.Event):
        self.gate, self.readers, self.wake = gate, readers, wake
        self.detector = gate.detector
        writer = JsonlWriter(gate.events_target) if gate.events_target is not None else None
        self.writer = writer
        self.emit = _Emitter(writer, gate.on_event)
        several = len(readers) > 1
        self.streams = [_Stream(gate, self.emit, i, name, reader, several)
                        for i, (name, reader) in enumerate(zip(names, readers))]
        self.handoff: queue.Queue = queue.Queue(maxsize=1)
        self.stop = threading.Event()  # the detection thread stops taking frames
        self.abandon = threading.Event()  # nobody reads the handoff any more
        self.detect_cpu = 0.0

    # ---- the detection thread ----

    def _detect(self) -> None:
        try:
            active = list(range(len(self.readers)))
            while active and not self.stop.is_set():
                self.wake.clear()
                batch, ended = [], []
                for i in active:
                    batch += [(i, frame) for frame in self.readers[i].take(self.gate.batch_frames)]
                    if self.readers[i].ended:
                        ended.append(i)
                active = [i for i in active if i not in ended]
                faces = align_frames(self.detector, [f.image for _, f in batch]) if batch else []
                if batch or ended:
                    self._hand(("batch", batch, faces, ended))
                elif active:
                    self.wake.wait(0.1)
            self._hand(("stopped", active))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the scoring thread
            self._hand(("error", exc))
        finally:
            self.detect_cpu = time.thread_time()
            self._hand(_END)

    def _hand(self, item) -> None:
        while not self.abandon.is_set():
            try:
                self.handoff.put(item, timeout=0.1)
                return
            except queue.Full:
                pass

    # ---- the scoring loop (calling thread) ----

    def run(self) -> dict:
        interrupted = False
        started, cpu_started = time.perf_counter(), time.process_time()
        thread = threading.Thread(target=self._detect, daemon=True, name="fiqa-gate-detect")
        thread.start()
        try:
            try:
                self._consume()
            except KeyboardInterrupt:
                interrupted = True
                self.stop.set()
                self._consume()  # the frames already detected (also after Ctrl-C)
            self._finish()
        except KeyboardInterrupt:
            interrupted = True
            self._finish()
        finally:
            self.stop.set()
            self.abandon.set()
            thread.join(timeout=10)
            for stream in self.streams:
                stream.outages()
            summary = self._summary(time.perf_counter() - started, time.process_time() - cpu_started, interrupted)
            self.emit(summary)
            for stream in self.streams:
                stream.close()
            if self.writer is not None:
                self.writer.close()
        return summary

    def _consume(self) -> None:
        while True:
            try:
                item = self.handoff.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END:
                return
            kind = item[0]
            if kind == "error":
                raise item[1]
            if kind == "batch":
                _, batch, faces, ended = item
                self._score(batch, faces)
                for i in ended:
                    self.streams[i].finish()

    def _score(self, batch: list[tuple[int, Frame]], faces: list[list[Face]]) -> None:
        if not batch:
            return
        crops = [face.crop for found in faces for face in found]
        keys = [f"{i}/{frame.index}#{j}" for (i, frame), found in zip(batch, faces) for j in range(len(found))]
        qualities = iter(self.gate.scorer.score_crops(crops, keys) if crops else [])
        for (i, frame), found in zip(batch, faces):
            self.streams[i].frame(frame, found, [float(next(qualities)) for _ in found])

    def _finish(self) -> None:
        for stream in self.streams:
            stream.finish()

    def _summary(self, elapsed: float, cpu: float, interrupted: bool) -> dict:
        parts = [s.summary(elapsed) for s in self.streams]
        totals = {k: sum(p[k] for p in parts) for k in (
            "frames_read", "frames_processed", "frames_dropped", "frames_unreadable", "frames_lost",
            "frames_unprocessed", "reconnects", "outages", "faces", "tracks", "accepted", "rejected")}
        lat = np.concatenate([s.latencies for s in self.streams]) if self.streams else np.zeros(0)
        stream_lat = np.concatenate([s.stream_latencies for s in self.streams]) if self.streams else np.zeros(0)
        read_cpu = sum(r.cpu_seconds() for r in self.readers)
        return {"event": "summary", "time": round(time.time(), 3), **totals, "seconds": round(elapsed, 3),
                "frames_per_s": round(totals["frames_processed"] / elapsed, 2) if elapsed > 0 else None,
                **_percentiles("latency_ms", lat), **_percentiles("stream_latency_ms", stream_lat),
                "scale": self.gate.scale, "threshold": self.gate.threshold, "interrupted": interrupted,
                "cpu_seconds": {"read": round(read_cpu, 3), "detect": round(self.detect_cpu, 3),
                                "process": round(cpu, 3)},
                "errors": [e for p in parts for e in p["errors"]], "streams": parts}


class _Stream:
    """One stream's tracker, best shots, counters, latencies and video writer."""

    def __init__(self, gate: Gate, emit: _Emitter, index: int, name: str, reader: FrameReader, several: bool):
        self.gate, self.emit, self.index, self.name, self.reader = gate, emit, index, name, reader
        self.tracker = IouTracker(gate.min_iou, gate.max_missed)
        self.best: dict[int, _Best] = {}
        self.latencies: list[float] = []
        self.stream_latencies: list[float] = []
        self.frames = self.faces = self.accepted = self.rejected = 0
        self.connection, self.size = 0, None  # of the last frame: a new connection or frame size ends every track
        self.outages_emitted = 0
        self.video = None
        self.video_path = gate.video_out
        if gate.video_out is not None and several:
            self.video_path = gate.video_out.with_name(f"{gate.video_out.stem}.s{index}{gate.video_out.suffix}")
        self.prefix = f"s{index}_" if several else ""

    def frame(self, frame: Frame, faces: list[Face], qualities: list[float]) -> None:
        self.outages()
        self._continuity(frame)
        ids, ended = self.tracker.update([face.box for face in faces], frame.index)
        for track in ended:
            self._end(track.id)
        gate, events = self.gate, []
        for face, tid, q in zip(faces, ids, qualities):
            best = self.best.get(tid)
            if best is None or (np.isfinite(q) and not q <= best.quality):
                best = _Best(q, frame.index, face.box, face.crop, best.faces if best else 0)
                self.best[tid] = best
            best.faces += 1
            events.append({"event": "face", "stream": self.index, "time": round(frame.wall_time, 3),
                           "pts": _round(frame.pts), "captured": _round(frame.captured, 3), "frame": frame.index,
                           "track": tid, "box": [int(v) for v in face.box], "quality": _round(q),
                           "score": _score(gate.score_of(q)), "decision": gate.decide(q)})
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
        if self.video_path is not None:
            self._annotate(frame, events)

    def _continuity(self, frame: Frame) -> None:
        """A frame from a new connection (after an outage) or of another size ends every track: the boxes of
        the frames before it are not comparable with its own."""
        size = frame.image.shape[1], frame.image.shape[0]
        if self.size is not None and (frame.connection != self.connection or size != self.size):
            for track in self.tracker.finish():
                self._end(track.id)
            if size != self.size:
                self.emit({"event": "resolution", "stream": self.index, "time": round(frame.wall_time, 3),
                           "frame": frame.index, "width": size[0], "height": size[1], "previous": list(self.size)})
        self.connection, self.size = frame.connection, size

    def outages(self) -> None:
        """Emit the outage records the source completed since the last call."""
        records = self.reader.stats.outages
        while self.outages_emitted < len(records):
            self.emit({**records[self.outages_emitted], "stream": self.index})
            self.outages_emitted += 1

    def _end(self, tid: int) -> None:
        best = self.best.pop(tid, None)
        if best is None:
            return
        gate = self.gate
        decision = gate.decide(best.quality)
        self.accepted += decision == "accept"
        self.rejected += decision == "reject"
        path = None
        if gate.best_dir is not None:
            import cv2

            path = str(gate.best_dir / f"{self.prefix}track{tid:05d}_frame{best.frame:06d}.png")
            try:
                written = cv2.imwrite(path, np.ascontiguousarray(best.crop[..., ::-1]))
            except cv2.error:
                written = False
            if not written:
                raise FiqaError(f"cannot write the best shot {path}")
        self.emit({"event": "track_end", "stream": self.index, "time": round(time.time(), 3), "track": tid,
                   "faces": best.faces, "best_frame": best.frame, "best_box": [int(v) for v in best.box],
                   "best_quality": _round(best.quality), "best_score": _score(gate.score_of(best.quality)),
                   "decision": decision, "best_shot": path})

    def finish(self) -> None:
        """End every track (the stream ended, or the run did) and report the outages completed by then."""
        for track in self.tracker.finish():
            self._end(track.id)
        self.outages()

    def _annotate(self, frame: Frame, events: list[dict]) -> None:
        import cv2

        image = np.ascontiguousarray(frame.image.copy())
        if self.video is None:
            fourcc = "mp4v" if self.video_path.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"
            self.video_path.parent.mkdir(parents=True, exist_ok=True)
            self.video_size = (image.shape[1], image.shape[0])
            self.video = cv2.VideoWriter(str(self.video_path), cv2.VideoWriter_fourcc(*fourcc), 25.0,
                                         self.video_size)
            if not self.video.isOpened():
                hint = " (try a .avi file)" if self.video_path.suffix.lower() != ".avi" else ""
                raise FiqaError(f"OpenCV cannot write the video {self.video_path}{hint}")
        for e in events:
            colour = (0, 200, 0) if e["decision"] == "accept" else (0, 0, 230)
            x0, y0, x1, y1 = e["box"]
            cv2.rectangle(image, (x0, y0), (x1, y1), colour, 2)
            label = f"#{e['track']} " + ("-" if e["score"] is None else f"{e['score']:.3g}")
            cv2.putText(image, label, (x0, max(y0 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
        if (image.shape[1], image.shape[0]) != self.video_size:  # a resolution change: the video keeps its size
            image = cv2.resize(image, self.video_size, interpolation=cv2.INTER_AREA)
        self.video.write(image)

    def summary(self, elapsed: float) -> dict:
        stats: SourceStats = self.reader.stats
        return {"stream": self.index, "source": self.name, "frames_read": stats.read,
                "frames_processed": self.frames, "frames_dropped": stats.dropped,
                "frames_unreadable": stats.unreadable, "frames_lost": stats.frames_lost,
                "frames_unprocessed": max(0, stats.read - self.frames - stats.dropped),
                "reconnects": stats.reconnects, "outages": len(stats.outages), "faces": self.faces,
                "tracks": self.accepted + self.rejected, "accepted": self.accepted, "rejected": self.rejected,
                "frames_per_s": round(self.frames / elapsed, 2) if elapsed > 0 else None,
                **_percentiles("latency_ms", np.asarray(self.latencies)),
                **_percentiles("stream_latency_ms", np.asarray(self.stream_latencies)),
                "errors": list(stats.errors)}

    def close(self) -> None:
        if self.video is not None:
            self.video.release()


def _percentiles(name: str, values: np.ndarray) -> dict:
    if len(values) == 0:
        return {f"{name}_p50": None, f"{name}_p99": None}
    return {f"{name}_p50": round(float(np.percentile(values, 50)), 1),
            f"{name}_p99": round(float(np.percentile(values, 99)), 1)}


def _score(value: float | int | None) -> float | int | None:
    return value if value is None or isinstance(value, int) else _round(value)


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)
