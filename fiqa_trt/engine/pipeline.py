"""The DALI pipeline: decode -> resize to the model size where needed -> K perturbed views -> stack.

One graph definition for both devices: on "cpu" every operator is a DALI CPU operator (decoders.image,
warp_affine, noise.*, erase, multi_paste, arithmetic, stack); on "gpu" decoding is "mixed"
and the same operators run on the GPU. The only operator DALI lacks on the CPU (remap, for elastic) lives in
`cpu_fallbacks`.

Per-view parameters (affine matrices, patch positions, tile permutations, elastic maps, noise strengths, mixup
partners) are drawn on the host from `perturbations.view_rng(seed, image key, view)` and fed per sample, so they
do not depend on batching. The pixel noise of gaussian / poisson / saltpepper comes from DALI's own generators,
seeded from (seed, view): it is reproducible for the same inputs in the same order and batch size, but moves
with an image's position in the stream.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from fiqa_trt.engine import cpu_fallbacks
from fiqa_trt.engine.inputs import Item
from fiqa_trt.weights.model_config import ModelConfig
from fiqa_trt.engine.perturbations import View, draw, view_rng
from fiqa_trt.errors import FiqaError, require


def _dali():
    return require("nvidia.dali", package="nvidia-dali-cuda130")


# ---- host-side inputs of each perturbation kind: values drawn for one (image, view) -> arrays fed to DALI ----

def _affine_matrix(v: dict, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """2x3 matrix mapping output to source coordinates (DALI's default, pixel corners at integers)."""
    theta = math.radians(v["rot"])
    flip = -1.0 if (v["flip"] >= 1.0 or rng.uniform() < v["flip"]) else 1.0
    cos, sin = math.cos(theta) / v["scale"], math.sin(theta) / v["scale"]
    # forward: out = c + R(theta) * s * F * (in - c) + t; inverse: in = c + F * R(-theta) / s * (out - c - t)
    inv = np.array([[flip * cos, -flip * sin], [sin, cos]])
    c = np.array([w / 2.0, h / 2.0])
    t = np.array([v["tx"], v["ty"]])
    b = c - inv @ (c + t)
    return np.hstack([inv, b[:, None]]).astype(np.float32)


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def _tile_pastes(grid: int, h: int, w: int, rng: np.random.Generator):
    th, tw = h // grid, w // grid
    anchors = np.array([(r * th, c * tw) for r in range(grid) for c in range(grid)], np.int32)
    perm = _derangement(grid * grid, rng)
    in_anchors, out_anchors = anchors[perm], anchors
    shapes = np.tile(np.array([th, tw], np.int32), (grid * grid, 1))
    # pixels past the last whole tile (when grid does not divide the size) are pasted where they are
    extra = [((0, grid * tw), (h, w - grid * tw)), ((grid * th, 0), (h - grid * th, grid * tw))]
    for anchor, shape in extra:
        if shape[0] > 0 and shape[1] > 0:
            in_anchors = np.vstack([in_anchors, anchor])
            out_anchors = np.vstack([out_anchors, anchor])
            shapes = np.vstack([shapes, shape])
    return in_anchors.astype(np.int32), out_anchors.astype(np.int32), shapes.astype(np.int32)


def _elastic_maps(v: dict, rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    k = int(8 * v["sigma"] + 1) | 1
    disp = []
    for _ in range(2):
        field = rng.uniform(-1.0, 1.0, (h, w)).astype(np.float32)
        disp.append(cv2.GaussianBlur(field, (k, k), v["sigma"], borderType=cv2.BORDER_REFLECT) * (v["alpha"] / 2))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs + disp[0], ys + disp[1]


def view_inputs(view: View, key: str, index_in_batch: int, seed: int, h: int, w: int) -> dict[str, np.ndarray]:
    """The per-sample arrays one view of one image needs (names match the graph's external sources)."""
    rng = view_rng(seed, key, view.index)
    v = draw(view.spec, rng)
    f32 = lambda x: np.array(x, np.float32)  # noqa: E731
    kind = view.spec.kind.name
    if kind == "affine":
        return {"matrix": _affine_matrix(v, rng, h, w)}
    if kind == "gaussian":
        return {"sigma": f32(v["sigma"])}
    if kind == "poisson":
        return {"factor": f32(v["factor"])}
    if kind == "saltpepper":
        return {"amount": f32(v["amount"]), "salt": f32(v["salt"])}
    if kind == "occlusion":
        size = int(min(v["size"], h, w))
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        return {"anchor": f32([y, x]), "shape": f32([size, size])}
    if kind == "border":
        t = float(min(v["thickness"], h, w))
        return {"anchor": f32([0, 0, h - t, 0, 0, 0, 0, w - t]), "shape": f32([t, w, t, w, h, t, h, t])}
    if kind == "elastic":
        mapx, mapy = _elastic_maps(v, rng, h, w)
        return {"mapx": mapx, "mapy": mapy}
    if kind == "selfmixup":
        grid = int(min(v["grid"], h, w))
        in_anchors, out_anchors, shapes = _tile_pastes(grid, h, w, rng)
        ids = np.full(len(shapes), index_in_batch, np.int32)
        return {"ids": ids, "in_anchors": in_anchors, "out_anchors": out_anchors, "shapes": shapes,
                "lam": f32(v["lam"])}
    if kind == "mixup":
        return {"lam": f32(v["lam"])}
    raise AssertionError(f"no inputs defined for perturbation kind {kind}")


INPUT_NAMES = {
    "affine": ("matrix",),
    "gaussian": ("sigma",),
    "poisson": ("factor",),
    "saltpepper": ("amount", "salt"),
    "occlusion": ("anchor", "shape"),
    "border": ("anchor", "shape"),
    "elastic": ("mapx", "mapy"),
    "selfmixup": ("ids", "in_anchors", "out_anchors", "shapes", "lam"),
    "mixup": ("lam", "partner", "partner_resize"),
}


def mixup_partner(index: int, keys: list[str], view: View, seed: int) -> int:
    """Index (into `keys`) of the partner image for a mixup view: drawn over the whole input list, never itself."""
    if len(keys) < 2:
        raise FiqaError("mixup needs at least two input images (the partner is another input image)")
    rng = view_rng(seed, keys[index] + "\x1fpartner", view.index)
    return (index + int(rng.integers(1, len(keys)))) % len(keys)


def _noise_seed(seed: int, view_index: int) -> int:
    digest = hashlib.blake2b(f"noise\x1f{seed}\x1f{view_index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


class PerturbPipeline:
    """Runs the graph for one batch of items and returns (N, 1+K, H, W, 3) uint8 in the model's colour order:
    a read-only NumPy array on the CPU, a CuPy array in device memory on the GPU (no host round trip)."""

    def __init__(self, views: list[View], config: ModelConfig, *, seed: int = 0, batch_size: int = 32,
                 num_threads: int = 2, device: str = "cpu", device_id: int | None = None, build: bool = True):
        """build=False only traces the graph: DALI checks every operator's arguments and where each input lives
        (CPU or GPU) while tracing, with no device needed; `run` needs a built pipeline."""
        self.views, self.config, self.seed = views, config, seed
        self.batch_size, self.device = batch_size, device
        self.h, self.w = config.input_size
        self._pipe = self._build(num_threads, device_id, build)

    def _build(self, num_threads: int, device_id: int | None, build: bool = True):
        dali = _dali()
        from nvidia.dali import fn, types

        device, h, w, cfg = self.device, self.h, self.w, self.config
        color = types.BGR if cfg.color == "BGR" else types.RGB
        decoder_device = "mixed" if device == "gpu" else "cpu"

        def decode_resized(name: str):
            image = fn.decoders.image(fn.external_source(name=name), device=decoder_device, output_type=color)
            if fn.external_source(name=f"{name}_resize"):
                image = fn.resize(image, size=(h, w), antialias=True)
            return image

        def blend(a, b, lam):
            mixed = lam * fn.cast(a, dtype=types.FLOAT) + (1.0 - lam) * fn.cast(b, dtype=types.FLOAT)
            return fn.cast(mixed, dtype=types.UINT8)

        def perturb(image, view: View):
            src = {n: fn.external_source(name=f"v{view.index}_{n}") for n in INPUT_NAMES[view.spec.kind.name]
                   if n not in ("partner", "partner_resize")}
            kind, nseed = view.spec.kind.name, _noise_seed(self.seed, view.index)
            if kind == "affine":
                return fn.warp_affine(image, matrix=src["matrix"], interp_type=types.INTERP_LINEAR)
            if kind == "gaussian":
                return fn.noise.gaussian(image, stddev=src["sigma"], seed=nseed)
            if kind == "poisson":
                return fn.noise.shot(image, factor=src["factor"], seed=nseed)
            if kind == "saltpepper":
                return fn.noise.salt_and_pepper(image, prob=src["amount"], salt_vs_pepper=src["salt"], seed=nseed)
            if kind in ("occlusion", "border"):
                return fn.erase(image, anchor=src["anchor"], shape=src["shape"], axis_names="HW", fill_value=0)
            if kind == "elastic":
                return cpu_fallbacks.remap(image, src["mapx"], src["mapy"], device)
            if kind == "selfmixup":
                shuffled = fn.multi_paste(image, in_ids=src["ids"], in_anchors=src["in_anchors"],
                                          out_anchors=src["out_anchors"], shapes=src["shapes"], output_size=[h, w])
                return blend(image, shuffled, src["lam"])
            if kind == "mixup":
                return blend(image, decode_resized(f"v{view.index}_partner"), src["lam"])
            raise AssertionError(kind)

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

    def run(self, items: list[Item], partners: dict[int, list[Item]] | None = None) -> np.ndarray:
        """items: checked items (bytes and size known); partners: view index -> partner item per image."""
        pipe, h, w = self._pipe, self.h, self.w
        needs_resize = lambda its: [np.array(it.size != (h, w)) for it in its]  # noqa: E731
        pipe.feed_input("enc", [it.data for it in items])
        pipe.feed_input("enc_resize", needs_resize(items))
        per_view = [[view_inputs(view, it.key, i, self.seed, h, w) for i, it in enumerate(items)]
                    for view in self.views]
        for view, rows in zip(self.views, per_view):
            for name in INPUT_NAMES[view.spec.kind.name]:
                if name == "partner":
                    pipe.feed_input(f"v{view.index}_partner", [p.data for p in partners[view.index]])
                elif name == "partner_resize":
                    pipe.feed_input(f"v{view.index}_partner_resize", needs_resize(partners[view.index]))
                else:
                    pipe.feed_input(f"v{view.index}_{name}", [row[name] for row in rows])
        if self.device == "gpu":  # outputs ready on the caller's current CuPy stream, kept in device memory
            import cupy

            (out,) = pipe.run(cupy.cuda.get_current_stream().ptr)
            return cupy.from_dlpack(out.as_tensor())
        (out,) = pipe.run()
        return np.from_dlpack(out.as_tensor())  # zero copy; the dynamic executor keeps it valid while referenced
