"""The producer side of a scoring run: items -> checked, placed, decoded and perturbed batches.

`BatchProducer.batches` reads and checks each batch of items (files, encoded images held in memory, or RGB pixels
held in memory), places each on the model's template when the producer has an aligner, picks the mixup partners,
and runs the DALI pipeline (built once per producer and reused by every run). Placement is a matrix per image,
applied inside the pipeline's graph (`engine.pipeline`): a `template.Realigner` measures each crop's own on the
host (O-Net on the decoded crop), a face aligner (`align.FaceAligner`) finds the faces of a photo the host decoded
and hands the pipeline the photo's pixels with each face's matrix; nothing is re-encoded. When DALI fails on a
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

from fiqa_trt.engine import geometry
from fiqa_trt.engine.align import CROP_SIZE, looks_like_face_crop
from fiqa_trt.engine.inputs import Item, check_encoded, check_item
from fiqa_trt.engine.perturbations import View
from fiqa_trt.engine.pipeline import PerturbPipeline, Sample, mixup_partners
from fiqa_trt.engine.template import Realigner
from fiqa_trt.errors import FiqaError
from fiqa_trt.weights.model_config import ModelConfig

log = logging.getLogger("fiqa_trt")
PRODUCER_STAGES = ("io", "align", "decode_perturb")  # io: reading files and headers; align: placing on the template
SOURCES = ("files", "encoded", "pixels")  # what an item's `data` holds: nothing yet (read from `path`), bytes, pixels
UNDECODABLE = "cannot decode image (corrupt or truncated file)"


@dataclass
class Batch:
    items: list[Item]  # every item of the batch, in input order (failed ones carry `error`)
    tensor: object | None  # (n_ok, 1+K, H, W, 3) uint8 for the items without error, in order (CuPy on a GPU)
    ready: object = None  # GPU: a CUDA event on the producer's stream after which `tensor` may be read
    resized: int = 0  # items of this batch that were not at the model's input size
    seconds: dict = field(default_factory=lambda: dict.fromkeys(PRODUCER_STAGES, 0.0))


def dali_message(exc: Exception) -> str:
    """The one-line error row for an item DALI could not decode or perturb."""
    text = str(exc)
    if "decoders" in text:
        return UNDECODABLE
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "Critical error" not in ln]
    return "perturbation pipeline failed: " + (lines[-1] if lines else type(exc).__name__)[:200]


def host_rgb(item: Item) -> np.ndarray | None:
    """The RGB pixels of a checked item (decoded here when it holds an encoded file; None when it cannot be)."""
    import cv2

    if np.ndim(item.data) == 3:
        return np.asarray(item.data)
    bgr = cv2.imdecode(item.data, cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class BatchProducer:
    """Turns items into `Batch`es for one model config and one list of views (see the module docstring).

    `aligner`: None, an `engine.align.FaceAligner` (photos: each face found and aligned) or an
    `engine.template.Realigner` (face crops: each put back on the model's template by its own points)."""

    def __init__(self, views: list[View], config: ModelConfig, *, seed: int, batch_size: int, threads: int,
                 device, aligner=None, concatenate=np.concatenate):
        self.views, self.config, self.seed, self.batch_size = views, config, seed, batch_size
        self.threads, self.device, self.aligner, self._concatenate = threads, device, aligner, concatenate
        self.size = tuple(config.input_size)
        self._pipe: PerturbPipeline | None = None
        self._warned_resize = False

    def pipeline(self) -> PerturbPipeline:
        """The DALI pipeline, made on first use (each input form's graph is built in the calling thread's device
        scope when first run) and reused."""
        if self._pipe is None:
            cuda = self.device.is_cuda
            self._pipe = PerturbPipeline(self.views, self.config, seed=self.seed, batch_size=self.batch_size,
                                         num_threads=self.threads, device="gpu" if cuda else "cpu",
                                         device_id=self.device.index if cuda else None,
                                         placed=self.aligner is not None)
        return self._pipe

    def place(self, items: list[Item]) -> tuple[list[Item], list[Sample]]:
        """Checked items -> (the items, expanded to one per face when photos are aligned; a Sample per item without
        an error, in order). Items that cannot be decoded or hold no face get their error here."""
        if self.aligner is None:
            return items, [Sample.of(it, self.size) for it in items if it.error is None]
        if isinstance(self.aligner, Realigner):
            return self._realigned(items)
        return self._faces(items)

    def _realigned(self, items: list[Item]) -> tuple[list[Item], list[Sample]]:
        import cv2

        h, w = self.size
        crops, ok = [], []
        for it in items:
            if it.error is not None:
                continue
            rgb = host_rgb(it)
            if rgb is None:
                it.error = UNDECODABLE
                continue
            if rgb.shape[:2] != (h, w):  # the crop is placed after the pipeline's resize to the model's size
                rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            crops.append(rgb)
            ok.append(it)
        matrices = self.aligner.matrices(np.stack(crops)) if crops else []
        return items, [Sample.of(it, self.size, m) for it, m in zip(ok, matrices)]

    def _faces(self, items: list[Item]) -> tuple[list[Item], list[Sample]]:
        """Each photo's face(s): the photo's pixels with the matrix that aligns each face to the model's input
        (an aligner with `locate`: faces with their matrices), or the face crops the aligner warped itself."""
        to_model = geometry.resize_matrix((CROP_SIZE, CROP_SIZE), self.size)
        locate = getattr(self.aligner, "locate", None) or self.aligner.align
        out, samples = [], []
        for it in items:
            if it.error is not None:
                out.append(it)
                continue
            rgb = host_rgb(it)
            if rgb is None:
                out.append(replace(it, data=None, error=UNDECODABLE))
                continue
            faces = locate(rgb)
            if not faces:
                out.append(replace(it, data=None, error="no face found"))
            for j, face in enumerate(faces):
                suffix = f"#face{j}" if self.aligner.all_faces else ""
                pixels = rgb if face.crop is None else np.ascontiguousarray(face.crop)
                face_item = replace(it, path=it.path + suffix, key=it.key + suffix, data=pixels,
                                    size=pixels.shape[:2], det_score=face.score, box=face.box)
                out.append(face_item)
                samples.append(Sample(face_item.key, pixels, pixels.shape[:2], False, geometry.compose(
                    to_model, face.matrix)) if face.crop is None else Sample.of(face_item, self.size))
        return out, samples

    def partners(self, items: list[Item], all_items: list[Item]) -> dict[int, list[Sample]] | None:
        """Per mixup view, the partner of each item without an error (drawn over `all_items`, read from their
        files; unreadable ones skipped), placed as the items are."""
        mix = [v for v in self.views if v.spec.kind.needs_partner]
        if not mix:
            return None
        keys = [it.key for it in all_items]
        owns = [it.index for it in items if it.error is None]
        partners: dict[int, list[Sample]] = {}
        for view in mix:
            chosen = []
            for own, index in zip(owns, mixup_partners(owns, keys, view, self.seed).tolist()):  # one draw per batch
                for _ in range(len(all_items)):  # a partner that cannot be read is replaced by the next item
                    candidate = check_item(Item(all_items[index].path, all_items[index].key, index=index))
                    placed = self.place([candidate]) if candidate.error is None else ([], [])
                    if placed[1] and index != own:
                        break
                    index = (index + 1) % len(all_items)
                else:
                    raise FiqaError("mixup needs a second readable image, and none of the inputs is one")
                chosen.append(placed[1][0])  # the partner's largest face, when photos are aligned
            partners[view.index] = chosen
        return partners

    def run_pipeline(self, items: list[Item], samples: list[Sample], partners) -> object | None:
        """Run the samples of the items without error; if the batch fails, find the failing ones one by one and
        run the rest."""
        pipe = self.pipeline()
        good = [it for it in items if it.error is None]
        if not samples:
            return None
        pick = lambda idx: {k: [v[i] for i in idx] for k, v in partners.items()} if partners else None  # noqa
        try:
            return pipe.run(samples, pick(range(len(samples))))
        except Exception as exc:  # DALI reports one error for the whole batch
            first = exc
        outs = []
        for i, (it, sample) in enumerate(zip(good, samples)):
            try:
                outs.append(pipe.run([sample], pick([i])))
            except Exception as exc:
                it.error = dali_message(exc)
        if not outs:
            log.debug("batch failed: %s", first)
            return None
        return self._concatenate(outs)

    def _count_resized(self, items: list[Item], samples: list[Sample]) -> int:
        """Items resized to the model's input size (warned about once); crops given as such (no face aligner) that
        look like photos are marked `photo_like`."""
        h, w = self.size
        resized = [it for it, sample in zip([it for it in items if it.error is None], samples) if sample.resize]
        if resized and not self._warned_resize:
            it = resized[0]
            log.warning("%s is %dx%d, not %dx%d: images are resized to the model's input size (scores assume "
                        "aligned face crops)", it.path, it.size[1], it.size[0], w, h)
            self._warned_resize = True
        crops = self.aligner is None or isinstance(self.aligner, Realigner)
        for it in resized if crops else []:  # a full photo given as if it were a face crop?
            it.photo_like = not looks_like_face_crop(it.data, (h, w))
        return len(resized)

    def batches(self, all_items: list[Item], population: list[Item] | None = None,
                stop: threading.Event | None = None, feed_stream=None, source: str = "files") -> Iterator[Batch]:
        """One Batch per `batch_size` items, in input order. `population`: the whole input list when `all_items` is
        a shard of it (mixup partners are drawn from it). GPU: each batch's `ready` event is on `feed_stream`.
        `source` (`SOURCES`): `files` reads each item's file; `encoded`: each item's `data` already holds its
        encoded file (an upload), checked instead of read; `pixels`: its `data` holds RGB pixels (H, W, 3) uint8."""
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}")
        for start in range(0, len(all_items), self.batch_size):
            if stop is not None and stop.is_set():
                return
            t0 = time.perf_counter()
            seconds = dict.fromkeys(PRODUCER_STAGES, 0.0)
            chunk = all_items[start : start + self.batch_size]
            items = [_check(it, it.index if it.index >= 0 else i, source) for i, it in enumerate(chunk, start)]
            t_align = time.perf_counter()
            items, samples = self.place(items)
            seconds["align"] = time.perf_counter() - t_align
            resized = self._count_resized(items, samples)
            partners = self.partners(items, population or all_items)
            t1 = time.perf_counter()
            tensor = self.run_pipeline(items, samples, partners)
            seconds["io"] = t1 - t0 - seconds["align"]
            seconds["decode_perturb"] = time.perf_counter() - t1
            for it in items:
                it.data = None
            ready = feed_stream.record() if feed_stream is not None and tensor is not None else None
            yield Batch(items, tensor, ready, resized, seconds)


def _check(item: Item, index: int, source: str) -> Item:
    """A fresh copy of `item` at `index`, read and checked (in memory: its `data` checked)."""
    fresh = replace(item, data=None, size=None, error=None, det_score=None, box=None, index=index)
    if source == "pixels":
        return replace(fresh, data=item.data, size=tuple(np.shape(item.data)[:2]))
    if source == "encoded":
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
