"""The perturbation kinds: each kind is one object holding its parameters, its keyed draws, its DALI operator and
whether it needs a partner image; plus spec parsing and the plan of views.

A spec string names one perturbation and sets some of its parameters::

    affine:rot=0.5,scale=1.01,flip=1      fixed values
    affine:rot=-3:3                        a range: each view draws rot uniformly from [-3, 3]
    gaussian:sigma=8                       fixed parameters, but the noise itself is random

`--views K` draws K views per spec; a spec that is fully deterministic (no range, no inherent randomness) gives
exactly one view, since K copies would be identical.

Keyed draws, vectorised over a batch: each image key is hashed once with the seed (blake2b, 64 bits), and every
random number a view needs is SplitMix64 of (that word, the view index, a counter naming the draw, a column),
computed as NumPy uint64 arrays for the whole batch at once. A value is a function of (seed, image key, view,
counter) alone, never of an image's position in a batch, the batch size or the worker.

Each kind's `arrays` turns a batch's draws into the arrays fed to the DALI graph (one row per image) and its
`operator` adds its nodes to the graph; DALI itself is imported only by `engine.pipeline`, which passes its `fn`
and `types` modules in a `Graph`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from fiqa_trt.errors import FiqaError

# ---------------------------------------------------------------------------------------------------- keyed draws

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = (np.uint64(s) for s in (30, 27, 31, 11))


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 arrays (wrapping arithmetic, a bijection of 64-bit words)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def image_words(seed: int, keys: Sequence[str]) -> np.ndarray:
    """(N,) uint64: one 64-bit blake2b hash of (seed, image key) per image, the root of all its draws. A key is
    hashed as the raw bytes of the name the OS gave (a name that is not valid UTF-8 holds surrogate escapes), so any
    file name works and every valid UTF-8 name keeps its hash."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(_raw(f"{seed}\x1f{k}"), digest_size=8).digest(), "little") for k in keys),
        np.uint64, len(keys))


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class Draws:
    """The keyed random numbers of one view for a batch of images.

    `bits(counter, m)` is (N, m) uint64: SplitMix64 seeded by mix(image word ^ mix(view, counter)), its first m
    outputs. A kind names each of its draws by a fixed counter, so adding a draw never shifts the others."""

    def __init__(self, words: np.ndarray, view_index: int):
        self.words = np.asarray(words, np.uint64)
        self.view = int(view_index)

    def __len__(self) -> int:
        return len(self.words)

    def bits(self, counter: int, m: int = 1) -> np.ndarray:
        stream = _mix64(np.array([(self.view << 32) | counter], np.uint64) + _GOLDEN)
        base = _mix64(self.words ^ stream)
        return _mix64(base[:, None] + _GOLDEN * np.arange(1, m + 1, dtype=np.uint64))

    def uniform(self, counter: int, m: int | None = None) -> np.ndarray:
        """Uniform float64 in [0, 1): (N,) when m is None, else (N, m)."""
        u = (self.bits(counter, m or 1) >> _S11).astype(np.float64) * (1.0 / (1 << 53))
        return u[:, 0] if m is None else u

    def integers(self, counter: int, low: int, high: int) -> np.ndarray:
        """(N,) int64 uniform in [low, high] (both ends included)."""
        return low + np.floor(self.uniform(counter) * (high - low + 1)).astype(np.int64)


def draw_values(spec: "Spec", draws: Draws) -> dict[str, float | np.ndarray]:
    """Per parameter: the fixed value (a float), or (N,) values drawn from its range (counter = parameter position)."""
    out: dict[str, float | np.ndarray] = {}
    for counter, p in enumerate(spec.kind.params):
        v = spec.values[p.name]
        if isinstance(v, tuple):
            v = (draws.integers(counter, int(v[0]), int(v[1])).astype(np.float64) if p.integer
                 else v[0] + (v[1] - v[0]) * draws.uniform(counter))
        out[p.name] = v
    return out


def _column(value, n: int, dtype=np.float32) -> np.ndarray:
    """(n,) array of a parameter's values (a fixed value repeated)."""
    return np.broadcast_to(np.asarray(value, dtype), (n,)).copy()


# ---------------------------------------------------------------------------------------------------- kinds


@dataclass(frozen=True)
class Param:
    name: str
    default: float
    low: float  # the valid range of the parameter itself (not of a user range)
    high: float
    help: str
    integer: bool = False


@dataclass(frozen=True)
class Graph:
    """What a kind's operator needs from the pipeline being built: DALI's modules and the graph's settings."""

    fn: Any
    types: Any
    device: str  # "cpu" or "gpu": where the view's pixels are
    h: int
    w: int
    noise_seed: int  # for the kinds whose pixel noise comes from DALI's own generators
    partner: Any = None  # the decoded partner image (kinds with needs_partner)

    def on_device(self, node):
        """A per-sample input (fed on the host) moved to where the pixels are."""
        return node.gpu() if self.device == "gpu" else node

    def constant(self, array: np.ndarray, layout: str | None = None):
        dtype = {np.dtype(np.uint32): self.types.UINT32, np.dtype(np.float32): self.types.FLOAT}[array.dtype]
        return self.types.Constant(array, dtype=dtype, layout=layout, device=self.device)

    def blend(self, a, b, lam):
        fn, t = self.fn, self.types
        lam = self.on_device(lam)
        return fn.cast(lam * fn.cast(a, dtype=t.FLOAT) + (1.0 - lam) * fn.cast(b, dtype=t.FLOAT), dtype=t.UINT8)


@dataclass(frozen=True)
class Kind:
    """One perturbation kind. Subclasses define `arrays` (host side, vectorised) and `operator` (DALI nodes)."""

    name: str
    help: str
    params: tuple[Param, ...]
    random: bool  # True when each view is random even with every parameter fixed (noise, positions, partners)
    inputs: tuple[str, ...] = ()  # names of the per-image arrays `arrays` returns (the graph's external sources)
    needs_partner: bool = False  # True when each view blends in another input image (fed by the pipeline)
    warps: bool = False  # True when the view is one affine warp (input "matrix"): the pipeline composes the image's
    # placement on the template into it, so the placed view is one interpolation of the unplaced image

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.params)
        raise FiqaError(f"perturbation '{self.name}' has no parameter '{name}'; its parameters are: {known}")

    def arrays(self, spec: "Spec", draws: Draws, h: int, w: int) -> dict[str, np.ndarray | list]:
        """The per-image inputs of one view for a batch: name -> (N, ...) array (or a list of N arrays)."""
        raise NotImplementedError

    def short_name(self, spec: "Spec") -> str:
        """What a view of this spec is, for column labels: the kind and its parameter's value (`lowres10`,
        `gaussian8`), or each parameter named when the kind has several (`elastic_alpha50_sigma5`)."""
        if len(self.params) == 1:
            return f"{self.name}{_short(spec.values[self.params[0].name])}"
        return "_".join([self.name] + [f"{p.name}{_short(spec.values[p.name])}" for p in self.params])

    def operator(self, g: Graph, image, src: dict):
        """The view's DALI node from the image and the external sources named by `inputs`: the original as placed on
        the template, or for a warping kind the image before placement (its matrix then holds the placement)."""
        raise NotImplementedError


def _short(value: float | tuple[float, float]) -> str:
    """A parameter value in a column label: `0.5`, `-1`, a range `-3to3`."""
    return f"{value[0]:g}to{value[1]:g}" if isinstance(value, tuple) else f"{value:g}"


def _affine_matrix(rot: float, scale: float, tx: float, ty: float, flip: float, h: int, w: int) -> np.ndarray:
    """2x3 matrix mapping output to source coordinates (DALI's default, pixel corners at integers), flip = -1 or 1."""
    theta = math.radians(rot)
    cos, sin = math.cos(theta) / scale, math.sin(theta) / scale
    # forward: out = c + R(theta) * s * F * (in - c) + t; inverse: in = c + F * R(-theta) / s * (out - c - t)
    inv = np.array([[flip * cos, -flip * sin], [sin, cos]])
    c = np.array([w / 2.0, h / 2.0])
    t = np.array([tx, ty])
    b = c - inv @ (c + t)
    return np.hstack([inv, b[:, None]]).astype(np.float32)


class Affine(Kind):
    FLIP = 16  # counter of the flip coin

    def short_name(self, spec):
        """The transform's parts that are not the identity: `flip`, `rot6`, `scale0.95`, `flip_tx-1` (a flip
        drawn with probability p: `flip0.5`); `affine` for the identity."""
        v = spec.values
        flip = v["flip"]
        parts = [] if flip == 0 else ["flip" if flip == 1 else f"flip{_short(flip)}"]
        parts += [f"{k}{_short(v[k])}" for k, identity in (("rot", 0), ("scale", 1), ("tx", 0), ("ty", 0))
                  if v[k] != identity]
        return "_".join(parts) or self.name

    def arrays(self, spec, draws, h, w):
        v, n = draw_values(spec, draws), len(draws)
        p = v["flip"]
        flip = np.ones(n, bool) if p >= 1.0 else (np.zeros(n, bool) if p <= 0.0 else draws.uniform(self.FLIP) < p)
        geometry = [v[k] for k in ("rot", "scale", "tx", "ty")]
        if not any(isinstance(x, np.ndarray) for x in geometry):  # one geometry: two matrices, chosen by the flip
            pair = np.stack([_affine_matrix(*geometry, 1.0, h, w), _affine_matrix(*geometry, -1.0, h, w)])
            return {"matrix": pair[flip.astype(np.intp)]}
        rot, scale, tx, ty = (np.broadcast_to(np.asarray(x, np.float64), (n,)) for x in geometry)
        theta = np.radians(rot)
        cos, sin = np.cos(theta) / scale, np.sin(theta) / scale
        f = np.where(flip, -1.0, 1.0)
        m = np.empty((n, 2, 3))
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = f * cos, -f * sin, sin, cos
        cx, cy = w / 2.0, h / 2.0
        m[:, 0, 2] = cx - (m[:, 0, 0] * (cx + tx) + m[:, 0, 1] * (cy + ty))
        m[:, 1, 2] = cy - (m[:, 1, 0] * (cx + tx) + m[:, 1, 1] * (cy + ty))
        return {"matrix": m.astype(np.float32)}

    def operator(self, g, image, src):
        return g.fn.warp_affine(image, matrix=src["matrix"], size=(g.h, g.w), interp_type=g.types.INTERP_LINEAR)


class Gaussian(Kind):
    def arrays(self, spec, draws, h, w):
        return {"sigma": _column(draw_values(spec, draws)["sigma"], len(draws))}

    def operator(self, g, image, src):
        return g.fn.noise.gaussian(image, stddev=src["sigma"], seed=g.noise_seed)


class Poisson(Kind):
    def arrays(self, spec, draws, h, w):
        return {"factor": _column(draw_values(spec, draws)["factor"], len(draws))}

    def operator(self, g, image, src):
        return g.fn.noise.shot(image, factor=src["factor"], seed=g.noise_seed)


class SaltPepper(Kind):
    def arrays(self, spec, draws, h, w):
        v, n = draw_values(spec, draws), len(draws)
        return {"amount": _column(v["amount"], n), "salt": _column(v["salt"], n)}

    def operator(self, g, image, src):
        return g.fn.noise.salt_and_pepper(image, prob=src["amount"], salt_vs_pepper=src["salt"], seed=g.noise_seed)


class Occlusion(Kind):
    Y, X = 16, 17  # counters of the patch position

    def arrays(self, spec, draws, h, w):
        size = np.minimum(_column(draw_values(spec, draws)["size"], len(draws), np.int64), min(h, w))
        y = np.floor(draws.uniform(self.Y) * (h - size + 1))
        x = np.floor(draws.uniform(self.X) * (w - size + 1))
        return {"anchor": np.stack([y, x], 1).astype(np.float32), "shape": np.stack([size, size], 1).astype(np.float32)}

    def operator(self, g, image, src):
        return g.fn.erase(image, anchor=src["anchor"], shape=src["shape"], axis_names="HW", fill_value=0)


class Border(Kind):
    def arrays(self, spec, draws, h, w):
        t = np.minimum(_column(draw_values(spec, draws)["thickness"], len(draws), np.float64), min(h, w))
        zero = np.zeros_like(t)
        anchor = np.stack([zero, zero, h - t, zero, zero, zero, zero, w - t], 1)
        shape = np.stack([t, np.full_like(t, w), t, np.full_like(t, w), np.full_like(t, h), t, np.full_like(t, h), t], 1)
        return {"anchor": anchor.astype(np.float32), "shape": shape.astype(np.float32)}

    def operator(self, g, image, src):
        return g.fn.erase(image, anchor=src["anchor"], shape=src["shape"], axis_names="HW", fill_value=0)


class LowRes(Kind):
    """Down to `size` x `size` pixels (DALI's antialiased linear resize: a triangle filter as wide as the scale,
    close to an area average) and back up to the model's size (bilinear): the face as a far, low-resolution camera
    would give it. Not one of the original study's perturbations: its views of dev faces give the recipes' centre."""

    def arrays(self, spec, draws, h, w):
        size = np.minimum(_column(draw_values(spec, draws)["size"], len(draws), np.float32), min(h, w))
        return {"size": np.stack([size, size], 1).astype(np.float32)}

    def operator(self, g, image, src):
        t = g.types
        small = g.fn.resize(image, size=src["size"], antialias=True, interp_type=t.INTERP_LINEAR)
        return g.fn.resize(small, size=(g.h, g.w), antialias=False, interp_type=t.INTERP_LINEAR)


def _mix32(g: Graph, x):
    """A 32-bit integer hash (lowbias32: xor-shift-multiply) as DALI arithmetic on uint32 (shifts as divisions)."""
    u32 = lambda v: g.types.Constant(v, dtype=g.types.UINT32)  # noqa: E731
    x = x ^ (x // u32(1 << 16))
    x = x * u32(0x7FEB352D)
    x = x ^ (x // u32(1 << 15))
    x = x * u32(0x846CA68B)
    return x ^ (x // u32(1 << 16))


def mix32(x: np.ndarray) -> np.ndarray:
    """NumPy twin of the graph's hash (tests check the graph against it)."""
    x = np.asarray(x, np.uint32)
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


class Elastic(Kind):
    """The displacement field is made inside the graph, on the device of the pixels: per pixel and axis a uint32
    hash of (pixel counter, the image's two key words) -> uniform(-1, 1), a Gaussian blur (DALI gaussian_blur,
    window int(8 sigma + 1) made odd, mirrored borders), times alpha / 2, added to the pixel grid, then remap. The
    host feeds 2 key words, sigma, window and alpha per image (20 bytes) instead of two maps."""

    KEY = 16

    def arrays(self, spec, draws, h, w):
        v, n = draw_values(spec, draws), len(draws)
        bits = draws.bits(self.KEY, 1)[:, 0]
        sigma = _column(v["sigma"], n)
        return {"key0": (bits & np.uint64(0xFFFFFFFF)).astype(np.uint32), "key1": (bits >> np.uint64(32)).astype(np.uint32),
                "sigma": sigma, "window": (np.floor(8 * sigma + 1).astype(np.int32) | 1),
                "alpha": _column(v["alpha"], n)}

    @staticmethod
    def field_uniforms(key0: np.ndarray, key1: np.ndarray, h: int, w: int) -> np.ndarray:
        """NumPy twin of the graph's uniform field before the blur: (N, 2, H, W, 1) float32 in [-1, 1)."""
        counter = np.arange(2 * h * w, dtype=np.uint32).reshape(2, h, w, 1)
        k0, k1 = (np.asarray(k, np.uint32).reshape(-1, 1, 1, 1, 1) for k in (key0, key1))
        x = mix32(mix32(counter * np.uint32(0x9E3779B1) + k0) ^ k1)
        return (x.astype(np.float32) * np.float32(2.0 / 4294967296.0) - np.float32(1.0)).astype(np.float32)

    def operator(self, g, image, src):
        fn, t, h, w = g.fn, g.types, g.h, g.w
        k0, k1 = g.on_device(src["key0"]), g.on_device(src["key1"])
        alpha = g.on_device(src["alpha"])
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        maps = []
        for axis, grid in enumerate((xs, ys)):
            counter = g.constant((np.arange(h * w, dtype=np.uint32) + np.uint32(axis * h * w)).reshape(h, w, 1), "HWC")
            x = _mix32(g, _mix32(g, counter * t.Constant(0x9E3779B1, dtype=t.UINT32) + k0) ^ k1)
            uniform = fn.cast(x, dtype=t.FLOAT) * (2.0 / 4294967296.0) - 1.0
            smooth = fn.gaussian_blur(fn.reshape(uniform, layout="HWC"), sigma=src["sigma"], window_size=src["window"])
            maps.append(g.constant(grid.reshape(h, w, 1), "HWC") + smooth * (alpha * 0.5))
        from fiqa_trt.engine import cpu_fallbacks

        return cpu_fallbacks.remap(image, maps[0], maps[1], g.device)


def derangements(draws: Draws, counter: int, n: int, attempts: int = 64) -> np.ndarray:
    """(N, n) permutations of range(n) with no element in place, uniform over derangements: attempt j of an image
    uses counter + j, so an image's permutation does not depend on the others in its batch."""
    out = np.empty((len(draws), n), np.int64)
    todo = np.arange(len(draws))
    for j in range(attempts):
        perm = np.argsort(draws.uniform(counter + j, n)[todo], axis=1, kind="stable")
        ok = ~(perm == np.arange(n)).any(axis=1)
        out[todo[ok]] = perm[ok]
        todo = todo[~ok]
        if not len(todo):
            return out
    out[todo] = (np.arange(n) + 1) % n  # after 64 rejections (p < 1e-12): a cyclic shift, still a derangement
    return out


class SelfMixup(Kind):
    PERM = 16  # counters PERM .. PERM + 63 for the derangement's attempts

    def arrays(self, spec, draws, h, w):
        v, n = draw_values(spec, draws), len(draws)
        grids = np.minimum(_column(v["grid"], n, np.int64), min(h, w))
        rows: list[dict] = [None] * n  # type: ignore[list-item]
        for grid in np.unique(grids):
            sel = np.nonzero(grids == grid)[0]
            parts = self._pastes(int(grid), h, w, derangements(_Subset(draws, sel), self.PERM, int(grid) ** 2), sel)
            if len(sel) == n:
                return {**parts, "lam": _column(v["lam"], n)}
            for j, i in enumerate(sel):
                rows[i] = {k: a[j] for k, a in parts.items()}
        out: dict = {k: [r[k] for r in rows] for k in ("ids", "in_anchors", "out_anchors", "shapes")}
        out["lam"] = _column(v["lam"], n)
        return out

    @staticmethod
    def _pastes(grid: int, h: int, w: int, perms: np.ndarray, index_in_batch: np.ndarray) -> dict[str, np.ndarray]:
        th, tw = h // grid, w // grid
        anchors = np.array([(r * th, c * tw) for r in range(grid) for c in range(grid)], np.int32)
        shapes = np.tile(np.array([th, tw], np.int32), (grid * grid, 1))
        out_anchors = anchors
        in_anchors = anchors[perms]  # (m, grid*grid, 2)
        # pixels past the last whole tile (when grid does not divide the size) are pasted where they are
        extra = [((0, grid * tw), (h, w - grid * tw)), ((grid * th, 0), (h - grid * th, grid * tw))]
        keep = [(a, s) for a, s in extra if s[0] > 0 and s[1] > 0]
        if keep:
            fixed = np.array([a for a, _ in keep], np.int32)
            in_anchors = np.concatenate([in_anchors, np.broadcast_to(fixed, (len(perms), *fixed.shape))], 1)
            out_anchors = np.vstack([out_anchors, fixed])
            shapes = np.vstack([shapes, np.array([s for _, s in keep], np.int32)])
        m, pastes = len(perms), len(shapes)
        return {"ids": np.repeat(index_in_batch.astype(np.int32)[:, None], pastes, 1),
                "in_anchors": np.ascontiguousarray(in_anchors, np.int32),
                "out_anchors": np.ascontiguousarray(np.broadcast_to(out_anchors, (m, pastes, 2)), np.int32),
                "shapes": np.ascontiguousarray(np.broadcast_to(shapes, (m, pastes, 2)), np.int32)}

    def operator(self, g, image, src):
        shuffled = g.fn.multi_paste(image, in_ids=src["ids"], in_anchors=src["in_anchors"],
                                    out_anchors=src["out_anchors"], shapes=src["shapes"], output_size=[g.h, g.w])
        return g.blend(image, shuffled, src["lam"])


class _Subset(Draws):
    """The draws of some images of a batch (their words only)."""

    def __init__(self, draws: Draws, rows: np.ndarray):
        super().__init__(draws.words[rows], draws.view)


class Mixup(Kind):
    PARTNER = 16  # counter of the partner choice

    def arrays(self, spec, draws, h, w):
        return {"lam": _column(draw_values(spec, draws)["lam"], len(draws))}

    def partner_offsets(self, draws: Draws, population: int) -> np.ndarray:
        """(N,) offsets in [1, population - 1]: the partner of image i of the population is (i + offset) mod size."""
        return 1 + np.floor(draws.uniform(self.PARTNER) * (population - 1)).astype(np.int64)

    def operator(self, g, image, src):
        return g.blend(image, g.partner, src["lam"])


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Affine(
            "affine",
            "rotation about the centre, isotropic scale, translation, then horizontal flip (border pixels repeated)",
            (
                Param("rot", 0.5, -180, 180, "rotation in degrees, counter-clockwise"),
                Param("scale", 1.01, 0.1, 10, "scale factor (>1 zooms in)"),
                Param("tx", 0.0, -1000, 1000, "horizontal translation in pixels"),
                Param("ty", 0.0, -1000, 1000, "vertical translation in pixels"),
                Param("flip", 1.0, 0, 1, "probability of a horizontal flip (1: always, 0: never)"),
            ),
            random=False, inputs=("matrix",), warps=True,
        ),
        Gaussian(
            "gaussian",
            "additive Gaussian noise, clipped to [0, 255]",
            (Param("sigma", 8.0, 0, 255, "standard deviation in pixel units (0-255 scale)"),),
            random=True, inputs=("sigma",),
        ),
        Poisson(
            "poisson",
            "shot noise: out = Poisson(x / factor) * factor, so the variance grows with the intensity",
            (Param("factor", 1.0, 1e-3, 255, "photon size in pixel units: larger means stronger noise"),),
            random=True, inputs=("factor",),
        ),
        SaltPepper(
            "saltpepper",
            "salt-and-pepper noise: a fraction of pixels set to 255 (salt) or 0 (pepper), all channels together",
            (
                Param("amount", 0.02, 0, 1, "fraction of pixels replaced"),
                Param("salt", 0.5, 0, 1, "fraction of the replaced pixels that become salt (white)"),
            ),
            random=True, inputs=("amount", "salt"),
        ),
        Occlusion(
            "occlusion",
            "a black square patch at a random position fully inside the image",
            (Param("size", 16, 1, 4096, "side of the patch in pixels", integer=True),),
            random=True, inputs=("anchor", "shape"),
        ),
        Border(
            "border",
            "structured occlusion: a black frame of the given thickness along all four borders",
            (Param("thickness", 8, 1, 2048, "frame thickness in pixels", integer=True),),
            random=False, inputs=("anchor", "shape"),
        ),
        Elastic(
            "elastic",
            "elastic deformation as torchvision's ElasticTransform: uniform(-1, 1) displacements smoothed by a "
            "Gaussian of std sigma, scaled by alpha/2 pixels, bilinear resampling, black outside",
            (
                Param("alpha", 50.0, 0, 10000, "displacement magnitude (torchvision convention)"),
                Param("sigma", 5.0, 0.1, 100, "smoothness of the displacement field in pixels"),
            ),
            random=True, inputs=("key0", "key1", "sigma", "window", "alpha"),
        ),
        LowRes(
            "lowres",
            "low resolution: down to size x size pixels (antialiased) and back up to the model's size (bilinear)",
            (Param("size", 10, 2, 4096, "side of the low-resolution image in pixels", integer=True),),
            random=False, inputs=("size",),
        ),
        SelfMixup(
            "selfmixup",
            "the study's self-mixup: lam * I + (1 - lam) * S(I), where S cuts I into a grid x grid of tiles and "
            "shuffles them so that no tile stays in place (lam=0 gives the shuffled image alone)",
            (
                Param("grid", 4, 2, 64, "tiles per side", integer=True),
                Param("lam", 0.9, 0, 1, "weight of the original image"),
            ),
            random=True, inputs=("ids", "in_anchors", "out_anchors", "shapes", "lam"),
        ),
        Mixup(
            "mixup",
            "classic mixup: lam * I + (1 - lam) * J, with J another input image chosen by the seeded rule "
            "(partner drawn from the whole input list, never the image itself)",
            (Param("lam", 0.9, 0, 1, "weight of the original image"),),
            random=True, inputs=("lam",), needs_partner=True,
        ),
    )
}

DEFAULT_SPEC = "affine:rot=0.5,scale=1.01,flip=1"

# `<kind>:study`: the original study's setting of each kind, one perturbed copy per image (the registry's defaults
# of saltpepper, border, elastic and selfmixup are much stronger). Kinds the study gave no setting for keep the
# registry's defaults.
STUDY = {
    "affine": "rot=0.5,scale=1.01,flip=1",
    "saltpepper": "amount=0.0002,salt=0.5",
    "elastic": "alpha=3,sigma=1",
    "border": "thickness=1",
    "selfmixup": "grid=4,lam=0",
    "gaussian": "",
    "poisson": "",
    "occlusion": "",
    "mixup": "",
}


@dataclass(frozen=True)
class Spec:
    """One parsed `--perturb` value: a kind and, per parameter, a fixed value or a (low, high) range."""

    kind: Kind
    values: dict[str, float | tuple[float, float]] = field(hash=False)

    @property
    def deterministic(self) -> bool:
        if self.kind.random or any(isinstance(v, tuple) for v in self.values.values()):
            return False
        flip = self.values.get("flip")
        return flip is None or flip in (0.0, 1.0)

    def label(self) -> str:
        def fmt(v: float | tuple[float, float]) -> str:
            return f"{v[0]:g}:{v[1]:g}" if isinstance(v, tuple) else f"{v:g}"

        return self.kind.name + ":" + ",".join(f"{k}={fmt(v)}" for k, v in self.values.items())


def _number(text: str, spec: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FiqaError(f"in '{spec}': '{name}={text}' is not a number (use a value like 0.5 or a range like -3:3)")


def parse_spec(text: str) -> Spec:
    text = text.strip()
    name, _, rest = text.partition(":")
    name = name.strip().lower().replace("_", "").replace("-", "")
    if name not in KINDS:
        raise FiqaError(f"unknown perturbation '{text.partition(':')[0]}'; available: {', '.join(KINDS)}")
    kind = KINDS[name]
    if rest.strip().lower() == "study":
        if name not in STUDY:
            raise FiqaError(f"'{name}' was not in the original study: it has no study setting")
        rest = STUDY[name]
    values: dict[str, float | tuple[float, float]] = {p.name: p.default for p in kind.params}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, raw = item.partition("=")
        if not eq:
            raise FiqaError(f"in '{text}': expected name=value, got '{item}'")
        param = kind.param(key.strip())
        parts = raw.split(":")
        if len(parts) == 2:
            lo, hi = _number(parts[0], text, key), _number(parts[1], text, key)
            if lo > hi:
                raise FiqaError(f"in '{text}': range {raw} has its low end above its high end")
            _check_bounds(param, lo, text)
            _check_bounds(param, hi, text)
            values[param.name] = (lo, hi) if lo != hi else lo
        elif len(parts) == 1:
            value = _number(raw, text, key)
            _check_bounds(param, value, text)
            values[param.name] = value
        else:
            raise FiqaError(f"in '{text}': '{item}' is neither a value nor a low:high range")
    return Spec(kind, values)


def _check_bounds(param: Param, value: float, spec: str) -> None:
    if not param.low <= value <= param.high:
        raise FiqaError(f"in '{spec}': {param.name}={value:g} is outside [{param.low:g}, {param.high:g}] ({param.help})")
    if param.integer and value != int(value):
        raise FiqaError(f"in '{spec}': {param.name} must be a whole number")


@dataclass(frozen=True)
class View:
    """One perturbed view: which spec it comes from and its index among all views (the key of its draws)."""

    index: int
    spec: Spec
    repeat: int
    spec_number: int | None = None  # 1-based position of its spec among the specs, set when specs share a name

    @property
    def label(self) -> str:
        """A column label that says what the view is, unique within a plan: the spec's short name
        (`Kind.short_name`: `flip`, `rot6`, `lowres10`), `_<repeat>` for each view of a random spec
        (`gaussian8_0`), and `_p<n>` (the n-th spec) when several specs have the same short name."""
        label = self.spec.kind.short_name(self.spec)
        label = label if self.spec.deterministic else f"{label}_{self.repeat}"
        return label if self.spec_number is None else f"{label}_p{self.spec_number}"

    def arrays(self, words: np.ndarray, h: int, w: int) -> dict[str, np.ndarray | list]:
        """This view's per-image inputs for a batch whose images have these `image_words`."""
        return self.spec.kind.arrays(self.spec, Draws(words, self.index), h, w)


def plan_views(specs: list[Spec], views: int) -> list[View]:
    if views < 1:
        raise FiqaError("--views must be at least 1")
    if not specs:
        specs = [parse_spec(DEFAULT_SPEC)]
    names = [spec.kind.short_name(spec) for spec in specs]
    plan: list[View] = []
    for number, spec in enumerate(specs, 1):
        shared = names.count(names[number - 1]) > 1
        for r in range(1 if spec.deterministic else views):
            plan.append(View(len(plan), spec, r, number if shared else None))
    return plan


def mixup_partners(indices: Sequence[int], keys: Sequence[str], view: View, seed: int) -> np.ndarray:
    """Indices (into `keys`, the whole input list) of the partner images of the images at `indices` for a mixup
    view: drawn over the whole list, never the image itself, keyed by (seed, image key, view)."""
    if len(keys) < 2:
        raise FiqaError("mixup needs at least two input images (the partner is another input image)")
    kind = view.spec.kind
    assert isinstance(kind, Mixup), kind
    idx = np.asarray(indices, np.int64)
    draws = Draws(image_words(seed, [keys[i] for i in idx]), view.index)
    return (idx + kind.partner_offsets(draws, len(keys))) % len(keys)


def mixup_partner(index: int, keys: Sequence[str], view: View, seed: int) -> int:
    """The partner of one image (`mixup_partners` for a single index)."""
    return int(mixup_partners([index], keys, view, seed)[0])


def view_rng(seed: int, key: str, index: int) -> np.random.Generator:
    """A sequential NumPy generator keyed by (seed, key, index), for callers that need a stream rather than the
    batched draws above (the evaluation's pair sampling)."""
    digest = hashlib.blake2b(_raw(f"{seed}\x1f{key}\x1f{index}"), digest_size=16).digest()
    return np.random.Generator(np.random.Philox(key=int.from_bytes(digest, "little")))


def describe() -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    """(name, help, [(param, default, help)]) for every registered perturbation, for the CLI listing."""
    return [(k.name, k.help, [(p.name, f"{p.default:g}", p.help) for p in k.params]) for k in KINDS.values()]
