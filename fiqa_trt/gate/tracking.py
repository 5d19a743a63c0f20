"""A simple IoU tracker for the quality gate: face boxes of consecutive frames linked into tracks.

Greedy matching: every (track, detection) pair with IoU >= `min_iou` is considered, highest IoU first, and each
track and each detection is used at most once. An unmatched detection starts a new track (ids count up from 0);
a track left unmatched in more than `max_missed` processed frames in a row ends. No motion model: it suits faces
that move little between processed frames (keep `max_missed` small when frames are dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

Box = tuple[float, float, float, float]  # left, top, right, bottom


def iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    id: int
    box: Box
    first_frame: int
    last_frame: int
    hits: int = 1
    missed: int = 0


class IouTracker:
    def __init__(self, min_iou: float = 0.3, max_missed: int = 5):
        self.min_iou, self.max_missed = min_iou, max_missed
        self.active: dict[int, Track] = {}
        self._next_id = 0

    def update(self, boxes: list[Box], frame_index: int) -> tuple[list[int], list[Track]]:
        """Match this frame's boxes: returns (the track id of each box, in order; the tracks that ended)."""
        pairs = sorted(((iou(t.box, b), tid, j) for tid, t in self.active.items() for j, b in enumerate(boxes)),
                       reverse=True)
        ids: list[int | None] = [None] * len(boxes)
        used: set[int] = set()
        for score, tid, j in pairs:
            if score < self.min_iou:
                break
            if tid in used or ids[j] is not None:
                continue
            used.add(tid)
            ids[j] = tid
            track = self.active[tid]
            track.box, track.last_frame, track.hits, track.missed = boxes[j], frame_index, track.hits + 1, 0
        for j, box in enumerate(boxes):
            if ids[j] is None:
                tid, self._next_id = self._next_id, self._next_id + 1
                self.active[tid] = Track(tid, box, frame_index, frame_index)
                used.add(tid)
                ids[j] = tid
        ended = []
        for tid in list(self.active):
            if tid not in used:
                track = self.active[tid]
                track.missed += 1
                if track.missed > self.max_missed:
                    ended.append(self.active.pop(tid))
        return ids, ended  # type: ignore[return-value]

    def finish(self) -> list[Track]:
        """End every active track (end of the stream)."""
        ended, self.active = list(self.active.values()), {}
        return ended
