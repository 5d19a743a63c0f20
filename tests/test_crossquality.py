"""The realistic degradation kinds and the cross-quality protocol of `eval` (a seeded share of images degraded, the
evaluation on the images as they then are)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fiqa_trt.errors import FiqaError
from fiqa_trt.evaluation import degradations
from fiqa_trt.evaluation.crossquality import MANIFEST, CrossQuality, degraded_key, materialise

ASTRONAUT = Path(__file__).parents[1] / "examples/faces/astronaut.png"


def _crop() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB)


def _detail(im: np.ndarray) -> float:
    return float(np.abs(cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_64F)).mean())


def _error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).mean())


def test_realistic_kinds_grow_with_their_strength():
    crop = _crop()
    for kind in degradations.REALISTIC:
        out = [degradations.apply(crop, kind, degradations.parameters(kind, s), "k") for s in (0.0, 0.5, 1.0)]
        assert all(o.shape == crop.shape and o.dtype == np.uint8 for o in out)
        errors = [_error(o, crop) for o in out]
        assert 0 < errors[0] < errors[1] < errors[2], (kind, errors)  # farther from the face as the strength grows
    mean = {k: degradations.apply(crop, k, degradations.parameters(k, 1.0)).mean() for k in ("bright", "dark")}
    assert mean["bright"] > crop.mean() + 40 and mean["dark"] < crop.mean() / 3
    for kind in ("blur", "motion", "down", "downjpeg"):
        assert _detail(degradations.apply(crop, kind, degradations.parameters(kind, 1.0), "k")) < 0.5 * _detail(crop)
    with pytest.raises(ValueError, match="unknown realistic degradation 'fog'"):
        degradations.parameters("fog", 0.5)


def test_check_kinds_at_fixed_strengths_are_clearly_worse():
    crop = _crop()
    out = {k: degradations.degrade(crop, k, "astronaut", 0) for k in degradations.CAPTURE_KINDS}
    assert np.mean(out["bright"] == 255) > 0.2 and out["bright"].mean() > 1.5 * crop.mean()  # burnt out
    assert out["dark"].mean() < 0.3 * crop.mean()
    for kind in ("motion", "lowjpeg"):
        assert _detail(out[kind]) < 0.6 * _detail(crop), kind
    blocks = np.abs(np.diff(cv2.cvtColor(out["jpeg"], cv2.COLOR_RGB2GRAY).astype(np.float64), axis=1))
    assert blocks[:, 7::8].mean() > 1.5 * blocks.mean()  # 8 x 8 block edges
    np.testing.assert_array_equal(out["motion"], degradations.degrade(crop, "motion", "astronaut", 0))  # keyed angle
    assert not np.array_equal(out["motion"], degradations.degrade(crop, "motion", "another", 0))


def test_draws_are_per_image_and_seeded():
    setting = CrossQuality(0.5, seed=3)
    keys = [f"id{i // 4}/img_{i}.jpg" for i in range(2000)]
    plan = setting.plan(keys)
    assert 0.45 < len(plan) / len(keys) < 0.55
    assert {k for k, _ in plan.values()} == set(degradations.REALISTIC)
    assert all(0.0 <= s < 1.0 for _, s in plan.values())
    assert setting.plan(keys[::7]) == {k: v for k, v in plan.items() if k in set(keys[::7])}  # independent of the rest
    assert CrossQuality(0.5, seed=4).plan(keys) != plan
    assert len(CrossQuality(1.0).plan(keys)) == len(keys)
    assert set(k for k, _ in CrossQuality(0.5, kinds=("jpeg",)).plan(keys).values()) == {"jpeg"}
    with pytest.raises(FiqaError, match="share of degraded images"):
        CrossQuality(0.0)
    with pytest.raises(FiqaError, match="unknown fog"):
        CrossQuality(0.5, kinds=("fog",))
    assert degraded_key("Name/Name_0001.jpg", "blur") == "Name/Name_0001.blur.png"


def test_materialise_keeps_identities_and_reuses_the_folder(face_like, tmp_path):
    from fiqa_trt.evaluation.protocols import Pairs, identity_of

    root = tmp_path / "faces"
    keys = []
    for i, path in enumerate(face_like * 3):
        key = f"person{i % 3}/person{i % 3}_{i:04d}.png"
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(path.read_bytes())
        keys.append(key)
    keys.sort()
    a, b = np.array([0, 0, 1, 4]), np.array([1, 4, 2, 8])
    mated = np.array([identity_of(keys[i]) == identity_of(keys[j]) for i, j in zip(a, b)])
    pairs = Pairs(root, keys, a, b, mated, "test pairs")
    setting = CrossQuality(0.5, seed=1)
    out, counts = materialise(pairs, setting, tmp_path / "xq")
    plan = setting.plan(keys)
    assert 0 < len(plan) < len(keys) and sum(counts.values()) == len(plan)
    assert out.keys == sorted(out.keys) and out.root == tmp_path / "xq"
    for i, j, m in zip(out.a, out.b, out.mated):  # the same pairs, over the new keys
        assert (identity_of(out.keys[i]) == identity_of(out.keys[j])) == m
    originals = {degraded_key(k, plan[k][0]) if k in plan else k: k for k in keys}
    assert [originals[out.keys[i]] for i in out.a] == [keys[i] for i in a]
    for key in out.keys:
        path = out.root / key
        if originals[key] in plan:
            assert not path.is_symlink() and path.read_bytes()[:4] == b"\x89PNG"
        else:
            assert path.is_symlink() and path.read_bytes() == (root / key).read_bytes()
    manifest = (tmp_path / "xq" / MANIFEST).stat().st_mtime_ns
    materialise(pairs, setting, tmp_path / "xq")  # the same images and settings: reused
    assert (tmp_path / "xq" / MANIFEST).stat().st_mtime_ns == manifest
    other = CrossQuality(0.5, seed=2)
    materialise(pairs, other, tmp_path / "xq")  # another seed: the earlier degraded copies go
    stale = {degraded_key(k, d[0]) for k, d in plan.items()} - {degraded_key(k, d[0]) for k, d in
                                                                other.plan(keys).items()}
    assert stale and not any((tmp_path / "xq" / k).exists() for k in stale)
    assert json.loads((tmp_path / "xq" / MANIFEST).read_text())["seed"] == 2


def test_eval_runs_the_cross_quality_protocol(lfw, real_model, tmp_path):
    from tests.cli_runner import run_cli

    lines = (Path(lfw).parent / "lfw112_pairs.txt").read_text().splitlines()
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join([x for x in lines if x.endswith(",1")][:12] + [x for x in lines if x.endswith(",-1")][:12]))
    done = run_cli("eval", lfw, "--pairs", pairs, "--model", real_model, "--cross-quality",
                   "0.5", "--norm", "--no-plots", "--bootstrap", "0", "--realign", "off", "-q", "-o", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    tmp_path = tmp_path / "out"
    report = json.loads((tmp_path / "results.json").read_text())
    cross = report["settings"]["protocol"]["cross_quality"]
    assert cross["share"] == 0.5 and sum(cross["degraded"].values()) > 0
    rows = (tmp_path / "qualities.csv").read_text().splitlines()
    assert sum(".png" in r for r in rows) == sum(cross["degraded"].values())  # the degraded images were scored
    assert (tmp_path / "cross-quality" / MANIFEST).is_file()
