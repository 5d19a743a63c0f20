"""The dynamic batcher: images from any number of concurrent requests, gathered into batches for one scorer.

Requests put their images in one bounded queue (capacity in images) and await one future per image. A single
worker thread owns the scorer: it takes the oldest image, waits until `max_batch` images are queued or `max_wait_s`
has passed since that image arrived (whichever comes first), scores the batch and resolves the futures on the
event loop. A request whose client went away or whose time ran out withdraws its images that are still queued.
`drain()` stops the waiting: what is queued is scored at once, then the worker ends.
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


class QueueFull(Exception):
    def __init__(self, retry_after_s: int):
        super().__init__(f"the queue is full; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Draining(Exception):
    """The service is shutting down and takes no new images."""


@dataclass(eq=False)
class Job:
    item: Item
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.monotonic)
    withdrawn: bool = False


class Batcher:
    """Gathers queued images into batches of up to `max_batch`, scored by `score_batch(items) -> results` (one
    result per item, in order) in one worker thread. `observe(batch_size, seconds, waits)` is told about each batch."""

    def __init__(self, score_batch: Callable[[list[Item]], list], max_batch: int = 64, max_wait_s: float = 0.005,
                 capacity: int = 1024, observe: Callable[[int, float, list[float]], None] | None = None):
        if max_batch < 1 or capacity < 1:
            raise ValueError("max_batch and capacity must be at least 1")
        self.score_batch, self.max_batch, self.max_wait_s, self.capacity = score_batch, max_batch, max_wait_s, capacity
        self.observe = observe
        self._queue: deque[Job] = deque()
        self._lock = threading.Condition()
        self._draining = False
        self._rate = 0.0  # images/s, smoothed over batches, for Retry-After
        self._thread = threading.Thread(target=self._work, name="fiqa-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Images queued and not yet taken into a batch."""
        return len(self._queue)

    def retry_after_s(self) -> int:
        return max(1, math.ceil(self.depth / self._rate)) if self._rate > 0 else 1

    def submit(self, items: list[Item]) -> list[Job]:
        """Queue the items of one request (all or none); call from the event loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._draining:
                raise Draining()
            if len(self._queue) + len(items) > self.capacity:
                raise QueueFull(self.retry_after_s())
            jobs = [Job(it, loop.create_future(), loop) for it in items]
            self._queue.extend(jobs)
            self._lock.notify_all()
        return jobs

    def withdraw(self, jobs: list[Job]) -> int:
        """Take back the jobs still queued (client gone, timeout); returns how many were dropped."""
        with self._lock:
            dropped = 0
            for job in jobs:
                if not job.future.done() and not job.withdrawn:
                    job.withdrawn = True
                    try:
                        self._queue.remove(job)
                        dropped += 1
                    except ValueError:  # already taken into a batch that is being scored
                        pass
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

    def _take(self) -> list[Job] | None:
        with self._lock:
            while not self._queue:
                if self._draining:
                    return None
                self._lock.wait()
            while len(self._queue) < self.max_batch and not self._draining:
                left = self._queue[0].enqueued + self.max_wait_s - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
                if not self._queue:  # everything queued was withdrawn meanwhile
                    return []
            return [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]

    def _work(self) -> None:
        while (jobs := self._take()) is not None:
            if not jobs:
                continue
            started = time.monotonic()
            waits = [started - j.enqueued for j in jobs]
            try:
                results = self.score_batch([j.item for j in jobs])
                if len(results) != len(jobs):
                    raise RuntimeError(f"scorer returned {len(results)} results for {len(jobs)} images")
            except BaseException as exc:  # every job of the batch learns of it; the worker goes on
                log.exception("scoring a batch of %d failed", len(jobs))
                for job in jobs:
                    job.loop.call_soon_threadsafe(_fail, job.future, exc)
                continue
            seconds = time.monotonic() - started
            self._rate = len(jobs) / seconds if not self._rate else 0.8 * self._rate + 0.2 * len(jobs) / seconds
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
