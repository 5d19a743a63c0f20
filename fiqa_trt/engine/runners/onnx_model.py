"""Opening an ONNX FR model for any backend: validation, its ModelConfig, and an exact dynamic-batch version.

A model with a fixed batch is rewritten (`onnx_export.graph.make_batch_dynamic`) and the rewrite is accepted only
if ONNX Runtime gives the original's outputs sample by sample; otherwise backends run it `batch_limit` at a time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fiqa_trt.weights.model_config import ModelConfig
from fiqa_trt.files import sha256_of
from fiqa_trt.errors import FiqaError
from fiqa_trt.onnx_export import graph as onnx_graph

log = logging.getLogger("fiqa_trt")


@dataclass
class OnnxModel:
    path: Path
    sha256: str
    proto: "object"  # onnx.ModelProto, with a dynamic batch when that was possible
    config: ModelConfig
    batch_limit: int | None  # None: any batch size; else the fixed batch the graph must run at

    def image_shape(self) -> tuple[int, int, int]:
        """What runners take per sample: a decoded image, uint8 (H, W, 3) in the model's colour order."""
        h, w = self.config.input_size
        return (h, w, 3)

    def with_preprocessing(self, observers=None):
        """The graph with the model's normalisation prepended: input uint8 (N, H, W, 3), see `image_shape`; with
        `observers` (`onnx_export.observers.Observers`) also their output (the rewrite cached by the file's sha256)."""
        c = self.config
        return onnx_graph.add_preprocessing(self.observed(observers), c.input_size, c.mean, c.std, c.layout)

    def observed(self, observers=None):
        """The model's graph (dynamic batch where possible) with the observer output of `observers`, if any."""
        if observers is None:
            return self.proto
        from fiqa_trt.onnx_export.observers import observed_graph

        return observed_graph(self.proto, self.sha256, observers, {"batch_limit": self.batch_limit})

    def layers(self) -> list:
        """The observable layers of the model (`onnx_export.observers.catalogue`: recorded with its sha256)."""
        from fiqa_trt.onnx_export import observers

        if self.batch_limit is not None:  # a fixed batch that could not be made dynamic: its own batch is the axis
            proto, _ = onnx_graph.make_batch_dynamic(self.proto)
        else:
            proto = self.proto
        return observers.catalogue(proto, self.sha256)



def open_onnx_model(path: str | os.PathLike, **overrides) -> OnnxModel:
    """Load and validate an ONNX FR model; `overrides` (color, mean, std, input_size) replace its config. FiqaError
    if unusable."""
    from fiqa_trt.weights import registry

    path = Path(path)
    fr = onnx_graph.load_fr_graph(path)
    model, layout, hw, fixed_hw = fr.model, fr.layout, fr.hw, fr.fixed_size
    embedding = fr.output_dims[-1] if isinstance(fr.output_dims[-1], int) and fr.output_dims[-1] > 0 else 0
    digest = sha256_of(path)

    meta = onnx_graph.read_metadata(model)
    if meta is not None:
        config = ModelConfig.from_dict(meta, source="metadata")
    elif (known := registry.config_for(digest)) is not None:
        config = known
    else:
        if not fixed_hw and overrides.get("input_size") is None:
            raise FiqaError(f"{path}: the input size is not fixed in the graph ({hw}) and the model has no metadata: "
                            "give --input-size HEIGHTxWIDTH")
        config = ModelConfig(input_size=tuple(hw) if fixed_hw else tuple(overrides["input_size"]),
                             embedding_size=embedding, layout=layout, name=path.stem)
        if not any(v is not None for v in overrides.values()):
            log.warning("%s carries no preprocessing metadata and is not a known model: assuming the ArcFace "
                        "convention (RGB, (x - 127.5) / 127.5). Pass --color/--mean/--std if it differs.", path.name)
    config = config.with_overrides(**overrides)
    if config.layout != layout or (fixed_hw and tuple(config.input_size) != tuple(hw)):
        raise FiqaError(f"{path}: its config says {config.layout} {config.input_size}, the graph input is "
                        f"{fr.input_dims}")

    proto, batch_limit = _dynamic_batch(model, path, config)
    _check_outputs(proto, batch_limit, path, config)
    return OnnxModel(path, digest, proto, config, batch_limit)


def _check_outputs(proto, batch_limit: int | None, path: Path, config: ModelConfig) -> None:
    """FiqaError unless the model gives one embedding of at least 2 values per image, (N, D), and an image's
    embedding does not depend on the other images of its batch (checked with ONNX Runtime on random images: a
    batch against each image alone, or, for a fixed batch, against the same batch in reverse order)."""
    h, w = config.input_size
    shape = (3, h, w) if config.layout == "NCHW" else (h, w, 3)
    n = batch_limit or 3
    x = np.random.default_rng(1).standard_normal((n, *shape)).astype(np.float32)
    try:
        session = onnx_graph.ort_session(proto)
        name = session.get_inputs()[0].name
        batched = np.asarray(session.run(None, {name: x})[0], np.float64)
    except Exception as exc:
        raise FiqaError(f"ONNX Runtime cannot run {path.name}: {str(exc).splitlines()[0][:300]}") from None
    if batched.ndim < 2 or batched.shape[0] != n or batched[0].size < 2:
        raise FiqaError(f"{path.name}: its output for a batch of {n} images has the shape {batched.shape}; a face-"
                        f"recognition model gives one embedding per image, (N, D) with D >= 2")
    if n == 1:
        return
    if batch_limit is None:
        alone = np.concatenate([np.asarray(session.run(None, {name: x[i : i + 1]})[0], np.float64) for i in range(n)])
    else:
        alone = np.asarray(session.run(None, {name: x[::-1].copy()})[0], np.float64)[::-1]
    batched, alone = batched.reshape(n, -1), alone.reshape(n, -1)
    scale = max(float(np.abs(alone).max()), float(np.abs(batched).max()), 1e-12)
    worst = float(np.abs(batched - alone).max()) / scale
    if worst > 1e-3:
        raise FiqaError(f"{path.name}: an image's embedding changes with the other images of its batch (largest "
                        f"change {worst:.2g} of the largest value): the model mixes the batch (a mean or a "
                        "normalisation over it?), so its scores would depend on --batch-size")


def _dynamic_batch(model, path: Path, config: ModelConfig):
    fixed = onnx_graph.fixed_batch_size(model)
    if fixed is None:
        return model, None
    dynamic, rewritten = onnx_graph.make_batch_dynamic(model)
    h, w = config.input_size
    shape = (3, h, w) if config.layout == "NCHW" else (h, w, 3)
    try:
        original = onnx_graph.ort_session(model)
    except Exception as exc:
        raise FiqaError(f"ONNX Runtime cannot run {path.name}: {str(exc)[:300]}") from None
    x = np.random.default_rng(0).standard_normal((2 * fixed, *shape)).astype(np.float32)
    name = original.get_inputs()[0].name
    want = np.concatenate([original.run(None, {name: x[i : i + fixed]})[0] for i in range(0, 2 * fixed, fixed)])
    try:
        got = onnx_graph.ort_session(dynamic).run(None, {name: x})[0]
        exact = got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-4, atol=1e-5))
    except Exception:
        exact = False
    if not exact:
        log.warning("%s has a fixed batch of %d that could not be made dynamic exactly; running it %d at a time "
                    "(slower)", path.name, fixed, fixed)
        return model, fixed
    log.debug("%s: fixed batch %d made dynamic (%d reshape(s) rewritten, checked numerically)", path.name, fixed,
             rewritten)
    return dynamic, None
