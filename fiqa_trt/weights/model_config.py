"""ModelConfig: what a runner needs to feed an FR model (size, colour order, normalisation, layout).

It travels in the ONNX metadata (`onnx_export.graph.METADATA_KEY`); for known files without metadata it comes from
the model registry (`weights.registry`, keyed by sha256); otherwise from the graph's shapes plus the ArcFace
convention, announced to the user once. Users never type preprocessing flags for a known model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

from fiqa_trt.errors import FiqaError


@dataclass(frozen=True)
class ModelConfig:
    input_size: tuple[int, int]  # (height, width)
    color: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)  # in 0-255 pixel units, per channel of `color`
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    embedding_size: int = 512
    normalized_output: bool = False
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    name: str = "unknown"
    source: str = "graph"  # where this config came from: metadata, registry, graph (+ convention), user

    def __post_init__(self) -> None:
        if self.color not in ("RGB", "BGR"):
            raise FiqaError(f"colour order must be RGB or BGR, not {self.color!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise FiqaError(f"layout must be NCHW or NHWC, not {self.layout!r}")
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "mean", _triple(self.mean, "mean"))
        object.__setattr__(self, "std", _triple(self.std, "std"))
        if any(s <= 0 for s in self.std):
            raise FiqaError("std must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str) -> "ModelConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**{**known, "source": source})
        except TypeError as exc:
            raise FiqaError(f"invalid model config ({source}): {exc}") from exc

    def with_overrides(self, **overrides) -> "ModelConfig":
        """A copy with the given (not None) fields replaced; a colour order may be given in any case."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if isinstance(given.get("color"), str):
            given["color"] = given["color"].upper()
        return replace(self, **given, source="user") if given else self


def _triple(value, name: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    values = tuple(float(v) for v in value)
    if len(values) == 1:
        return values * 3
    if len(values) != 3:
        raise FiqaError(f"{name} needs 1 or 3 values, got {len(values)}")
    return values
