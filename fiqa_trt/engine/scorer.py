"""The scorer (the consumer side of a scoring run): embeds each batch the producer gives and turns the embeddings
into qualities.

quality(I) = aggregate_k cos(E(I), E(P_k(I))). Per batch of N images the producer (`engine.batching`) yields the
N originals and their N*K views, embedded together in one runner call (the original embedding is computed once and
shared by all K views). Decoding and perturbing batch i+1 runs in a worker thread while batch i is in the model.
Per-item failures (unreadable, not an image, undecodable) become error rows; the other items are still scored.

One batch loop (`Scorer._run`) serves every entry point; they differ only in what the items hold and what they
return: `score` / `embed` read files (Results, or the raw (n, 1+K, D) embeddings per batch for callers that need
them: evaluation's originals give the verification similarities), `score_encoded` takes encoded images held in
memory (uploads), `score_crops` / `embed_crops` take RGB pixels (crops a detector aligned), handed to the pipeline
as they are. `score`/`embed` produce in a worker thread; the in-memory entry points in the calling thread.

The device follows the runner's: with a CUDA runner the pipeline decodes and perturbs on the GPU, its output
reaches the runner as a CuPy array (DLPack, ordered on the scorer's CUDA stream), the quality kernel runs on the
GPU, and only the cosines and qualities come back to the host. On the CPU the same hand-over gives NumPy arrays.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import closing, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from fiqa_trt import kernels
from fiqa_trt.quality import Pass, Recipe, scale
from fiqa_trt.engine.batching import PRODUCER_STAGES, Batch, BatchProducer, produce_in_thread
from fiqa_trt.engine.budget import check_batch
from fiqa_trt.engine.device import Device, array_module, parse_device
from fiqa_trt.engine.inputs import Item
from fiqa_trt.engine.perturbations import DEFAULT_SPEC, View, parse_spec, plan_views
from fiqa_trt.engine.runners.base import Runner
from fiqa_trt.errors import FiqaError

log = logging.getLogger("fiqa_trt")
STAGES = (*PRODUCER_STAGES, "inference", "kernels")


@dataclass
class Result:
    path: str
    quality: float
    cosines: np.ndarray  # (K,), NaN where the item failed
    error: str | None = None
    det_score: float | None = None  # aligned runs: the face detector's score
    box: tuple[int, int, int, int] | None = None  # aligned runs: the face's box in the photo
    score: float = float("nan")  # the 0-100 unified quality score (NaN: failed, or the recipe has no calibration)


@dataclass
class Embedded:
    """One batch from `Scorer.embed`: every item in input order (failed ones carry `error`) and the embeddings of
    the others, in the same order: (n_ok, 1+K, D) float32, the original first, then the views of `Scorer.views`."""

    items: list[Item]
    embeddings: np.ndarray | None  # None when no item of the batch could be decoded
    observed: np.ndarray | None = None  # (n_ok, 1+K, M): the runner's observer outputs (`Scorer.layers`), if any


class Scorer:
    """Scores images with one FR runner and one set of perturbations.

    Same items + model + perturbations + seed (+ batch size, for DALI's pixel noise) give the same scores.
    """

    def __init__(self, runner: Runner, perturb: list[str] | None = None, views: int = 1, agg: str = "mean",
                 seed: int = 0, batch_size: int = 32, threads: int | None = None, aligner=None, recipe=None,
                 unified_scale: scale.Scale | None = None, recipe_source: str | None = None):
        """`recipe` (quality.Recipe): its views and fusion replace `perturb`, `views`' specs and `agg`; without one
        the quality is the seed's stability score of `perturb`. `unified_scale`: the 0-100 scale of the qualities
        (default: the recipe's calibration, else for a stability recipe the generic scale); `recipe_source`: where the recipe came from (a line for
        reports). `aligner`: an `engine.align.FaceAligner` (photos) or an `engine.template.Realigner` (crops put back
        on the template), applied to every item and mixup partner inside the pipeline."""
        if agg not in kernels.AGGREGATIONS:
            raise FiqaError(f"unknown aggregation '{agg}'; use one of: {', '.join(kernels.AGGREGATIONS)}")
        if recipe is not None:
            perturb, agg = list(recipe.perturb), recipe.agg
            recipe.check_runnable()  # a ui signal needs a centre (its size is checked on the embeddings)
            wanted = recipe.observers
            have = runner.observers.layers if getattr(runner, "observers", None) is not None else ()
            if wanted is not None and not set(wanted.layers) <= set(have):
                runner = runner.observing(wanted)  # the same model, its calls also reducing the recipe's layers
        self.recipe, self.recipe_source = recipe, recipe_source
        # what `_quality` evaluates: the recipe, or the plain stability score of the given views
        self.method = recipe if recipe is not None else Recipe("perturb", tuple(perturb or [DEFAULT_SPEC]),
                                                               "stability", agg, realign="off")
        # a stability recipe without a calibration gets the generic scale (a plain --perturb score none)
        self.scale = unified_scale if unified_scale is not None else scale.for_recipe(recipe, generic=True)
        if batch_size < 1:
            raise FiqaError("--batch-size must be at least 1")
        self.runner, self.agg, self.seed, self.batch_size = runner, agg, seed, batch_size
        self.aligner = aligner
        self.threads = threads or os.cpu_count() or 1
        # a recipe may hold no view (its signals read the originals alone: one forward per image)
        self.specs = [parse_spec(s) for s in (perturb if recipe is not None else perturb or [DEFAULT_SPEC])]
        self.views: list[View] = plan_views(self.specs, views) if self.specs else []
        # the layers whose L2 norms each forward also gives (`onnx_export.observers`), in column order
        self.layers: tuple[str, ...] = runner.observers.layers if getattr(runner, "observers", None) else ()
        check_batch(batch_size, len(self.views), runner.config.input_size)  # absurd sizes refused before any work
        self.resized = 0  # items that were not at the model's input size, over the last call
        self.not_crops = 0  # of those, scored without an aligner with no face where the template puts one
        self.timings = dict.fromkeys(STAGES, 0.0)  # seconds per stage, summed over the last call
        kind, index = parse_device(getattr(runner, "device", "cpu"))
        self.device = Device("cuda", index or 0) if kind == "cuda" else Device()
        self.xp = array_module(self.device)
        # GPU only: the producer thread receives the pipeline's output on `_feed_stream`; the runner and the kernel
        # run on `_stream`, which waits for each batch's event (so batch i+1's hand-over never queues behind batch i)
        self._stream = self._feed_stream = None
        if self.device.is_cuda:
            import cupy

            with cupy.cuda.Device(self.device.index):
                self._stream = cupy.cuda.Stream(non_blocking=True)
                self._feed_stream = cupy.cuda.Stream(non_blocking=True)
        self.producer = BatchProducer(self.views, runner.config, seed=seed, batch_size=batch_size,
                                      threads=self.threads, device=self.device, aligner=aligner,
                                      concatenate=self.xp.concatenate)

    @property
    def view_specs(self) -> list[int]:
        """For each view, the index of the spec (in `specs`) it comes from."""
        return [next(i for i, s in enumerate(self.specs) if s is v.spec) for v in self.views]

    @property
    def aligns_photos(self) -> bool:
        """Photos are detected and aligned first (rows carry the face's box and detector score); a realigner, which
        puts crops back on the template, is not a face detector."""
        from fiqa_trt.engine.template import Realigner

        return self.aligner is not None and not isinstance(self.aligner, Realigner)

    @property
    def view_labels(self) -> list[str]:
        return [v.label for v in self.views]

    def _on_device(self, stream=None):
        """The CUDA device and stream (default: the consumer's) a GPU step runs in (a no-op on the CPU)."""
        if not self.device.is_cuda:
            return nullcontext()
        import contextlib

        import cupy

        scope = contextlib.ExitStack()
        scope.enter_context(cupy.cuda.Device(self.device.index))
        scope.enter_context(stream or self._stream)
        return scope

    def _host(self, array) -> np.ndarray:
        if isinstance(array, np.ndarray):
            return array
        with self._on_device():
            return self.xp.asnumpy(array)

    # ---- consumer side: embed and score ----

    def _embed_views(self, tensor):
        """(n, 1+K, H, W, 3) uint8 images -> ((n, 1+K, D) embeddings, (n, 1+K, M) observer outputs or None):
        originals and views in one runner call (NumPy or CuPy, as the device's pipeline gives them)."""
        n, views = tensor.shape[:2]
        flat = tensor.reshape(n * views, *tensor.shape[2:])
        with self._on_device():
            if self.layers:
                out = self.runner.forward(flat)
                emb, observed = out.embeddings.reshape(n, views, -1), out.observed.reshape(n, views, -1)
            else:
                emb, observed = self.runner.embed(flat).reshape(n, views, -1), None
            if self.device.is_cuda:
                self._stream.synchronize()  # for the stage timings only: the kernel follows on the same stream
        return emb, observed

    def _pass(self, emb, observed=None) -> Pass:
        """The pass of one batch: embeddings and, where the runner observes layers, their L2 norms."""
        return Pass(emb, self.view_specs, observed, self.layers if observed is not None else None)

    def _quality(self, emb, observed=None) -> tuple[np.ndarray, np.ndarray]:
        """Per-view cosines (n, K) and qualities (n,) on the host: the recipe (or the plain stability score of the
        views) evaluated on the pass where the embeddings are (`quality.Recipe.evaluate`)."""
        with self._on_device():
            result = self.method.evaluate(self._pass(emb, observed))
        return result.cosines, result.quality

    def unified(self, quality: np.ndarray) -> np.ndarray:
        """The 0-100 unified score of qualities on the scorer's `scale` (NaN where there is none or no quality)."""
        return scale.unified(quality, self.scale)

    # ---- the batch loop and its entry points

    def _run(self, items: list[Item], source: str = "files", population: list[Item] | None = None,
             progress: Callable[[int], None] | None = None, threaded: bool = True) -> Iterator[Embedded]:
        """The one batch loop: `Embedded` per batch, in input order, the embeddings left where the runner put them
        (CuPy on the GPU path). `source`: what the items hold (`batching.SOURCES`); `threaded`: produce in a worker
        thread at most two batches ahead (else in the calling thread, on the consumer's stream). The stage times,
        resized and not-crop counts are those of this call."""
        if source != "files" and any(v.spec.kind.needs_partner for v in self.views):
            raise FiqaError("mixup perturbations need input files (the partner is another input image); score "
                            "in-memory images without mixup")
        self.timings, self.resized, self.not_crops = dict.fromkeys(STAGES, 0.0), 0, 0
        feed = self._feed_stream if threaded else None
        produced = self.producer.batches(items, population, feed_stream=feed, source=source)
        # the pipeline's output is ordered on the feed stream (GPU); the worker builds the pipeline on first use
        batches = (produce_in_thread(produced, self._on_device(self._feed_stream)) if threaded
                   else _produced_in_scope(produced, self._on_device))
        with closing(batches):
            for batch in batches:
                self._account(batch)
                emb = observed = None
                if batch.tensor is not None:
                    t0 = time.perf_counter()
                    if batch.ready is not None:
                        self._stream.wait_event(batch.ready)
                    emb, observed = self._embed_views(batch.tensor)
                    self.timings["inference"] += time.perf_counter() - t0
                yield Embedded(batch.items, emb, observed)
                if progress:  # in input files (one photo may give several faces)
                    progress(len({it.index for it in batch.items}))

    def _account(self, batch: Batch) -> None:
        self.resized += batch.resized
        for stage, seconds in batch.seconds.items():
            self.timings[stage] += seconds

    def embed(self, items: list[Item], progress: Callable[[int], None] | None = None,
              population: list[Item] | None = None) -> Iterator[Embedded]:
        """Yield one `Embedded` per batch of files, in input order: originals and views embedded in one runner call.

        `population`: the whole input list when `items` is a shard of it (items keep their `index` in it), so that
        mixup partners are drawn exactly as in a single run over everything. Embeddings are NumPy arrays."""
        with closing(self._run(items, population=population, progress=progress)) as batches:
            for batch in batches:
                yield batch if batch.embeddings is None else Embedded(
                    batch.items, self._host(batch.embeddings),
                    None if batch.observed is None else self._host(batch.observed))

    def score(self, items: list[Item], progress: Callable[[int], None] | None = None,
              population: list[Item] | None = None) -> Iterator[Result]:
        """Yield one Result per file item, in input order (`population`: see `embed`)."""
        with closing(self._run(items, population=population, progress=progress)) as batches:
            for batch in batches:
                yield from self._score_batch(batch)

    def score_encoded(self, items: list[Item]) -> list[Result]:
        """Score images held in memory: each item's `data` is an encoded image file (bytes or a uint8 array) and its
        `key` seeds the view draws, as a file's path relative to INPUT does in `score`: the same file under the same
        key gets the same scores. One Result per item (per face with `all_faces`), in order; what cannot be read,
        decoded or aligned is an error row, as in `score`. Runs in the calling thread. Mixup needs a population of
        files and is refused here."""
        return [r for batch in self._run(items, "encoded", threaded=False) for r in self._score_batch(batch)]

    def score_crops(self, crops: list[np.ndarray], keys: list[str] | None = None) -> np.ndarray:
        """Qualities of in-memory face crops ((H, W, 3) uint8, RGB), through the same pipeline (the pixels as they
        are, no encoding), runner and recipe as `score`: (N,) float32 (float64 for a fused recipe), NaN where the
        model returned a zero or non-finite embedding.

        `keys` seed the per-image view draws (default: the position in `crops`). A Scorer with a realigner puts
        each crop back on the template as `score` does. Mixup needs a population of files and is refused here."""
        dtype = np.float32 if self.method.fusion == "stability" else np.float64  # as the recipe evaluates
        out = []
        for batch in self._run(self._crop_items(crops, keys), "pixels", threaded=False):
            q = np.full(len(batch.items), np.nan, dtype)
            if batch.embeddings is not None:
                cos, fused = self._quality(batch.embeddings, batch.observed)
                q[[i for i, it in enumerate(batch.items) if it.error is None]] = np.where(
                    np.isnan(cos).any(axis=1), np.nan, fused)
            out.append(q)
        return np.concatenate(out) if out else np.zeros(0, dtype)

    def embed_crops(self, crops: list[np.ndarray], keys: list[str] | None = None) -> np.ndarray:
        """The raw embeddings (N, 1+K, D) float32 of in-memory crops and their views (as `score_crops` computes
        them), on the host: for callers that read other signals off them (`evaluation.calibrate`)."""
        parts = [self._host(b.embeddings).astype(np.float32)
                 for b in self._run(self._crop_items(crops, keys), "pixels", threaded=False)]
        return np.concatenate(parts) if parts else np.zeros((0, 1 + len(self.views), 0), np.float32)

    def crop_pass(self, crops: list[np.ndarray], keys: list[str] | None = None) -> Pass:
        """The pass of in-memory crops (as `score_crops` computes it) on the host: embeddings (N, 1+K, D) and the
        observer outputs of the same calls, for callers that read signals off it (`evaluation.calibrate`)."""
        batches = [b for b in self._run(self._crop_items(crops, keys), "pixels", threaded=False)
                   if b.embeddings is not None]
        if not batches:
            return Pass(np.zeros((0, 1 + len(self.views), 0), np.float32), self.view_specs)
        emb = np.concatenate([self._host(b.embeddings).astype(np.float32) for b in batches])
        observed = None if batches[0].observed is None else np.concatenate(
            [self._host(b.observed).astype(np.float32) for b in batches])
        return self._pass(emb, observed)

    @staticmethod
    def _crop_items(crops: list[np.ndarray], keys: list[str] | None) -> list[Item]:
        """Items holding checked in-memory crops (FiqaError for a crop that is not (H, W, 3) uint8)."""
        keys = list(keys) if keys is not None else [str(i) for i in range(len(crops))]
        if len(keys) != len(crops):
            raise FiqaError("score_crops: give one key per crop")
        items = []
        for i, (crop, key) in enumerate(zip(crops, keys)):
            crop = np.asarray(crop)
            if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3 or min(crop.shape[:2]) < 1:
                raise FiqaError(f"score_crops: crop {i} must be (H, W, 3) uint8, got {crop.shape} {crop.dtype}")
            items.append(Item(key, key, data=np.ascontiguousarray(crop), index=i))
        return items

    def _score_batch(self, batch: Embedded) -> Iterator[Result]:
        nan = np.full(len(self.views), np.nan, np.float32)
        if batch.embeddings is not None:
            t0 = time.perf_counter()
            cos, q = self._quality(batch.embeddings, batch.observed)
            scores = self.unified(q)
            self.timings["kernels"] += time.perf_counter() - t0
        ok = iter(range(len(batch.embeddings) if batch.embeddings is not None else 0))
        for it in batch.items:
            if it.error is not None:
                yield Result(it.path, float("nan"), nan, it.error, it.det_score, it.box)
                continue
            j = next(ok)
            if np.isnan(cos[j]).any() or np.isnan(q[j]):
                yield Result(it.path, float("nan"), nan, "the model returned a zero or non-finite embedding",
                             it.det_score, it.box)
            else:
                self.not_crops += it.photo_like
                yield Result(it.path, float(q[j]), cos[j], None, it.det_score, it.box, float(scores[j]))


def _produced_in_scope(batches: Iterator[Batch], scope) -> Iterator[Batch]:
    """Each batch of `batches` produced inside a fresh `scope()` (the consumer's CUDA device and stream: the
    pipeline's output is then ordered on the stream the runner reads it on)."""
    with closing(batches):
        while True:
            with scope():
                batch = next(batches, None)
            if batch is None:
                return
            yield batch
