"""Which reduced precisions keep a model's quality ranking: the records that `precision="auto"` consults.

A reduced precision (bf16, fp16) is used automatically only for a (model sha256, backend, precision) whose quality
scores were measured against fp32 with a Spearman rank correlation >= RANKING_THRESHOLD. Records come from the
model registry (measured in this repository, see benchmarks/results/) and from `fiqa-trt bench` runs on the user's
machine, stored in the user cache directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from fiqa_trt.files import cache_dir

RANKING_THRESHOLD = 0.995



def _records_file() -> Path:
    return cache_dir() / "precision_checks.json"


def _load() -> dict:
    try:
        return json.loads(_records_file().read_text())
    except (OSError, ValueError):
        return {}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties."""

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x), np.float64)
        r[order] = np.arange(len(x), dtype=np.float64)
        values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        sums = np.zeros(len(values))
        np.add.at(sums, inverse, r)
        return (sums / counts)[inverse]

    ra, rb = ranks(np.asarray(a, np.float64)), ranks(np.asarray(b, np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def record(sha256: str, backend: str, precision: str, rho: float, images: int, data: str) -> None:
    records = _load()
    records[f"{sha256}:{backend}:{precision}"] = {
        "spearman_vs_fp32": rho, "images": images, "data": data, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = _records_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=1, sort_keys=True))
    tmp.replace(path)


def validated(sha256: str, backend: str, precision: str) -> float | None:
    """The recorded Spearman if it keeps the ranking (>= RANKING_THRESHOLD), else None."""
    from fiqa_trt.weights import registry

    rho = _load().get(f"{sha256}:{backend}:{precision}", {}).get("spearman_vs_fp32")
    if rho is None and (record := registry.lookup(sha256)) is not None:
        rho = record.precision_checks.get(f"{backend}:{precision}")
    return rho if rho is not None and rho >= RANKING_THRESHOLD else None
