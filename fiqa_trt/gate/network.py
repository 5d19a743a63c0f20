"""Network camera streams for the quality gate (RTSP, HTTP, ... URLs) read with PyAV (FFmpeg): per-frame timestamps,
transport, open and read timeouts, reconnection with backoff, and the accounting of each outage.

- Transport (RTSP): `tcp` (RTP interleaved in the RTSP connection; the default: no loss, works through NAT) or `udp`.
- Open timeout: the first connection must deliver its stream description within `open_timeout` seconds, else
  `StreamUnavailable` (the gate exits with 1: nothing could be done). Read timeout: no packet for `read_timeout`
  seconds on an open connection (a camera that hangs without closing) counts as a lost connection.
- A lost connection (closed by the server, a read error, a read timeout) is reopened with exponential backoff
  (0.5 s, 1 s, 2 s, ... capped at 30 s); after `max_reconnects` failed attempts in a row the stream ends.
- Timestamps of each frame: `pts`, its presentation time in seconds on the connection's stream clock (it starts
  again on each connection), and `captured`, the camera's wall-clock time of the frame, from the RTCP sender
  reports (FFmpeg's producer reference time): None until the connection's first sender report, then known for
  every frame of that connection (the pts is continuous within a connection).
- Frames lost within a connection (a jump of the pts by more than one frame interval, or a first frame whose pts
  is past the connection's first packet: packets lost over UDP, frames the decoder could not rebuild) are counted
  in `stats.frames_lost` too; a loss at the very end of a connection cannot be seen.
- Each outage (a lost connection up to the first frame of the next) becomes a record in `stats.outages`: its
  cause, the frames before and after it, the gap between the camera times of the last frame before and the first
  after, and the frames lost in it: round(gap * fps) - 1. The pts restart on each connection, so the gap is
  measured on arrival times, each connection's frames placed by their pts at the least delay seen on that
  connection (frames that waited in a buffer, such as the burst FFmpeg reads while it opens a stream, do not
  move it). The record is complete once the new connection has delivered SETTLE_FRAMES frames (or the stream
  ends). The sender reports are not used for it: GStreamer's carry an offset that differs between connections by
  up to one frame interval (measured against the test camera's own timeline), too coarse to count frames.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from dataclasses import dataclass
from typing import Iterator

from fiqa_trt.gate.streams import Frame, SourceStats
from fiqa_trt.errors import FiqaError, require

log = logging.getLogger("fiqa_trt")
TRANSPORTS = ("tcp", "udp")
SETTLE_FRAMES = 50  # frames of a new connection before its outage is measured (its least delay has settled)


class StreamUnavailable(FiqaError):
    """The stream could not be opened (nothing answered, or no stream within the open timeout)."""


@dataclass
class _Edge:
    """A frame at the edge of an outage: its index, arrival wall time, pts, and connection."""

    index: int
    arrived: float
    pts: float
    connection: int


class _Connection:
    """One connection's clocks: the pts -> camera wall-clock anchor from the first sender report, and the least
    (arrival time - pts) over its frames (the arrival of a frame that waited least on the way)."""

    def __init__(self, number: int):
        self.number, self.anchor = number, None  # anchor: (pts, captured)
        self.first: _Edge | None = None
        self.last: _Edge | None = None
        self.frames, self.offset = 0, float("inf")

    def captured(self, pts: float) -> float | None:
        return None if self.anchor is None else self.anchor[1] + (pts - self.anchor[0])

    def add(self, edge: _Edge) -> None:
        self.first = self.first or edge
        self.last = edge
        self.frames += 1
        self.offset = min(self.offset, edge.arrived - edge.pts)

    def arrival(self, edge: _Edge) -> float:
        """When the frame would have arrived with the least delay seen on this connection."""
        return edge.pts + self.offset


class NetworkSource:
    """A network stream through PyAV; the first connection is opened here (StreamUnavailable when it cannot be).
    `frames(stop)` yields `streams.Frame`s with pts and capture times until the stream ends or `stop` is set."""

    kind = "url"

    def __init__(self, url: str, transport: str = "tcp", open_timeout: float = 10.0, read_timeout: float = 5.0,
                 max_reconnects: int = 10, backoff: tuple[float, float] = (0.5, 30.0)):
        if transport not in TRANSPORTS:
            raise FiqaError(f"unknown transport '{transport}'; use tcp or udp")
        if not open_timeout > 0 or not read_timeout > 0:
            raise FiqaError("--open-timeout and --read-timeout must be > 0 seconds")
        self.av = require("av", "av", "stream")
        self.source, self.transport = url, transport
        self.open_timeout, self.read_timeout = open_timeout, read_timeout
        self.max_reconnects, self.backoff = max_reconnects, backoff
        self.stats = SourceStats()
        self.fps = 25.0
        self._index = 0  # frames received so far (the next frame's index)
        self._reading = False
        self._pending: dict | None = None  # the outage waiting for the new connection's clock
        self._connection = _Connection(0)
        self._container = self._open()

    # ---- connections ----

    def _open(self):
        av = self.av
        options = {"analyzeduration": "100000", "probesize": "100000"}  # start within 0.1 s of video
        if self.source.startswith("rtsp"):
            options["rtsp_transport"] = self.transport
        started = time.monotonic()
        try:
            container = av.open(self.source, options=options, timeout=(self.open_timeout, self.read_timeout))
        except (av.error.FFmpegError, OSError) as exc:
            # an interrupted open surfaces as ExitError or as whatever the demuxer made of the cut-off reply
            if isinstance(exc, av.error.ExitError) or time.monotonic() - started >= self.open_timeout:
                raise StreamUnavailable(f"cannot open {self.source}: no stream within the open timeout of "
                                        f"{self.open_timeout:g} s") from None
            raise StreamUnavailable(f"cannot open {self.source}: {_reason(exc)}") from None
        if not container.streams.video:
            container.close()
            raise StreamUnavailable(f"cannot open {self.source}: it has no video stream")
        stream = container.streams.video[0]
        context = stream.codec_context
        context.thread_count = 1  # no frame threading and low delay: a frame leaves the decoder with its packet
        context.flags |= av.codec.context.Flags.low_delay
        rate = stream.average_rate or stream.guessed_rate
        if rate:
            self.fps = float(rate)
        return container

    def _reconnect(self, stop: threading.Event) -> bool:
        delay = self.backoff[0]
        for attempt in range(1, self.max_reconnects + 1):
            log.warning("%s: connection lost, reconnecting in %.1f s (attempt %d of %d)", self.source, delay,
                        attempt, self.max_reconnects)
            if stop.wait(delay):
                return False
            try:
                self._container = self._open()
            except StreamUnavailable as exc:
                log.warning("%s", exc)
                delay = min(delay * 2, self.backoff[1])
                continue
            self.stats.reconnects += 1
            self._connection = _Connection(self._connection.number + 1)
            return True
        self.stats.errors.append(f"gave up after {self.max_reconnects} reconnection attempts")
        return False

    # ---- frames ----

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        self._reading = True
        try:
            while not stop.is_set():
                yield from self._connection_frames(stop)
                if stop.is_set():
                    return
                self._outage_begins(self._cause)
                if not self._reconnect(stop):
                    return
        finally:
            self._resolve(final=True)
            self._reading = False
            self.close()

    def _connection_frames(self, stop: threading.Event) -> Iterator[Frame]:
        """One connection's frames; sets `_cause` to why it ended."""
        av, container, conn = self.av, self._container, self._connection
        stream = container.streams.video[0]
        time_base = float(stream.time_base) if stream.time_base else 1 / 90000
        captured_at: dict[int, float] = {}
        self._cause = "closed by the server"
        last_pts, stalled = None, False
        try:
            packets = container.demux(stream)
            while not stalled:
                # A read that times out makes FFmpeg flush its parser first: the frame it held comes out as a packet
                # after read_timeout; the next read would wait read_timeout again before failing. So a read that
                # took read_timeout ends the connection after its packet.
                started = time.monotonic()
                packet = next(packets, None)
                if packet is None or stop.is_set():
                    return
                received = time.time()  # before decoding: the arrival time the outage accounting uses
                stalled = time.monotonic() - started >= self.read_timeout
                if packet.pts is not None:
                    wallclock = _producer_time(packet)
                    if wallclock is not None:
                        captured_at[packet.pts] = wallclock
                for decoded in packet.decode():
                    pts = decoded.pts * time_base if decoded.pts is not None else (
                        last_pts + 1 / self.fps if last_pts is not None else 0.0)
                    # frames missing within the connection (UDP loss, frames the decoder could not rebuild); the
                    # pts start at the connection's first packet, so a first frame after 0 had frames before it
                    missing = round((pts - last_pts) * self.fps) - 1 if last_pts is not None else round(pts * self.fps)
                    self.stats.frames_lost += max(0, missing)
                    last_pts = pts
                    wallclock = captured_at.pop(decoded.pts, None)
                    if wallclock is not None and conn.anchor is None:
                        conn.anchor = (pts, wallclock)
                    image = decoded.to_ndarray(format="bgr24")
                    now = time.time()
                    index = self._index
                    conn.add(_Edge(index, received, pts, conn.number))
                    self.stats.read += 1
                    if conn.frames >= SETTLE_FRAMES:
                        self._resolve()
                    yield Frame(index, image, now, time.perf_counter(), pts, captured=conn.captured(pts),
                                connection=conn.number)
                    self._index += 1
                    if len(captured_at) > 256:  # packets whose frames never came out
                        captured_at.clear()
            self._cause = f"no data for {self.read_timeout:g} s (read timeout)"
        except av.error.ExitError:
            self._cause = f"no data for {self.read_timeout:g} s (read timeout)"
        except (av.error.FFmpegError, OSError) as exc:
            self._cause = f"read error: {_reason(exc)}"
        finally:
            try:
                container.close()
            except (av.error.FFmpegError, OSError):
                pass

    # ---- outages ----

    def _outage_begins(self, cause: str) -> None:
        self._resolve(final=True)  # an earlier outage whose new connection never had a sender report
        conn = self._connection
        log.warning("%s: %s", self.source, cause)
        self._pending = {"cause": cause, "before": conn, "started": time.time()}

    def _resolve(self, final: bool = False) -> None:
        pending = self._pending
        if pending is None:
            return
        before, after = pending["before"], self._connection
        if after is before or after.first is None:  # no frame since the outage
            if final:
                self._pending = None
                self._record(pending, before.last, None)
            return
        if after.frames < SETTLE_FRAMES and not final:
            return
        self._pending = None
        last, first = before.last, after.first
        gap = after.arrival(first) - before.arrival(last) if last is not None else None
        self._record(pending, last, first, gap)

    def _record(self, pending: dict, last: _Edge | None, first: _Edge | None, gap: float | None = None) -> None:
        lost = max(0, round(gap * self.fps) - 1) if gap is not None else None
        outage = {"event": "outage", "time": round(time.time(), 3), "cause": pending["cause"],
                  "last_frame": last.index if last else None, "next_frame": first.index if first else None,
                  "gap_s": round(gap, 3) if gap is not None else None, "frames_lost": lost}
        self.stats.frames_lost += lost or 0
        self.stats.outages.append(outage)
        if gap is not None:
            log.warning("%s: outage of %.3f s, %d frames lost", self.source, gap, lost)

    def close(self) -> None:
        """Close the connection, unless frames() is still reading it in another thread (it closes it when it
        returns: closing a container under a read in progress is not safe)."""
        if self._reading:
            return
        try:
            self._container.close()
        except (self.av.error.FFmpegError, OSError, AttributeError):
            pass


def _producer_time(packet) -> float | None:
    """The camera's wall-clock time of a packet (seconds), from FFmpeg's producer reference time, if it has one."""
    try:
        for side in packet.iter_sidedata():
            if side.data_type == "prft":
                return struct.unpack("<q", bytes(side)[:8])[0] / 1e6
    except (AttributeError, ValueError, struct.error):
        return None
    return None


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)
