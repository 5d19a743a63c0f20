"""Scale-out scoring with Ray Data on a local Ray instance: the same scores as the single-process CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ray")


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "fiqa_trt.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc


def _table(path):
    import pyarrow.dataset as pads

    table = pads.dataset(str(path), format="parquet").to_table().to_pylist()
    return {row["path"]: row for row in table}


def test_two_ray_workers_give_the_single_process_scores(lfw_files, real_model, tmp_path):
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(str(f) for f in lfw_files[:500]) + "\n" + str(tmp_path / "missing.jpg") + "\n")
    spec = ["--perturb", "affine:rot=-2:2,scale=0.98:1.02,flip=0.5", "--views", "2", "--seed", "7",
            "--backend", "onnxruntime"]
    _cli("score", listing, "--model", real_model, "--out", tmp_path / "single.parquet", *spec)
    ray_out = tmp_path / "ray_out"
    first = _cli("score", listing, "--model", real_model, "--out", ray_out, "--ray", "--workers", "2", *spec)
    single, distributed = _table(tmp_path / "single.parquet"), _table(ray_out)
    assert set(single) == set(distributed) and len(single) == 501
    assert distributed[str(tmp_path / "missing.jpg")]["error"] == "file not found"
    for path, row in single.items():
        assert distributed[path] == row, path  # identical scores, cosines and errors
    q = np.array([r["quality"] for r in single.values() if r["quality"] is not None])
    assert len(q) == 500 and 0.8 < q.mean() < 1
    assert "scored" in first.stderr
    again = _cli("score", listing, "--model", real_model, "--out", ray_out, "--ray", "--workers", "2", *spec)
    assert "already done 501" in " ".join(again.stderr.split()), again.stderr
    assert len(_table(ray_out)) == 501  # nothing was scored twice
