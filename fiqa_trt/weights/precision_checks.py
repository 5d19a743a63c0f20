"""The records of reduced-precision ranking checks, per model file, and the precision `"auto"` chooses from them.

A reduced precision (bf16, fp16) is used automatically on the CPU only for a (model sha256, backend, precision)
whose quality scores were measured against fp32 with a Spearman rank correlation >= RANKING_THRESHOLD (the check is
`engine.precision.ranking_check`, run by `fiqa-trt bench`). Records come from the model registry (measured in this
repository, see benchmarks/results/) and from checks on the user's machine, stored in the user cache directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fiqa_trt.errors import FiqaError
from fiqa_trt.files import cache_dir

RANKING_THRESHOLD = 0.995


def _records_file() -> Path:
    return cache_dir() / "precision_checks.json"


def _load() -> dict:
    try:
        return json.loads(_records_file().read_text())
    except (OSError, ValueError):
        return {}


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


def choose(sha256: str, backend: str, supported: list[str], requested: str = "auto") -> tuple[str, str]:
    """(precision, why) for a CPU `backend` that runs the `supported` precisions: the requested one, or for
    "auto" the first reduced precision whose ranking check passed, else fp32."""

    if requested != "auto":
        if requested not in supported:
            raise FiqaError(f"{backend} on this CPU runs {', '.join(supported)}, not {requested}")
        return requested, "option --precision"
    for reduced in [p for p in supported if p != "fp32"]:
        if (rho := validated(sha256, backend, reduced)) is not None:
            return reduced, (f"auto: {backend} {reduced} kept the quality ranking (Spearman {rho:.4f} vs fp32, "
                             f">= {RANKING_THRESHOLD})")
    if len(supported) > 1:
        return "fp32", (f"auto: no passed ranking check of {', '.join(p for p in supported if p != 'fp32')} for "
                        "this model (fiqa-trt bench runs one)")
    return "fp32", f"auto: the only precision {backend} runs natively on this CPU"
