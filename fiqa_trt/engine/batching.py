"""The producer side of a scoring run: items -> checked, (aligned,) decoded and perturbed batches.

`BatchProducer.batches` reads and checks each batch of items, aligns photos when an aligner is given, picks the
mixup partners, and runs the DALI pipeline (built once per producer and reused by every run). When DALI fails on a
batch it re-runs the batch item by item, so that only the bad items get an error. Each `Batch` carries what it
measured (seconds per stage, items resized), so nothing is shared between the producer thread and the consumer
but the queue. `produce_in_thread` runs `batches` in a worker thread that stays at most two batches ahead.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np

from fiqa_trt.engine.align import looks_like_face_crop
from fiqa_trt.engine.inputs import Item, check_encoded, check_item
from fiqa_trt.engine.perturbations import View
from fiqa_trt.engine.pipeline import PerturbPipeline, mixup_partners
from fiqa_trt.errors import FiqaError
from fiqa_trt.weights.model_config import ModelConfig

log = logging.getLogger("fiqa_trt")
PRODUCER_STAGES = ("io", "align", "decode_perturb")  # io: reading files and headers


@dataclass
class Batch:
    items: list[Item]  # every item of the batch, in input order (failed ones carry `error`)
    tensor: object | None  # (n_ok, 1+K, H, W, 3) uint8 for the items without error, in order (CuPy on a GPU)
    ready: object = None  # GPU: a CUDA event on the producer's stream after which `tensor` may be read
    resized: int = 0  # items of this batch that were not at the model's input size
    seconds: dict = field(default_factory=lambda: dict.fromkeys(PRODUCER_STAGES, 0.0))


def png(crop: np.ndarray) -> np.ndarray:
    """An RGB uint8 crop encoded as PNG bytes, the form the pipeline decodes."""
    import cv2

    return cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))[1].reshape(-1)


def dali_message(exc: Exception) -> str:
    """The one-line error row for an item DALI could not decode or perturb."""
    text = str(exc)
    if "decoders" in text:
        return "cannot decode image (corrupt or truncated file)"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "Critical error" not in ln]
    return "perturbation pipeline failed: " + (lines[-1] if lines else type(exc).__name__)[:200]


class BatchProducer:
    """Turns items into `Batch`es for one model config and one list of views (see the module docstring)."""

    def __init__(self, views: list[View], config: ModelConfig, *, seed: int, batch_size: int, threads: int,
                 device, aligner=None, concatenate=np.concatenate):
        self.views, self.config, self.seed, self.batch_size = views, config, seed, batch_size
        self.threads, self.device, self.aligner, self._concatenate = threads, device, aligner, concatenate
        self._pipe: PerturbPipeline | None = None
        self._warned_resize = False

    def pipeline(self) -> PerturbPipeline:
        """The DALI pipeline, built on first use (in the calling thread's device scope) and reused."""
        if self._pipe is None:
            cuda = self.device.is_cuda
            self._pipe = PerturbPipeline(self.views, self.config, seed=self.seed, batch_size=self.batch_size,
                                         num_threads=self.threads, device="gpu" if cuda else "cpu",
                                         device_id=self.device.index if cuda else None)
        return self._pipe

    def align(self, items: list[Item]) -> list[Item]:
        """Replace each photo by its aligned face(s), encoded as PNG for the pipeline; no face -> an error row."""
        import cv2

        out = []
        for it in items:
            if it.error is not None:
                out.append(it)
                continue
            photo = cv2.imdecode(it.data, cv2.IMREAD_COLOR)
            if photo is None:
                out.append(replace(it, data=None, error="cannot decode image (corrupt or truncated file)"))
                continue
            faces = self.aligner.align(cv2.cvtColor(photo, cv2.COLOR_BGR2RGB))
            if not faces:
                out.append(replace(it, data=None, error="no face found"))
            for j, face in enumerate(faces):
                suffix = f"#face{j}" if self.aligner.all_faces else ""
                out.append(replace(it, path=it.path + suffix, key=it.key + suffix, data=png(face.crop),
                                   size=face.crop.shape[:2], det_score=face.score, box=face.box))
        return out

    def partners(self, items: list[Item], all_items: list[Item]) -> dict[int, list[Item]] | None:
        """Per mixup view, the partner item of each item (drawn over `all_items`; unreadable ones skipped)."""
        mix = [v for v in self.views if v.spec.kind.needs_partner]
        if not mix:
            return None
        keys = [it.key for it in all_items]
        partners: dict[int, list[Item]] = {}
        for view in mix:
            chosen = []
            owns = [it.index for it in items]
            for own, index in zip(owns, mixup_partners(owns, keys, view, self.seed).tolist()):  # one draw per batch
                for _ in range(len(all_items)):  # a partner that cannot be read is replaced by the next item
                    candidate = check_item(Item(all_items[index].path, all_items[index].key, index=index))
                    if self.aligner is not None and candidate.error is None:
                        candidate = self.align([candidate])[0]  # the partner's largest face
                    if candidate.error is None and index != own:
                        break
                    index = (index + 1) % len(all_items)
                else:
                    raise FiqaError("mixup needs a second readable image, and none of the inputs is one")
                chosen.append(candidate)
            partners[view.index] = chosen
        return partners

    def run_pipeline(self, items: list[Item], partners) -> object | None:
        """Run the good items; if the batch fails, find the failing items one by one and run the rest."""
        pipe = self.pipeline()
        good = [i for i, it in enumerate(items) if it.error is None]
        if not good:
            return None
        pick = lambda idx: {k: [v[i] for i in idx] for k, v in partners.items()} if partners else None  # noqa
        try:
            return pipe.run([items[i] for i in good], pick(good))
        except Exception as exc:  # DALI reports one error for the whole batch
            first = exc
        outs = []
        for i in good:
            try:
                outs.append(pipe.run([items[i]], pick([i])))
            except Exception as exc:
                items[i].error = dali_message(exc)
        if not outs:
            log.debug("batch failed: %s", first)
            return None
        return self._concatenate(outs)

    def _count_resized(self, items: list[Item]) -> int:
        h, w = self.config.input_size
        resized = [it for it in items if it.error is None and it.size != (h, w)]
        if resized and not self._warned_resize:
            it = resized[0]
            log.warning("%s is %dx%d, not %dx%d: images are resized to the model's input size (scores assume "
                        "aligned face crops)", it.path, it.size[1], it.size[0], w, h)
            self._warned_resize = True
        for it in resized if self.aligner is None else []:  # a full photo given as if it were a face crop?
            it.photo_like = not looks_like_face_crop(it.data, (h, w))
        return len(resized)

    def batches(self, all_items: list[Item], population: list[Item] | None = None,
                stop: threading.Event | None = None, feed_stream=None, in_memory: bool = False) -> Iterator[Batch]:
        """One Batch per `batch_size` items, in input order. `population`: the whole input list when `all_items` is
        a shard of it (mixup partners are drawn from it). GPU: each batch's `ready` event is on `feed_stream`.
        `in_memory`: each item's `data` already holds its encoded file (an upload), checked instead of read."""
        for start in range(0, len(all_items), self.batch_size):
            if stop is not None and stop.is_set():
                return
            t0 = time.perf_counter()
            seconds = dict.fromkeys(PRODUCER_STAGES, 0.0)
            chunk = all_items[start : start + self.batch_size]
            items = [_check(it, it.index if it.index >= 0 else i, in_memory) for i, it in enumerate(chunk, start)]
            if self.aligner is not None:
                t_align = time.perf_counter()
                items = self.align(items)
                seconds["align"] = time.perf_counter() - t_align
            resized = self._count_resized(items)
            partners = self.partners(items, population or all_items)
            t1 = time.perf_counter()
            tensor = self.run_pipeline(items, partners)
            seconds["io"] = t1 - t0 - seconds["align"]
            seconds["decode_perturb"] = time.perf_counter() - t1
            for it in items:
                it.data = None
            ready = feed_stream.record() if feed_stream is not None and tensor is not None else None
            yield Batch(items, tensor, ready, resized, seconds)


def _check(item: Item, index: int, in_memory: bool) -> Item:
    """A fresh copy of `item` at `index`, read and checked (in memory: its `data` checked)."""
    fresh = replace(item, data=None, size=None, error=None, det_score=None, box=None, index=index)
    if in_memory:
        return check_encoded(fresh, bytes(item.data) if item.data is not None else b"")
    return check_item(fresh)


STOP_WAIT_S = 2.0  # how long a stopped consumer waits for the worker to leave the batch it is in
_left_behind: list[threading.Thread] = []  # workers a stop left inside a batch (they share their producer's pipeline)


def produce_in_thread(batches: Iterator[Batch], scope, depth: int = 2) -> Iterator[Batch]:
    """Run the `batches` generator in a worker thread (inside the context manager `scope`, e.g. a CUDA device and
    stream) at most `depth` batches ahead of the caller; failures are re-raised in the caller's thread. Closing
    the returned generator stops the worker: it is waited for at most STOP_WAIT_S (a signal ends a run within
    seconds, never after the batch in progress, which may take minutes); a worker still inside its batch then is
    left to finish it (a daemon thread), and the next call waits for it before it starts its own."""
    while _left_behind:
        _left_behind.pop().join()
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            with scope:
                for batch in batches:
                    if stop.is_set():
                        break
                    out.put(batch)
            out.put(None)
        except BaseException as exc:  # hand every failure to the consumer, which re-raises it
            out.put(exc)
        finally:
            batches.close()

    worker = threading.Thread(target=work, name="fiqa-producer", daemon=True)
    worker.start()
    try:
        while (batch := out.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            yield batch
    finally:
        stop.set()
        deadline = time.monotonic() + STOP_WAIT_S
        while worker.is_alive() and time.monotonic() < deadline:  # unblock a producer waiting on a full queue
            try:
                out.get(timeout=0.1)
            except queue.Empty:
                pass
        if worker.is_alive():
            _left_behind.append(worker)
            threading.Thread(target=_drain, args=(out, worker), name="fiqa-producer-drain", daemon=True).start()


def _drain(out: queue.Queue, worker: threading.Thread) -> None:
    """Keep a left-behind worker from blocking on the full queue once its batch is done."""
    while worker.is_alive():
        try:
            out.get(timeout=0.1)
        except queue.Empty:
            pass
