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


def test_gpu_actors_need_gpus_in_the_cluster():
    from fiqa_trt.scaleout import _actor_device
    from fiqa_trt.errors import FiqaError

    assert _actor_device("cpu", 8, 2) == ("cpu", 0)
    assert _actor_device("auto", 0, 2) == ("cpu", 0)  # no GPU in the cluster: CPU actors
    assert _actor_device("auto", 4, 2) == ("auto", 1)  # GPUs: one per actor, each actor resolves auto itself
    assert _actor_device("cuda:1", 2, 2) == ("cuda", 1)  # Ray shows each actor its own card as cuda:0
    with pytest.raises(FiqaError, match="the Ray cluster has no GPU"):
        _actor_device("cuda", 0, 1)
    with pytest.raises(FiqaError, match="--workers 3 GPU actors need 3 GPUs; the Ray cluster has 2: use --workers 2"):
        _actor_device("cuda", 2, 3)


def test_ray_with_cuda_on_a_cluster_without_gpus_says_so(lfw_files, real_model, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fiqa_trt.cli", "score", str(lfw_files[0]), "--model", str(real_model),
                           "--out", str(tmp_path / "out"), "--ray", "--workers", "1", "--device", "cuda"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "the Ray cluster has no GPU" in proc.stderr and "Traceback" not in proc.stderr
