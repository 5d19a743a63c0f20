"""Batched cosine similarity of each perturbed view against its original, and the aggregation into a quality.

`quality(emb, agg)` takes (N, 1+K, D) embeddings, originals first, and returns per-view cosines (N, K) and
qualities (N,). NumPy arrays go to `reference`, CuPy arrays to `cuda` (one fused kernel, same signature).
"""

from __future__ import annotations

from fiqa_trt.kernels.reference import AGGREGATIONS, quality as _quality_reference


def quality(emb, agg: str = "mean"):
    import numpy as np

    if isinstance(emb, np.ndarray):
        return _quality_reference(emb, agg)
    if type(emb).__module__.startswith("cupy"):  # detected without importing cupy where it is absent
        from fiqa_trt.kernels.cuda import quality as _quality_cuda

        return _quality_cuda(emb, agg)
    raise TypeError(f"no quality kernel for arrays of type {type(emb).__module__}.{type(emb).__name__}")


__all__ = ["AGGREGATIONS", "quality"]
