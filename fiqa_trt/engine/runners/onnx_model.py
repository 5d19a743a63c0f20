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

    def with_preprocessing(self):
        """The graph with the model's normalisation prepended: input uint8 (N, H, W, 3), see `image_shape`."""
        c = self.config
        return onnx_graph.add_preprocessing(self.proto, c.input_size, c.mean, c.std, c.layout)



def open_onnx_model(path: str | os.PathLike, **overrides) -> OnnxModel:
    """Load and validate an ONNX FR model; `overrides` (color, mean, std) replace its config. FiqaError if unusable."""
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
        if not fixed_hw:
            raise FiqaError(f"{path}: the input size is not fixed in the graph ({hw}) and the model has no metadata")
        config = ModelConfig(input_size=tuple(hw), embedding_size=embedding, layout=layout, name=path.stem)
        if not any(v is not None for v in overrides.values()):
            log.warning("%s carries no preprocessing metadata and is not a known model: assuming the ArcFace "
                        "convention (RGB, (x - 127.5) / 127.5). Pass --color/--mean/--std if it differs.", path.name)
    config = config.with_overrides(**overrides)
    if config.layout != layout or (fixed_hw and tuple(config.input_size) != tuple(hw)):
        raise FiqaError(f"{path}: its config says {config.layout} {config.input_size}, the graph input is "
                        f"{fr.input_dims}")

    proto, batch_limit = _dynamic_batch(model, path, config)
    return OnnxModel(path, digest, proto, config, batch_limit)


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
