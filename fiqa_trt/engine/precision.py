"""The ranking check of a reduced precision: does it keep a model's quality ranking against fp32?

`ranking_check` scores the same images with the model in fp32 and in the reduced precision (the seed's stability
score, through `engine.session`), takes Spearman's rank correlation, and records a pass (`weights.precision_checks`),
after which `precision="auto"` runs that precision for that model file and backend (the resolver, `engine.resolve`,
and `load_runner` choose from the records). `fiqa-trt bench` runs it for every reduced precision it measures.
"""

from __future__ import annotations

import numpy as np

from fiqa_trt.weights.precision_checks import RANKING_THRESHOLD, choose, record, validated

__all__ = ["RANKING_THRESHOLD", "choose", "ranking_check", "record", "spearman", "validated"]


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


def ranking_check(reference, runner, items: list, data: str, batch_size: int = 32) -> dict:
    """The quality ranking of `runner` (a reduced precision) against `reference` (the same model in fp32) on
    `items`, scored with the seed's stability score: Spearman's rho, recorded when it passes (then `choose` takes
    that precision for "auto")."""
    from fiqa_trt.engine.perturbations import DEFAULT_SPEC
    from fiqa_trt.engine.session import open_session
    from fiqa_trt.engine.settings import ScoringSettings
    from fiqa_trt.errors import FiqaError

    if len(items) < 2:
        raise FiqaError(f"the ranking check needs at least 2 images, got {len(items)} (--ranking-images)")
    settings = ScoringSettings(perturb=(DEFAULT_SPEC,), batch_size=batch_size)

    def qualities(on) -> np.ndarray:
        return np.array([r.quality for r in open_session(settings, runner=on).scorer.score(items)])

    q_ref, q = qualities(reference), qualities(runner)
    rho = spearman(q_ref, q)
    passed = bool(rho >= RANKING_THRESHOLD)
    if passed:
        record(reference.sha256, runner.name, runner.precision, rho, len(items), str(data))
    return {"backend": runner.name, "precision": runner.precision, "images": len(items), "spearman_vs_fp32":
            round(rho, 5), "threshold": RANKING_THRESHOLD, "passed": passed,
            "max_abs_quality_difference": round(float(np.nanmax(np.abs(q - q_ref))), 5)}
