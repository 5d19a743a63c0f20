"""`score`, `serve` (an upload named like the file, over real HTTP on 127.0.0.1) and the gate's scoring of an
already-aligned crop (`Scorer.score_crops` of the session `fiqa-trt gate` opens) give the same qualities for the
same images and settings, with the model's default recipe: on crops that are on the model's template (the example
faces) and on crops the recipe realigns (the shared LFW crops, about 8 px off the ArcFace template)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli_runner import run_cli
from tests.conftest import LFW, MOBILEFACENET

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

ROOT = Path(__file__).resolve().parents[1]


def three_ways(folder: Path, model: Path, tmp_path: Path) -> tuple[dict, dict, dict]:
    """{file name: quality} from `score`, from `serve` and from the gate's scorer, with the default recipe."""
    import cv2

    from fiqa_trt.engine.session import open_session
    from fiqa_trt.engine.settings import ScoringSettings
    from tests.test_serve import Server

    files = sorted(folder.iterdir())
    out = tmp_path / "score.jsonl"
    done = run_cli("score", folder, "--model", model, "--out", out, "-q")
    assert done.returncode == 0, done.stderr
    scored = {Path(r["path"]).name: r["quality"] for r in map(json.loads, out.read_text().splitlines())}

    server = Server(["--model", str(model)], tmp_path / "server.log")
    try:
        served = {}
        for start in range(0, len(files), 8):
            answer = server.post([("image", (p.name, p.read_bytes(), "application/octet-stream"))
                                  for p in files[start : start + 8]])
            assert answer.status_code == 200, answer.text
            served |= {row["path"]: row["quality"] for row in answer.json()["images"]}
    finally:
        server.stop()

    gate = open_session(ScoringSettings(model=str(model))).scorer  # as `fiqa-trt gate` opens it
    crops = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in files]
    gated = dict(zip([p.name for p in files], map(float, gate.score_crops(crops, [p.name for p in files]))))
    return scored, served, gated


def agree(scored: dict, served: dict, gated: dict) -> None:
    names = sorted(scored)
    assert sorted(served) == names == sorted(gated)
    a, b, c = (np.array([d[n] for n in names], np.float64) for d in (scored, served, gated))
    assert np.all(np.isfinite(a))
    assert np.array_equal(a, b), np.abs(a - b).max()
    assert np.allclose(a, c, rtol=0, atol=1e-6), np.abs(a - c).max()  # score and gate: float32 vs float64 rows


def test_crops_on_the_template_score_alike(tmp_path):
    """The example faces are on the ArcFace template: nothing is realigned, by any of the three."""
    model = MOBILEFACENET if MOBILEFACENET.is_file() else None
    if model is None:
        pytest.skip("shared MobileFaceNet not available")
    agree(*three_ways(ROOT / "examples" / "faces", model, tmp_path))


def test_crops_off_the_template_score_alike(lfw, real_model, tmp_path):
    """Shared LFW crops sit about 8 px off the template: the default recipe realigns them, each as itself, in all
    three."""
    folder = tmp_path / "lfw"
    folder.mkdir()
    for p in sorted(LFW.glob("*/*.jpg"))[::700][:16]:
        (folder / p.name).write_bytes(p.read_bytes())
    agree(*three_ways(folder, real_model, tmp_path))


def test_eval_embeds_crops_off_the_template_as_score_does(lfw, real_model, tmp_path):
    """eval's one embedding pass realigns the crops as `score` does (verification embeddings included): its
    quality of the model's default recipe is score's for every crop of identity folders off the template."""
    import csv

    root = tmp_path / "ids"
    for person in [d for d in sorted(LFW.iterdir()) if len(list(d.glob("*.jpg"))) >= 3][:4]:
        (root / person.name).mkdir(parents=True)
        for p in sorted(person.glob("*.jpg"))[:3]:
            (root / person.name / p.name).write_bytes(p.read_bytes())
    runtime = ["--backend", "onnxruntime", "--precision", "fp32"]
    done = run_cli("score", root, "--model", real_model, *runtime, "--out", tmp_path / "score.csv", "-q")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "score.csv", newline="") as f:
        scored = {str(Path(r["path"]).relative_to(root)): float(r["quality"]) for r in csv.DictReader(f)}
    done = run_cli("eval", root, "--generate", "--model", real_model, *runtime, "--bootstrap", "0", "--no-plots",
                   "-q", "-o", tmp_path / "eval")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "eval" / "qualities.csv", newline="") as f:
        evaluated = {r["path"]: float(r["recipe:mobilefacenet-default"]) for r in csv.DictReader(f)}
    assert sorted(evaluated) == sorted(scored) and len(scored) == 12
    names = sorted(scored)
    assert np.allclose([evaluated[n] for n in names], [scored[n] for n in names], rtol=0, atol=1e-5), \
        max(abs(evaluated[n] - scored[n]) for n in names)
