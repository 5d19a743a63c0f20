"""Frame sources for the quality gate: what SOURCE names, reading it, and the reader thread that never waits on
scoring.

- SOURCE: a webcam index (`0`) or a video file (read with OpenCV's VideoCapture), a network URL (`rtsp://`,
  `http(s)://`, ...: the gate reads it with gate.network, PyAV; `CaptureSource` can also read one with OpenCV,
  without timestamps or timeouts), or a folder of frames (image files in sorted order, hidden files skipped).
- Unreadable frames (a frame file OpenCV cannot decode, a video frame that fails to decode before the end of the
  file) are skipped and counted.
- Network URLs in `CaptureSource`: a failed read is a dropped connection; the source reopens it with exponential
  backoff (0.5 s, 1 s, 2 s, ... capped at 30 s) and gives up after `max_reconnects` failed attempts in a row.
- `FrameReader` opens and reads one source in a thread of its own into a bounded queue (the gate runs one per
  stream, so a stream that is slow to open, stalls or reconnects holds up no other). Drop policy `oldest` (the
  default for cameras and URLs): when the queue is full, the oldest queued frame is dropped and counted, so the
  consumer always gets the freshest frames and reading never blocks. Policy `none` (the default for files and
  folders, which are not live): the reader waits for room, so every frame is processed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from fiqa_trt.files import IMAGE_SUFFIXES
from fiqa_trt.errors import FiqaError, NothingDone

log = logging.getLogger("fiqa_trt")
DROP_POLICIES = ("oldest", "none")


@dataclass
class Frame:
    index: int  # position in the source (frames skipped as unreadable keep their index)
    image: np.ndarray  # (H, W, 3) uint8, BGR (OpenCV order)
    wall_time: float  # time.time() when it was read
    read_at: float  # time.perf_counter() when it was read (for latency)
    pts: float | None = None  # position in the stream, seconds, where the source knows it
    captured: float | None = None  # the camera's wall-clock time of the frame, where the stream tells it
    connection: int = 0  # network streams: which connection (0, then 1 after the first reconnection, ...)


@dataclass
class SourceStats:
    read: int = 0
    unreadable: int = 0
    dropped: int = 0
    reconnects: int = 0
    frames_lost: int = 0  # network streams: frames missing within a connection and sent while it was down
    outages: list[dict] = field(default_factory=list)  # network streams: one record per outage (gate.network)
    errors: list[str] = field(default_factory=list)


def kind_of(source: str) -> str:
    """'camera', 'url', 'folder' or 'file' (FiqaError when SOURCE is none of them)."""
    if source.isdigit():
        return "camera"
    if "://" in source:
        return "url"
    path = Path(source)
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "file"
    raise FiqaError(f"source not found: {source} (give a webcam index, a URL, a video file or a folder of frames)")


class FolderSource:
    """A folder of frame images, read in sorted order."""

    def __init__(self, folder: str, fps: float = 25.0):
        root = Path(folder)
        self.paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                            and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not self.paths:
            raise FiqaError(f"the folder {folder} holds no image files")
        self.fps, self.stats = fps, SourceStats()

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        import cv2

        for i, path in enumerate(self.paths):
            if stop.is_set():
                return
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                self.stats.unreadable += 1
                log.debug("unreadable frame %s", path)
                continue
            self.stats.read += 1
            yield Frame(i, image, time.time(), time.perf_counter(), i / self.fps)

    def close(self) -> None:
        pass


class CaptureSource:
    """A webcam, a network stream or a video file through cv2.VideoCapture.

    `open_capture(target)` returns an object with `isOpened()`, `read()`, `get(prop)`, `release()` (a
    cv2.VideoCapture by default; tests pass a fake one to simulate dropped connections)."""

    def __init__(self, source: str, open_capture: Callable | None = None, max_reconnects: int = 10,
                 backoff: tuple[float, float] = (0.5, 30.0), sleep: Callable[[float], None] = time.sleep):
        import cv2

        self.source, self.kind = source, kind_of(source) if open_capture is None else (
            "url" if "://" in source else "camera" if source.isdigit() else "file")
        self._target = int(source) if self.kind == "camera" else source
        self._open = open_capture or (lambda target: cv2.VideoCapture(target))
        self.max_reconnects, self.backoff, self._sleep = max_reconnects, backoff, sleep
        self.stats = SourceStats()
        self._cap = self._open(self._target)
        if not self._cap.isOpened():
            if self.kind == "file":  # it exists (kind_of): not a video OpenCV can read, no frame to process
                raise NothingDone(f"no frame could be read from {source}: OpenCV cannot open it as a video")
            raise FiqaError(f"cannot open {source}")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0) or 25.0
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    def _reconnect(self, stop: threading.Event) -> bool:
        delay = self.backoff[0]
        for attempt in range(1, self.max_reconnects + 1):
            if stop.is_set():
                return False
            log.warning("%s: connection lost, reconnecting in %.1f s (attempt %d of %d)", self.source, delay, attempt,
                        self.max_reconnects)
            self._sleep(delay)
            try:
                self._cap.release()
            except Exception:  # noqa: BLE001 - a broken capture may fail to release
                pass
            self._cap = self._open(self._target)
            if self._cap.isOpened():
                self.stats.reconnects += 1
                return True
            delay = min(delay * 2, self.backoff[1])
        self.stats.errors.append(f"gave up after {self.max_reconnects} reconnection attempts")
        return False

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        import cv2

        index, failures = 0, 0
        while not stop.is_set():
            ok, image = self._cap.read()
            if ok and image is not None:
                failures = 0
                self.stats.read += 1
                pts = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if self.kind == "file" else None
                if image.ndim == 2:
                    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
                yield Frame(index, image[..., :3], time.time(), time.perf_counter(), pts)
                index += 1
                continue
            if self.kind == "url":
                if not self._reconnect(stop):
                    return
                continue
            if self.kind == "file" and index < self.frame_count - 1 and failures < 25:
                failures += 1  # a frame that fails to decode before the end: skip it
                self.stats.unreadable += 1
                index += 1
                continue
            return  # end of file, or a camera that stopped

    def close(self) -> None:
        self._cap.release()


def open_source(source: str, fps: float = 25.0, **capture_options) -> FolderSource | CaptureSource:
    kind = kind_of(source)
    if kind == "folder":
        return FolderSource(source, fps)
    return CaptureSource(source, **capture_options)


class FrameReader:
    """Reads a source in a thread into a bounded queue (see the module docstring for the drop policies). `source`:
    an opened source, or a function that opens one (called in the thread, so a slow or failing open holds up no
    other stream; a failure ends the stream with `open_error` set and its message in the stats' errors).

    Take the frames with `take(n)` (never waits: for a consumer serving several readers, woken by `wake`, an Event
    the reader sets whenever it queues a frame or ends) or by iterating (waits). `stats` counts frames read,
    unreadable, dropped and reconnections; `cpu_seconds()` is the CPU time of the reading thread (demuxing,
    decoding, colour conversion)."""

    def __init__(self, source, queue_size: int = 8, drop: str = "oldest", wake: threading.Event | None = None,
                 name: str = "fiqa-gate-read"):
        if drop not in DROP_POLICIES:
            raise FiqaError(f"unknown drop policy '{drop}'; use one of: {', '.join(DROP_POLICIES)}")
        if queue_size < 1:
            raise FiqaError("the frame queue needs room for at least one frame")
        self.drop, self.wake = drop, wake
        opened = hasattr(source, "frames")
        self.source = source if opened else None
        self._opener = None if opened else source
        self._stats = source.stats if opened else SourceStats()
        self.open_error: BaseException | None = None
        self.ended = False  # the consumer has seen the end of the stream
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._cpu: float | None = None
        self._thread = threading.Thread(target=self._read, daemon=True, name=name)
        self._thread.start()

    @property
    def stats(self) -> SourceStats:
        return self.source.stats if self.source is not None else self._stats

    def _put(self, item) -> None:
        try:
            if self.drop == "oldest" and item is not None:
                with self._lock:
                    while True:
                        try:
                            self._queue.put_nowait(item)
                            return
                        except queue.Full:
                            try:
                                self._queue.get_nowait()
                                self.stats.dropped += 1
                            except queue.Empty:
                                pass
            while not self._stop.is_set():  # policy none, and the end-of-stream marker: wait for room
                try:
                    self._queue.put(item, timeout=0.1)
                    return
                except queue.Full:
                    pass
        finally:
            if self.wake is not None:
                self.wake.set()

    def _read(self) -> None:
        try:
            if self.source is None:
                try:
                    self.source = self._opener()
                except FiqaError as exc:
                    self.open_error = exc
                    self._stats.errors.append(str(exc))
                    return
            for frame in self.source.frames(self._stop):
                self._put(frame)
        except Exception as exc:  # noqa: BLE001 - reported to the consumer as the end of the stream
            self.stats.errors.append(f"{type(exc).__name__}: {exc}")
            log.warning("reading stopped: %s", exc)
        finally:
            self._cpu = time.thread_time()
            self._put(None)

    def cpu_seconds(self) -> float:
        if self._cpu is not None:
            return self._cpu
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(self._thread.ident))
        except (OSError, TypeError, AttributeError):
            return self._cpu or 0.0

    def backlog(self) -> int:
        """Frames read and waiting for the consumer."""
        return self._queue.qsize()

    def take(self, n: int) -> list[Frame]:
        """Up to n queued frames, oldest first, without waiting; sets `ended` when the end of the stream is reached."""
        frames: list[Frame] = []
        while len(frames) < n and not self.ended:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self.ended = True
            else:
                frames.append(item)
        return frames

    def __iter__(self) -> Iterator[Frame]:
        while not self.ended:
            item = self._queue.get()
            if item is None:
                self.ended = True
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.source is not None:
            self.source.close()


class IterableSource:
    """Frames from any iterable (a list, a generator), as a source a FrameReader reads (for `Gate.process`)."""

    def __init__(self, frames):
        self._frames, self.stats = frames, SourceStats()

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        for frame in self._frames:
            if stop.is_set():
                return
            self.stats.read = max(self.stats.read, frame.index + 1)
            yield frame

    def close(self) -> None:
        pass
