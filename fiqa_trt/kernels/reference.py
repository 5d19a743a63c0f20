"""NumPy reference for the quality kernel: L2-normalise, cosine of every view with its original, aggregate.

Accumulates in float64 whatever the input precision, so it is also the parity reference for faster kernels.
"""

from __future__ import annotations

import numpy as np

AGGREGATIONS = ("mean", "min", "median")


def quality(emb: np.ndarray, agg: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """emb: (N, 1+K, D), originals first -> (cosines (N, K) float32, quality (N,) float32).

    An all-zero embedding has no direction: its cosines (and so the quality) are NaN.
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {agg!r}; use one of {', '.join(AGGREGATIONS)}")
    if emb.ndim != 3 or emb.shape[1] < 2:
        raise ValueError(f"expected (N, 1+K, D) embeddings with K >= 1, got shape {emb.shape}")
    e = emb.astype(np.float64, copy=False)
    norms = np.linalg.norm(e, axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = e / norms[:, :, None]
        cos = np.einsum("nd,nkd->nk", unit[:, 0], unit[:, 1:])
    cos = np.clip(cos, -1.0, 1.0)
    reduce = {"mean": np.mean, "min": np.min, "median": np.median}[agg]
    q = reduce(cos, axis=1) if len(cos) else np.zeros(0)
    return cos.astype(np.float32), np.asarray(q, dtype=np.float32)
