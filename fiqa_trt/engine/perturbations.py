"""The perturbation registry and spec parsing: names, parameters, defaults, and per-view parameter draws.

A spec string names one perturbation and sets some of its parameters::

    affine:rot=0.5,scale=1.01,flip=1      fixed values
    affine:rot=-3:3                        a range: each view draws rot uniformly from [-3, 3]
    gaussian:sigma=8                       fixed parameters, but the noise itself is random

`--views K` draws K views per spec; a spec that is fully deterministic (no range, no inherent randomness) gives
exactly one view, since K copies would be identical. Every random draw made here comes from a generator keyed by
(global seed, image identity, view index), never from an image's position in a batch. This module knows nothing
of DALI: `engine.pipeline` turns the drawn values into operators.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from fiqa_trt.errors import FiqaError


@dataclass(frozen=True)
class Param:
    name: str
    default: float
    low: float  # the valid range of the parameter itself (not of a user range)
    high: float
    help: str
    integer: bool = False


@dataclass(frozen=True)
class Kind:
    name: str
    help: str
    params: tuple[Param, ...]
    random: bool  # True when each view is random even with every parameter fixed (noise, positions, partners)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.params)
        raise FiqaError(f"perturbation '{self.name}' has no parameter '{name}'; its parameters are: {known}")


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "affine",
            "rotation about the centre, isotropic scale, translation, then horizontal flip (border pixels repeated)",
            (
                Param("rot", 0.5, -180, 180, "rotation in degrees, counter-clockwise"),
                Param("scale", 1.01, 0.1, 10, "scale factor (>1 zooms in)"),
                Param("tx", 0.0, -1000, 1000, "horizontal translation in pixels"),
                Param("ty", 0.0, -1000, 1000, "vertical translation in pixels"),
                Param("flip", 1.0, 0, 1, "probability of a horizontal flip (1: always, 0: never)"),
            ),
            random=False,
        ),
        Kind(
            "gaussian",
            "additive Gaussian noise, clipped to [0, 255]",
            (Param("sigma", 8.0, 0, 255, "standard deviation in pixel units (0-255 scale)"),),
            random=True,
        ),
        Kind(
            "poisson",
            "shot noise: out = Poisson(x / factor) * factor, so the variance grows with the intensity",
            (Param("factor", 1.0, 1e-3, 255, "photon size in pixel units: larger means stronger noise"),),
            random=True,
        ),
        Kind(
            "saltpepper",
            "salt-and-pepper noise: a fraction of pixels set to 255 (salt) or 0 (pepper), all channels together",
            (
                Param("amount", 0.02, 0, 1, "fraction of pixels replaced"),
                Param("salt", 0.5, 0, 1, "fraction of the replaced pixels that become salt (white)"),
            ),
            random=True,
        ),
        Kind(
            "occlusion",
            "a black square patch at a random position fully inside the image",
            (Param("size", 16, 1, 4096, "side of the patch in pixels", integer=True),),
            random=True,
        ),
        Kind(
            "border",
            "structured occlusion: a black frame of the given thickness along all four borders",
            (Param("thickness", 8, 1, 2048, "frame thickness in pixels", integer=True),),
            random=False,
        ),
        Kind(
            "elastic",
            "elastic deformation as torchvision's ElasticTransform: uniform(-1, 1) displacements smoothed by a "
            "Gaussian of std sigma, scaled by alpha/2 pixels, bilinear resampling, black outside",
            (
                Param("alpha", 50.0, 0, 10000, "displacement magnitude (torchvision convention)"),
                Param("sigma", 5.0, 0.1, 100, "smoothness of the displacement field in pixels"),
            ),
            random=True,
        ),
        Kind(
            "selfmixup",
            "the study's self-mixup: lam * I + (1 - lam) * S(I), where S cuts I into a grid x grid of tiles and "
            "shuffles them so that no tile stays in place (lam=0 gives the shuffled image alone)",
            (
                Param("grid", 4, 2, 64, "tiles per side", integer=True),
                Param("lam", 0.9, 0, 1, "weight of the original image"),
            ),
            random=True,
        ),
        Kind(
            "mixup",
            "classic mixup: lam * I + (1 - lam) * J, with J another input image chosen by the seeded rule "
            "(partner drawn from the whole input list, never the image itself)",
            (Param("lam", 0.9, 0, 1, "weight of the original image"),),
            random=True,
        ),
    )
}

DEFAULT_SPEC = "affine:rot=0.5,scale=1.01,flip=1"


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
    """One perturbed view: which spec it comes from and its index among all views (the RNG key)."""

    index: int
    spec: Spec
    repeat: int

    @property
    def label(self) -> str:
        return f"{self.spec.kind.name}{self.repeat}" if not self.spec.deterministic else self.spec.kind.name


def plan_views(specs: list[Spec], views: int) -> list[View]:
    if views < 1:
        raise FiqaError("--views must be at least 1")
    if not specs:
        specs = [parse_spec(DEFAULT_SPEC)]
    plan: list[View] = []
    for spec in specs:
        for r in range(1 if spec.deterministic else views):
            plan.append(View(len(plan), spec, r))
    return plan


def view_rng(seed: int, image_id: str, view_index: int) -> np.random.Generator:
    """The generator for one (seed, image, view): independent of batch size, order, worker or device."""
    digest = hashlib.blake2b(f"{seed}\x1f{image_id}\x1f{view_index}".encode(), digest_size=16).digest()
    return np.random.Generator(np.random.Philox(key=int.from_bytes(digest, "little")))


def draw(spec: Spec, rng: np.random.Generator) -> dict[str, float]:
    """Concrete parameter values for one view: fixed values as given, ranges drawn uniformly."""
    out: dict[str, float] = {}
    for p in spec.kind.params:
        v = spec.values[p.name]
        if isinstance(v, tuple):
            v = float(rng.integers(int(v[0]), int(v[1]) + 1)) if p.integer else float(rng.uniform(v[0], v[1]))
        out[p.name] = v
    return out


def describe() -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    """(name, help, [(param, default, help)]) for every registered perturbation, for the CLI listing."""
    return [(k.name, k.help, [(p.name, f"{p.default:g}", p.help) for p in k.params]) for k in KINDS.values()]
