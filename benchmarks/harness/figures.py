"""The figures the quality benchmarks write from an `evaluation.report.evaluate` document."""

from __future__ import annotations


def npauc_figures(result: dict, by_pair: bool = False) -> dict:
    """Per method and target FMR key: the normalised pAUC@0.3 (`npauc30`), its 90% interval where bootstrapped
    (`npauc30_90`), and per compared pair (a, b) the 90% interval of a - b (`minus_90`: b, or with `by_pair`
    "a - b", -> FMR key -> [lo, hi]), rounded to 4 decimals."""
    from fiqa_trt.evaluation.report import fmr_key

    out: dict = {"npauc30": {}, "npauc30_90": {}, "minus_90": {}}
    for r in result["results"]:
        key = fmr_key(r["target_fmr"])
        out["npauc30"].setdefault(r["method"], {})[key] = round(r["pauc30_norm"], 4)
        if "pauc30_norm_lo" in r:
            out["npauc30_90"].setdefault(r["method"], {})[key] = [round(r["pauc30_norm_lo"], 4),
                                                                 round(r["pauc30_norm_hi"], 4)]
    for d in result["differences"]:
        if "lo" in d:
            out["minus_90"].setdefault(f"{d['a']} - {d['b']}" if by_pair else d["b"], {})[fmr_key(d["target_fmr"])] = [round(d["lo"], 4), round(d["hi"], 4)]
    return out
