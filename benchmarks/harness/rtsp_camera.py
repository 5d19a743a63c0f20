"""A live RTSP camera on 127.0.0.1 for the stream tests and benchmarks: GStreamer's RTSP server (Debian's
gir1.2-gst-rtsp-server-1.0), run as its own process by the interpreter that python3-gi serves (/usr/bin/python3).
It imports nothing from fiqa_trt or the venv: only the standard library and GStreamer.

    /usr/bin/python3 benchmarks/harness/rtsp_camera.py --port 8554 --clip frames.raw --epoch T0 [--fps 25]
        [--switch-after K:other.raw] [--stall-after K] [--end-after K] [--never-start]

The camera has a timeline: frame n is captured at wall time T0 + n / fps (`--epoch` T0, seconds since the Unix
epoch; a camera restarted with the same T0 after a kill goes on with the timeline where it would be). Each client
connection (its own media) starts at the timeline frame of the moment it starts playing and sends frames paced to
the timeline (the pipeline clock is the wall clock, a frame's running time its capture time), H.264 (x264, zero
latency, a key frame every second, parameter sets with every key frame) over RTP, with RTCP sender reports every
half second. Frame n's picture is frame n mod the clip's length (a raw BGR file: one JSON header line {"width",
"height", "count"}, then the frames). A clip already encoded (header {"codec": "h264", "width", "height", "count",
"sizes", "keyframes"}, then each frame's H.264 access unit, Annex B, parameter sets with each key frame) is sent as
it is, with no encoding in the camera (many cameras on one machine cost little); a connection then starts at the
first timeline frame that is a key frame of the clip.

Faults: `--switch-after K:FILE`: the first connection switches to another clip (another size: a resolution
change) after K frames; `--stall-after K`: the first connection sends K frames and then nothing more, keeping the
connection open (a camera that hangs; later connections are served as usual); `--end-after K`: once the process
has sent K frames (all connections together), the end of the stream, and the process exits (the camera goes
away); `--never-start`: no frame is ever sent (so DESCRIBE never completes: a stream that never starts). Killing
the process (SIGKILL) is the test's other fault.

Lines on standard output, flushed: `listening PORT`, `first N T` when a connection sends its first frame (timeline
index, seconds since T0), `sent N` for each frame sent, `stalled N T`, `cpu S` (the process's CPU seconds) and
`ended N` (N: the last frame sent).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Clip:
    def __init__(self, path: str):
        with open(path, "rb") as f:
            header = json.loads(f.readline())
            self.width, self.height, self.count = header["width"], header["height"], header["count"]
            self.codec = header.get("codec", "raw")
            sizes = header.get("sizes") or [self.width * self.height * 3] * self.count
            self.frames = [f.read(size) for size in sizes]
            self.keyframes = set(header.get("keyframes", range(self.count)))


class Camera:
    def __init__(self, args):
        self.args = args
        self.connections = 0
        self.sent_total = 0  # frames sent by this process, all connections
        self.clip = Clip(args.clip)
        self.switch = None
        if args.switch_after:
            after, path = args.switch_after.split(":", 1)
            self.switch = (int(after), Clip(path))

    def clip_at(self, connection: int, sent: int) -> Clip:
        if connection == 0 and self.switch is not None and sent >= self.switch[0]:
            return self.switch[1]
        return self.clip

    def attach(self, appsrc) -> None:
        """Feed one connection's appsrc from a thread paced to the timeline."""
        number, self.connections = self.connections, self.connections + 1
        threading.Thread(target=self._feed, args=(appsrc, number), daemon=True).start()

    def _feed(self, appsrc, connection: int) -> None:
        fps, epoch = self.args.fps, self.args.epoch
        stop = threading.Event()
        if self.args.never_start:
            stop.wait()
            return
        while appsrc.get_clock() is None:  # wait for the media to play
            time.sleep(0.005)
        n = max(0, math.ceil((time.time() - epoch) * fps))
        while (n % self.clip.count) not in self.clip.keyframes:  # an encoded clip starts at a key frame
            n += 1
        first, caps, sent = True, None, 0
        while True:
            if connection == 0 and self.args.stall_after is not None and sent == self.args.stall_after:
                say(f"stalled {n - 1} {time.time() - epoch:.3f}")
                stop.wait()
                return
            if self.args.end_after is not None and self.sent_total == self.args.end_after:
                appsrc.emit("end-of-stream")
                time.sleep(0.5)  # the last frames and the RTCP BYE leave
                times = os.times()
                say(f"cpu {times.user + times.system:.3f}")
                say(f"ended {n - 1}")
                os._exit(0)
            capture = epoch + n / fps
            delay = capture - time.time()
            if delay > 0:
                time.sleep(delay)
            # the pipeline clock is the wall clock: the frame's running time is its capture time minus the base time
            running = round(capture * Gst.SECOND) - appsrc.get_base_time()
            clip = self.clip_at(connection, sent)
            if caps is None or caps[0] is not clip:
                kind = ("video/x-h264,stream-format=byte-stream,alignment=au,profile=constrained-baseline"
                        if clip.codec == "h264" else "video/x-raw,format=BGR")
                caps = (clip, Gst.Caps.from_string(f"{kind},width={clip.width},height={clip.height},"
                                                   f"framerate={int(fps)}/1"))
                appsrc.set_property("caps", caps[1])
            buf = Gst.Buffer.new_wrapped(clip.frames[n % clip.count])
            buf.pts, buf.duration = max(running, 0), int(Gst.SECOND / fps)
            if appsrc.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                return
            if first:
                say(f"first {n} {time.time() - epoch:.3f}")
                first = False
            say(f"sent {n}")
            n += 1
            sent += 1
            self.sent_total += 1


class Factory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, camera: Camera):
        super().__init__()
        self.camera = camera
        self.set_shared(False)
        self.set_latency(0)
        clock = Gst.SystemClock.obtain()
        clock.set_property("clock-type", Gst.ClockType.REALTIME)
        self.set_clock(clock)

    def do_create_element(self, url):
        if self.camera.clip.codec == "h264":  # already encoded: payloaded as it is
            launch = ("( appsrc name=cam is-live=true format=time do-timestamp=false ! "
                      "rtph264pay name=pay0 pt=96 config-interval=0 )")  # the clip has its parameter sets
        else:
            launch = ("( appsrc name=cam is-live=true format=time do-timestamp=false ! videoconvert ! "
                      "video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 "
                      "threads=1 ! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=-1 )")
        return Gst.parse_launch(launch)

    @staticmethod
    def _prepared(media):
        # sender reports every half second (the client learns capture times soon after it connects)
        for i in range(media.n_streams()):
            session = media.get_stream(i).get_rtpsession()
            if session is not None and session.find_property("rtcp-min-interval") is not None:
                session.set_property("rtcp-min-interval", 500 * Gst.MSECOND)

    def do_configure(self, media):
        element = media.get_element()
        appsrc = element.get_by_name_recurse_up("cam")
        media.connect("prepared", self._prepared)
        self.camera.attach(appsrc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--clip", required=True)
    ap.add_argument("--switch-after")
    ap.add_argument("--epoch", type=float, default=None)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--stall-after", type=int, default=None)
    ap.add_argument("--end-after", type=int, default=None)
    ap.add_argument("--never-start", action="store_true")
    args = ap.parse_args()
    args.epoch = time.time() if args.epoch is None else args.epoch
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory("/cam", Factory(Camera(args)))
    if server.attach(None) == 0:
        say(f"error: cannot listen on 127.0.0.1:{args.port}")
        sys.exit(1)
    say(f"listening {args.port}")
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
