"""The DALI pipeline: image (decoded, or given as pixels) -> resized to the model size where needed -> placed on the
model's template (one affine warp per image, when the scorer realigns or aligns) -> K perturbed views -> stack.

One graph definition for both devices: on "cpu" every operator is a DALI CPU operator (decoders.image,
warp_affine, noise.*, erase, multi_paste, gaussian_blur, arithmetic, stack); on "gpu" decoding is "mixed" (with
`jpeg_fancy_upsampling`, so that nvJPEG upsamples 4:2:0 chroma as libjpeg-turbo does on the CPU) and the same
operators run on the GPU. The only operator DALI lacks on the CPU (remap, for elastic) lives in `cpu_fallbacks`.

Input forms: encoded files (bytes, decoded in the graph) or decoded RGB pixels ((H, W, 3) uint8, fed as they are:
in-memory crops, photos the host decoded to find faces); one graph per form, each built on first use.

Placement: each `Sample` may carry a forward 2x3 matrix (`engine.geometry`: pixels of the image as the graph holds
it, after the resize when the sample asks for one, to pixels of the model's input) that puts the face on the
template: the realignment of `engine.template` or the face alignment of `engine.align`. The original is warped by
it (bilinear, border pixels repeated, as OpenCV's BORDER_REPLICATE); a view that is itself an affine warp
(`Kind.warps`) is warped from the unplaced image by its own matrix composed with the placement, so the face goes
through one interpolation in every view; the other views perturb the placed original. The identity placement gives
the image back exactly. A graph without placements (no realignment, no alignment) has no placement node at all.

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
from dataclasses import dataclass

import numpy as np

from fiqa_trt.engine import geometry
from fiqa_trt.engine.perturbations import Graph, View, image_words, mixup_partner, mixup_partners
from fiqa_trt.errors import require
from fiqa_trt.weights.model_config import ModelConfig

__all__ = ["PerturbPipeline", "Sample", "host_inputs", "mixup_partner", "mixup_partners"]
FORMS = ("encoded", "pixels")


def _dali():
    return require("nvidia.dali", package="nvidia-dali-cuda130")


def _noise_seed(seed: int, view_index: int) -> int:
    digest = hashlib.blake2b(f"noise\x1f{seed}\x1f{view_index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class Sample:
    """One image as the pipeline takes it.

    `data`: the encoded file (1-D uint8) or RGB pixels (H, W, 3) uint8; `size`: its decoded (height, width);
    `key`: the root of its view draws; `resize`: resized to the model's input size first (antialiased);
    `placement`: forward 2x3 matrix from the (resized) image to the model's input, None for none (the identity)."""

    key: str
    data: np.ndarray
    size: tuple[int, int]
    resize: bool
    placement: np.ndarray | None = None

    @property
    def form(self) -> str:
        return "pixels" if np.ndim(self.data) == 3 else "encoded"

    @classmethod
    def of(cls, item, input_size: tuple[int, int], placement: np.ndarray | None = None) -> "Sample":
        """The sample of a checked item (`engine.inputs.Item`: bytes or pixels in `data`, `size` known), resized
        when it is not at `input_size`."""
        return cls(item.key, item.data, tuple(item.size), tuple(item.size) != tuple(input_size), placement)


def host_inputs(views: list[View], keys: list[str], seed: int, h: int, w: int,
                placements: np.ndarray | None = None) -> dict[str, np.ndarray | list]:
    """Every per-image input the graph's views need for one batch of images with these keys, by source name.
    `placements` ((N, 2, 3) forward matrices): composed into the matrix of every warping view."""
    words = image_words(seed, keys)
    feeds: dict[str, np.ndarray | list] = {}
    placed = None if placements is None else geometry.to_dali(placements)
    for view in views:
        for name, array in view.arrays(words, h, w).items():
            if placed is not None and view.spec.kind.warps and name == "matrix":
                array = geometry.compose(placed, np.asarray(array, np.float64)).astype(np.float32)
            feeds[f"v{view.index}_{name}"] = array
    return feeds


class PerturbPipeline:
    """Runs the graph for one batch of samples and returns (N, 1+K, H, W, 3) uint8 in the model's colour order:
    a read-only NumPy array on the CPU, a CuPy array in device memory on the GPU (no host round trip).

    `placed`: the graph warps every image by its sample's placement (see the module docstring). The graph of each
    input form is built on its first use and run for every batch of that form (a batch may have fewer samples than
    `batch_size`); `run` is serialised by a lock, so one pipeline can serve several callers in turn."""

    def __init__(self, views: list[View], config: ModelConfig, *, seed: int = 0, batch_size: int = 32,
                 num_threads: int = 2, device: str = "cpu", device_id: int | None = None, placed: bool = False,
                 build: bool = True):
        """build=False only traces the graphs: DALI checks every operator's arguments and where each input lives
        (CPU or GPU) while tracing, with no device needed; `run` needs a built pipeline."""
        self.views, self.config, self.seed = views, config, seed
        self.batch_size, self.device, self.placed = batch_size, device, placed
        self.num_threads, self.device_id, self._build_graphs = num_threads, device_id, build
        self.h, self.w = config.input_size
        self._lock = threading.Lock()
        self._pipes: dict[str, object] = {}

    def graph(self, form: str = "encoded"):
        """The DALI pipeline of one input form (built, or only traced with build=False), made on first use."""
        if form not in self._pipes:
            self._pipes[form] = self._build(form)
        return self._pipes[form]

    @property
    def _pipe(self):  # the encoded-input graph (the tests trace it)
        return self.graph("encoded")

    def _build(self, form: str):
        dali = _dali()
        from nvidia.dali import fn, types

        device, h, w, cfg = self.device, self.h, self.w, self.config
        color = types.BGR if cfg.color == "BGR" else types.RGB

        def source(name: str):
            """The image of input `name` in the model's colour order, resized where its sample asks."""
            if form == "pixels":
                image = fn.external_source(name=name, layout="HWC")
                image = image.gpu() if device == "gpu" else image
                if cfg.color == "BGR":
                    image = fn.color_space_conversion(image, image_type=types.RGB, output_type=types.BGR)
            else:
                image = fn.decoders.image(fn.external_source(name=name), device="mixed" if device == "gpu" else "cpu",
                                          output_type=color, jpeg_fancy_upsampling=True)
            if fn.external_source(name=f"{name}_resize"):
                image = fn.resize(image, size=(h, w), antialias=True)
            return image

        def place(name: str, image):
            if not self.placed:
                return image
            return fn.warp_affine(image, matrix=fn.external_source(name=f"{name}_place"), size=(h, w),
                                  interp_type=types.INTERP_LINEAR)

        def perturb(image, original, view: View):
            kind = view.spec.kind
            src = {n: fn.external_source(name=f"v{view.index}_{n}") for n in kind.inputs}
            partner = None
            if kind.needs_partner:
                partner = place(f"v{view.index}_partner", source(f"v{view.index}_partner"))
            graph = Graph(fn, types, device, h, w, _noise_seed(self.seed, view.index), partner)
            # a warping view takes the unplaced image: its matrix is composed with the placement (host_inputs)
            return kind.operator(graph, image if kind.warps else original, src)

        @dali.pipeline_def(batch_size=self.batch_size, num_threads=self.num_threads, device_id=self.device_id,
                           exec_dynamic=True, prefetch_queue_depth=1, enable_conditionals=True)
        def graph():
            image = source("enc")
            original = place("enc", image)
            # uint8, in the model's colour order: normalisation and layout are the runner's (fused into the model)
            return fn.stack(original, *(perturb(image, original, view) for view in self.views))

        pipe = graph()
        if self._build_graphs:
            pipe.build()
        return pipe

    def _feed(self, pipe, name: str, samples: list[Sample]) -> None:
        pipe.feed_input(name, [s.data for s in samples])
        pipe.feed_input(f"{name}_resize", np.array([s.resize for s in samples], bool))
        if self.placed:
            pipe.feed_input(f"{name}_place", geometry.to_dali(_placements(samples)))

    def run(self, samples: list[Sample], partners: dict[int, list[Sample]] | None = None) -> np.ndarray:
        """samples: one input form; partners: view index -> partner sample per image (mixup views)."""
        forms = {s.form for s in samples}
        if len(forms) != 1:
            raise ValueError(f"one batch holds one input form, got {sorted(forms)}")
        placements = _placements(samples) if self.placed else None
        feeds = host_inputs(self.views, [s.key for s in samples], self.seed, self.h, self.w, placements)
        with self._lock:
            pipe = self.graph(forms.pop())
            self._feed(pipe, "enc", samples)
            for name, array in feeds.items():
                pipe.feed_input(name, array)
            for view in self.views:
                if view.spec.kind.needs_partner:
                    self._feed(pipe, f"v{view.index}_partner", partners[view.index])
            if self.device == "gpu":  # outputs ready on the caller's current CuPy stream, kept in device memory
                import cupy

                (out,) = pipe.run(cupy.cuda.get_current_stream().ptr)
                return cupy.from_dlpack(out.as_tensor())
            (out,) = pipe.run()
        return np.from_dlpack(out.as_tensor())  # zero copy; the dynamic executor keeps it valid while referenced


def _placements(samples: list[Sample]) -> np.ndarray:
    """(N, 2, 3) float64 forward placements of samples (the identity where a sample has none)."""
    return np.stack([geometry.IDENTITY if s.placement is None else np.asarray(s.placement, np.float64)
                     for s in samples])
