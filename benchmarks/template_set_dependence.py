"""Whether an image's score depends on the other images of the run, through the template check (`--realign auto`,
each crop realigned by its own points): docs/guide/realignment.md.

    python benchmarks/template_set_dependence.py [--identities 60] [--out benchmarks/results/template_set_dependence.json]

The shared LFW crops of the first N identities with four or more images (at most 6 each) are scored by
`fiqa-trt score` with the shared MobileFaceNet and its default recipe, all together and then the first half of them
alone (a list file); the scores of that half are compared, with the two runs' template-check reports.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
LFW = SHARED / "data" / "lfw112"
MODEL = SHARED / "models/faceplugin-mobilefacenet/fr_feature.onnx"


def score(listing: Path, out: Path) -> tuple[dict[str, dict], str]:
    proc = subprocess.run([sys.executable, "-m", "fiqa_trt.cli", "score", str(listing), "-m", str(MODEL), "-o", str(out)],
                          capture_output=True, text=True, check=True)
    text = " ".join(proc.stderr.split())  # what the check did: the run's last line (wrapped by the console)
    report = text[text.rindex("template check per crop ("):] if "template check per crop (" in text else ""
    with open(out, newline="") as f:
        return {Path(r["path"]).relative_to(LFW).as_posix(): r for r in csv.DictReader(f)}, report


def main() -> None:
    from fiqa_trt.evaluation.protocols import identities

    ap = argparse.ArgumentParser()
    ap.add_argument("--identities", type=int, default=60)
    ap.add_argument("--out", default="benchmarks/results/template_set_dependence.json")
    args = ap.parse_args()
    keys = [k for ks in [ks for ks in identities(LFW).values() if len(ks) >= 4][: args.identities] for k in ks[:6]]
    half = keys[: len(keys) // 2]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, ks in (("all", keys), ("half", half)):
            (tmp / f"{name}.txt").write_text("\n".join(str(LFW / k) for k in ks) + "\n")
        everything, report_all = score(tmp / "all.txt", tmp / "all.csv")
        alone, report_half = score(tmp / "half.txt", tmp / "half.csv")
    moved = [abs(int(alone[k]["score"]) - int(everything[k]["score"])) for k in half]
    quality = [abs(float(alone[k]["quality"]) - float(everything[k]["quality"])) for k in half]
    from fiqa_trt.benchmark import provenance

    result = {"benchmark": "benchmarks/template_set_dependence.py", **provenance(), "images": len(keys), "half": len(half),
              "template_check_all": report_all, "template_check_half": report_half,
              "scores_changed": sum(m > 0 for m in moved), "largest_score_change": max(moved),
              "largest_quality_change": round(max(quality), 5)}
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
