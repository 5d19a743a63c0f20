"""The client side of the RTSP test camera (rtsp_camera.py beside this file): finds the Python that has GStreamer's
RTSP server, writes clips, starts, kills and restarts the camera process, and reads what it sent (its timeline
indices). Used by tests/test_gate_rtsp.py and the gate's RTSP benchmarks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

CAMERA = Path(__file__).with_name("rtsp_camera.py")
_CHECK = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
          "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
          "assert all(Gst.ElementFactory.find(e) for e in ('appsrc', 'videoconvert', 'x264enc', 'rtph264pay'))")


def gst_python() -> str | None:
    """The interpreter whose `gi` has GStreamer's RTSP server and the elements the camera uses (python3-gi installs
    `gi` for Debian's own Python, /usr/bin/python3), or None."""
    for candidate in (os.environ.get("FIQA_GST_PYTHON"), "/usr/bin/python3", shutil.which("python3")):
        if candidate and Path(candidate).is_file():
            ok = subprocess.run([candidate, "-c", _CHECK], capture_output=True, timeout=60, env=_env()).returncode
            if ok == 0:
                return candidate
    return None


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["GST_DEBUG"] = "0"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_clip(path: Path, frames: list[np.ndarray]) -> Path:
    """A raw BGR clip for the camera: a JSON header line, then the frames (all of one size)."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write((json.dumps({"width": w, "height": h, "count": len(frames)}) + "\n").encode())
        for frame in frames:
            f.write(np.ascontiguousarray(frame, np.uint8).tobytes())
    return path


def write_h264_clip(path: Path, frames: list[np.ndarray], fps: float = 25.0, keyint: int = 25) -> Path:
    """A clip the camera sends without encoding: the frames (BGR, one size) encoded once with x264 (PyAV: the
    `stream` extra), constrained baseline, zero latency, a key frame every `keyint` frames with the parameter sets
    before it; a JSON header line (codec, size, count, each access unit's size, the key frames), then the access
    units (Annex B). `count` should be a multiple of `keyint`, so that the clip loops onto a key frame."""
    from fractions import Fraction

    import av

    h, w = frames[0].shape[:2]
    context = av.CodecContext.create("libx264", "w")
    context.width, context.height, context.pix_fmt = w, h, "yuv420p"
    context.time_base = Fraction(1, int(fps))
    context.framerate = Fraction(int(fps), 1)
    context.profile = "Constrained Baseline"
    context.options = {"preset": "veryfast", "tune": "zerolatency", "crf": "23",
                       "threads": "1",
                       "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:repeat-headers=1:bframes=0"}
    units, keyframes = [], []
    for i, image in enumerate(frames + [None]):
        frame = None
        if image is not None:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image, np.uint8), format="bgr24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = i
        for packet in context.encode(frame):
            if packet.is_keyframe:
                keyframes.append(len(units))
            units.append(bytes(packet))
    if len(units) != len(frames):
        raise RuntimeError(f"x264 gave {len(units)} access units for {len(frames)} frames")
    with open(path, "wb") as f:
        header = {"codec": "h264", "width": w, "height": h, "count": len(units), "sizes": [len(u) for u in units],
                  "keyframes": keyframes}
        f.write((json.dumps(header) + "\n").encode())
        for unit in units:
            f.write(unit)
    return path


class RtspCamera:
    """One camera process at rtsp://127.0.0.1:PORT/cam, restartable on the same port and timeline."""

    def __init__(self, python: str, clip: Path, *extra: str, fps: float = 25.0, port: int | None = None):
        self.python, self.clip, self.extra, self.fps = python, clip, list(extra), fps
        self.port = port or free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.epoch = time.time()
        self.runs: list[list[int]] = []  # per start: the timeline indices sent, in order (all connections)
        self.events: list[str] = []
        self.proc: subprocess.Popen | None = None
        self._cond = threading.Condition()

    def start(self, *extra: str) -> "RtspCamera":
        args = [self.python, str(CAMERA), "--port", str(self.port), "--clip", str(self.clip), "--epoch",
                repr(self.epoch), "--fps", str(self.fps), *self.extra, *extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
        sent: list[int] = []
        self.runs.append(sent)
        threading.Thread(target=self._pump, args=(self.proc, sent), daemon=True).start()
        self.wait_for(lambda: any(e.startswith("listening") for e in self.events[-50:]) or self.proc.poll()
                      is not None, 30)
        if self.proc.poll() is not None:
            raise RuntimeError("the RTSP camera did not start: " + "\n".join(self.events[-20:]))
        return self

    def _pump(self, proc: subprocess.Popen, sent: list[int]) -> None:
        for line in proc.stdout:
            line = line.strip()
            with self._cond:
                if line.startswith("sent "):
                    sent.append(int(line.split()[1]))
                else:
                    self.events.append(line)
                self._cond.notify_all()

    def wait_for(self, predicate, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def sent(self, run: int = -1) -> list[int]:
        with self._cond:
            return list(self.runs[run])

    def cpu_seconds(self) -> float | None:
        """The CPU seconds the camera process reported when its stream ended (`--end-after`), else None."""
        with self._cond:
            lines = [e for e in self.events if e.startswith("cpu ")]
        return float(lines[-1].split()[1]) if lines else None

    def kill(self) -> None:
        """SIGKILL: the server dies without closing anything (its sockets close with the process)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "RtspCamera":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
