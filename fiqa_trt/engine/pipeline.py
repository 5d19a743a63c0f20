"""The DALI pipeline: decode -> resize to the model size where needed -> K perturbed views -> stack.

One graph definition for both devices: on "cpu" every operator is a DALI CPU operator (decoders.image,
warp_affine, noise.*, erase, multi_paste, gaussian_blur, arithmetic, stack); on "gpu" decoding is "mixed" (with
`jpeg_fancy_upsampling`, so that nvJPEG upsamples 4:2:0 chroma as libjpeg-turbo does on the CPU) and the same
operators run on the GPU. The only operator DALI lacks on the CPU (remap, for elastic) lives in `cpu_fallbacks`.

Each view's operator and its per-image inputs come from its kind (`engine.perturbations`): the inputs are drawn
on the host for the whole batch at once from the images' keys (so they do not depend on batching) and fed as one
array per input. Elastic displacement fields are made inside the graph from two key words per image, on the
device of the pixels. The pixel noise of gaussian / poisson / saltpepper comes from DALI's own generators, seeded
from (seed, view): it is reproducible for the same inputs in the same order and batch size, but moves with an
image's position in the stream.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np

from fiqa_trt.engine.inputs import Item
from fiqa_trt.engine.perturbations import Graph, View, image_words, mixup_partner, mixup_partners
from fiqa_trt.errors import require
from fiqa_trt.weights.model_config import ModelConfig

__all__ = ["PerturbPipeline", "host_inputs", "mixup_partner", "mixup_partners"]


def _dali():
    return require("nvidia.dali", package="nvidia-dali-cuda130")


def _noise_seed(seed: int, view_index: int) -> int:
    digest = hashlib.blake2b(f"noise\x1f{seed}\x1f{view_index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def host_inputs(views: list[View], keys: list[str], seed: int, h: int, w: int) -> dict[str, np.ndarray | list]:
    """Every per-image input the graph's views need for one batch of images with these keys, by source name."""
    words = image_words(seed, keys)
    feeds: dict[str, np.ndarray | list] = {}
    for view in views:
        for name, array in view.arrays(words, h, w).items():
            feeds[f"v{view.index}_{name}"] = array
    return feeds


class PerturbPipeline:
    """Runs the graph for one batch of items and returns (N, 1+K, H, W, 3) uint8 in the model's colour order:
    a read-only NumPy array on the CPU, a CuPy array in device memory on the GPU (no host round trip).

    Built once and run for every batch (a batch may have fewer items than `batch_size`); `run` is serialised by a
    lock, so one pipeline can serve several callers in turn."""

    def __init__(self, views: list[View], config: ModelConfig, *, seed: int = 0, batch_size: int = 32,
                 num_threads: int = 2, device: str = "cpu", device_id: int | None = None, build: bool = True):
        """build=False only traces the graph: DALI checks every operator's arguments and where each input lives
        (CPU or GPU) while tracing, with no device needed; `run` needs a built pipeline."""
        self.views, self.config, self.seed = views, config, seed
        self.batch_size, self.device = batch_size, device
        self.h, self.w = config.input_size
        self._lock = threading.Lock()
        self._pipe = self._build(num_threads, device_id, build)

    def _build(self, num_threads: int, device_id: int | None, build: bool = True):
        dali = _dali()
        from nvidia.dali import fn, types

        device, h, w, cfg = self.device, self.h, self.w, self.config
        color = types.BGR if cfg.color == "BGR" else types.RGB
        decoder_device = "mixed" if device == "gpu" else "cpu"

        def decode_resized(name: str):
            image = fn.decoders.image(fn.external_source(name=name), device=decoder_device, output_type=color,
                                      jpeg_fancy_upsampling=True)
            if fn.external_source(name=f"{name}_resize"):
                image = fn.resize(image, size=(h, w), antialias=True)
            return image

        def perturb(image, view: View):
            kind = view.spec.kind
            src = {n: fn.external_source(name=f"v{view.index}_{n}") for n in kind.inputs}
            partner = decode_resized(f"v{view.index}_partner") if kind.needs_partner else None
            graph = Graph(fn, types, device, h, w, _noise_seed(self.seed, view.index), partner)
            return kind.operator(graph, image, src)

        @dali.pipeline_def(batch_size=self.batch_size, num_threads=num_threads, device_id=device_id,
                           exec_dynamic=True, prefetch_queue_depth=1, enable_conditionals=True)
        def graph():
            image = decode_resized("enc")
            # uint8, in the model's colour order: normalisation and layout are the runner's (fused into the model)
            return fn.stack(image, *(perturb(image, view) for view in self.views))

        pipe = graph()
        if build:
            pipe.build()
        return pipe

    def _needs_resize(self, items: list[Item]) -> np.ndarray:
        return np.array([it.size != (self.h, self.w) for it in items], bool)

    def run(self, items: list[Item], partners: dict[int, list[Item]] | None = None) -> np.ndarray:
        """items: checked items (bytes and size known); partners: view index -> partner item per image."""
        feeds = host_inputs(self.views, [it.key for it in items], self.seed, self.h, self.w)
        with self._lock:
            pipe = self._pipe
            pipe.feed_input("enc", [it.data for it in items])
            pipe.feed_input("enc_resize", self._needs_resize(items))
            for name, array in feeds.items():
                pipe.feed_input(name, array)
            for view in self.views:
                if view.spec.kind.needs_partner:
                    pipe.feed_input(f"v{view.index}_partner", [p.data for p in partners[view.index]])
                    pipe.feed_input(f"v{view.index}_partner_resize", self._needs_resize(partners[view.index]))
            if self.device == "gpu":  # outputs ready on the caller's current CuPy stream, kept in device memory
                import cupy

                (out,) = pipe.run(cupy.cuda.get_current_stream().ptr)
                return cupy.from_dlpack(out.as_tensor())
            (out,) = pipe.run()
        return np.from_dlpack(out.as_tensor())  # zero copy; the dynamic executor keeps it valid while referenced
