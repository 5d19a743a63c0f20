"""The dynamic batcher: images from any number of concurrent requests, gathered into batches for one scorer.

Requests put their images in a bounded queue (capacity in images, and a budget of decoded pixels over everything
queued or being scored) and await one future per image. The queue has two lanes by cost: small images (at most
SMALL_PIXELS, face crops) and large ones (photos). A single worker thread owns the scorer. A lane is ready when
`max_batch` images are queued there or `max_wait_s` has passed since its oldest image arrived; once one is, the
worker scores up to `max_batch` images of the lane whose turn it is, a batch of large ones holding at most
`batch_pixels` decoded pixels (at least one image), and resolves the futures on the event loop. Small images have
the turn (taken at once, full or not) except right after a batch of them was taken while photos waited, so a small
request waits for at most one batch of photos however many are queued, and photos are never starved either. A request whose
client went away or whose time ran out withdraws its images that are still queued. `drain()` stops the waiting:
what is queued is scored at once, then the worker ends.

`Retry-After` (a full queue, or a pixel budget spent) is estimated from the recent drain rate of each lane, over its
last batches (`reset_rate` forgets the warm-up's): small images at the images per second of scoring, large ones at
the decoded pixels per second (a photo costs what its pixels cost), plus what the oldest queued image still waits
for a fuller batch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from fiqa_trt.engine.inputs import Item

log = logging.getLogger("fiqa_trt")
SMALL_PIXELS = 1 << 20  # an image up to about 1 megapixel is small (a face crop is 12,544 at 112x112)
RATE_BATCHES = 16  # batches the drain rate is measured over


class QueueFull(Exception):
    def __init__(self, retry_after_s: int, reason: str = "the queue is full"):
        super().__init__(f"{reason}; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Draining(Exception):
    """The service is shutting down and takes no new images."""


@dataclass(eq=False)
class Job:
    item: Item
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    cost: int = 0  # decoded pixels
    enqueued: float = field(default_factory=time.monotonic)
    withdrawn: bool = False


def cost(item: Item) -> int:
    """Decoded pixels of an item (from its header)."""
    return item.size[0] * item.size[1] if item.size is not None else 0


class Batcher:
    """Gathers queued images into batches of up to `max_batch`, scored by `score_batch(items) -> results` (one
    result per item, in order) in one worker thread. `observe(batch_size, seconds, waits)` is told about each batch.
    `max_pixels`: the decoded pixels queued and being scored at most (None: no budget); `batch_pixels`: the decoded
    pixels of one batch of large images at most."""

    def __init__(self, score_batch: Callable[[list[Item]], list], max_batch: int = 64, max_wait_s: float = 0.005,
                 capacity: int = 1024, observe: Callable[[int, float, list[float]], None] | None = None,
                 max_pixels: int | None = None, batch_pixels: int = 16 * SMALL_PIXELS):
        if max_batch < 1 or capacity < 1:
            raise ValueError("max_batch and capacity must be at least 1")
        self.score_batch, self.max_batch, self.max_wait_s, self.capacity = score_batch, max_batch, max_wait_s, capacity
        self.observe, self.max_pixels, self.batch_pixels = observe, max_pixels, batch_pixels
        self._small: deque[Job] = deque()
        self._large: deque[Job] = deque()
        self._small_turn = True
        self._pixels = 0  # queued and being scored
        self._lock = threading.Condition()
        self._draining = False
        self._recent = {lane: deque(maxlen=RATE_BATCHES) for lane in ("small", "large")}  # (images, pixels, s)
        self._thread = threading.Thread(target=self._work, name="fiqa-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Images queued and not yet taken into a batch."""
        return len(self._small) + len(self._large)

    @property
    def pixels_in_flight(self) -> int:
        return self._pixels

    def rate(self, lane: str = "small") -> float | None:
        """Over the lane's recent batches: images scored per second of scoring (small), decoded pixels per second
        (large; the small lane's until a large batch has been scored); None before any batch."""
        recent = list(self._recent[lane])  # a copy taken at once: the worker appends meanwhile
        if not recent and lane == "large":
            recent = list(self._recent["small"])
        seconds = sum(r[2] for r in recent)
        done = sum(r[0 if lane == "small" else 1] for r in recent)
        return done / seconds if done and seconds > 0 else None

    def reset_rate(self) -> None:
        """Forget the batches so far (the warm-up's, which builds the pipeline)."""
        for recent in self._recent.values():
            recent.clear()

    def retry_after_s(self) -> int:
        """Seconds until the queue has drained at the recent drain rates (at least 1)."""
        queued = [q[0].enqueued for q in (self._small, self._large) if q]
        fill = max((0.0, *(t + self.max_wait_s - time.monotonic() for t in queued))) if queued else 0.0
        small, large = self.rate("small"), self.rate("large")
        drain = (len(self._small) / small if small else 0.0) + (
            sum(j.cost for j in list(self._large)) / large if large else 0.0)
        return max(1, math.ceil(fill + drain))

    def submit(self, items: list[Item]) -> list[Job]:
        """Queue the items of one request (all or none); call from the event loop. QueueFull past the capacity or
        the pixel budget (a request is always taken when nothing else is in flight)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._draining:
                raise Draining()
            if self.depth + len(items) > self.capacity:
                raise QueueFull(self.retry_after_s())
            costs = [cost(it) for it in items]
            if self.max_pixels is not None and self._pixels and self._pixels + sum(costs) > self.max_pixels:
                raise QueueFull(self.retry_after_s(), f"the images in flight would decode to more than "
                                f"{self.max_pixels} pixels")
            jobs = [Job(it, loop.create_future(), loop, c) for it, c in zip(items, costs)]
            for job in jobs:
                (self._small if job.cost <= SMALL_PIXELS else self._large).append(job)
            self._pixels += sum(costs)
            self._lock.notify_all()
        return jobs

    def withdraw(self, jobs: list[Job]) -> int:
        """Take back the jobs still queued (client gone, timeout); returns how many were dropped."""
        with self._lock:
            dropped = 0
            for job in jobs:
                if not job.future.done() and not job.withdrawn:
                    job.withdrawn = True
                    for lane in (self._small, self._large):
                        try:
                            lane.remove(job)
                        except ValueError:  # not in this lane, or already taken into a batch being scored
                            continue
                        dropped += 1
                        self._pixels -= job.cost
                        break
            return dropped

    @property
    def draining(self) -> bool:
        return self._draining

    def drain(self) -> None:
        """Take no new images; score what is queued without waiting for more; then the worker ends."""
        with self._lock:
            self._draining = True
            self._lock.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to end (after `drain`); True when it did within `timeout`."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---- worker thread ----

    def _ready(self, lane: deque[Job], now: float) -> bool:
        return bool(lane) and (len(lane) >= self.max_batch or self._draining
                               or lane[0].enqueued + self.max_wait_s <= now)

    def _take(self) -> list[Job] | None:
        """The next batch, once a lane is ready (see the module docstring for whose turn it is)."""
        with self._lock:
            while True:
                if not self._small and not self._large:
                    if self._draining:
                        return None
                    self._lock.wait()
                    continue
                now = time.monotonic()
                small_ready, large_ready = self._ready(self._small, now), self._ready(self._large, now)
                if small_ready or large_ready:
                    break
                due = min(lane[0].enqueued + self.max_wait_s for lane in (self._small, self._large) if lane)
                self._lock.wait(due - now)
            small_first = self._small and (self._small_turn or not large_ready)
            lane = self._small if small_first else self._large
            jobs = [lane.popleft()]
            pixels = jobs[0].cost
            while lane and len(jobs) < self.max_batch and (lane is self._small
                                                           or pixels + lane[0].cost <= self.batch_pixels):
                pixels += lane[0].cost
                jobs.append(lane.popleft())
            self._small_turn = lane is self._large or not self._large  # large images get the next turn if waiting
            return jobs

    def _work(self) -> None:
        while (jobs := self._take()) is not None:
            if not jobs:
                continue
            started = time.monotonic()
            waits = [started - j.enqueued for j in jobs]
            try:
                try:
                    results = self.score_batch([j.item for j in jobs])
                finally:
                    with self._lock:
                        self._pixels -= sum(j.cost for j in jobs)
                if len(results) != len(jobs):
                    raise RuntimeError(f"scorer returned {len(results)} results for {len(jobs)} images")
            except BaseException as exc:  # every job of the batch learns of it; the worker goes on
                log.exception("scoring a batch of %d failed", len(jobs))
                for job in jobs:
                    job.loop.call_soon_threadsafe(_fail, job.future, exc)
                continue
            seconds = time.monotonic() - started
            self._recent["small" if jobs[0].cost <= SMALL_PIXELS else "large"].append(
                (len(jobs), sum(j.cost for j in jobs), seconds))
            for job, result in zip(jobs, results):
                job.loop.call_soon_threadsafe(_resolve, job.future, result)
            if self.observe is not None:
                self.observe(len(jobs), seconds, waits)


def _resolve(future: asyncio.Future, result) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
