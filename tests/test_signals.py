"""A real `fiqa-trt score` process stopped by real signals: SIGTERM ends it as Ctrl-C does with the rows written
(Parquet row groups as batches finish), SIGKILL never destroys an earlier result, and --resume completes the run."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "faces"
ARGS = ["-b", "4", "-k", "4", "-p", "affine:rot=-3:3,flip=0.5", "-q"]  # keyed draws: resuming changes no score


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """204 face crops (the six example crops under 34 names each)."""
    folder = tmp_path_factory.mktemp("many")
    for i in range(34):
        for f in sorted(EXAMPLES.glob("*.png")):
            shutil.copy(f, folder / f"{f.stem}_{i:02d}.png")
    return folder


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fiqa_trt.cli", "score", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_rows(proc: subprocess.Popen, partial: Path, grow: int, timeout: float = 240) -> int:
    """Wait until the partial file has grown by `grow` bytes past its first size (batches written); its size."""
    deadline = time.monotonic() + timeout
    first = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be stopped: {proc.communicate()[1][-2000:]}")
        size = partial.stat().st_size if partial.exists() else None
        if size is not None and first is None:
            first = size
        if size is not None and size >= first + grow:
            return size
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no rows reached the partial file in time")


def rows(path: Path) -> dict[str, dict]:
    with path.open(newline="") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


def test_sigterm_writes_the_scored_rows_as_a_readable_parquet_file(many, random_model, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "scores.parquet"
    proc = start(many, "-m", random_model, "-o", out, *ARGS)
    wait_for_rows(proc, Path(str(out) + ".partial"), grow=2000)  # a few row groups
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err  # 128 + SIGTERM, as 130 for Ctrl-C
    assert "Traceback" not in err and "interrupted" in err
    table = pq.read_table(out)  # complete footer: a readable file
    assert 0 < table.num_rows < 204
    assert pq.ParquetFile(out).num_row_groups > 1
    assert table.column("quality").null_count == 0


def test_sigkill_keeps_the_earlier_result_and_resume_completes_the_run(many, random_model, tmp_path):
    reference = tmp_path / "reference.csv"
    done = subprocess.run([sys.executable, "-m", "fiqa_trt.cli", "score", str(many), "-m", str(random_model), "-o",
                           str(reference), *ARGS], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "scores.csv"
    partial = Path(str(out) + ".partial")
    killed = start(many, "-m", random_model, "-o", out, *ARGS)
    wait_for_rows(killed, partial, grow=1500)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert not out.exists() and partial.exists()  # nothing renamed; the rows so far are in the partial file
    from fiqa_trt.engine.sinks import read_rows

    kept = len(read_rows(partial)[1])  # whole rows (a row cut by the kill is dropped and scored again)
    assert 0 < kept < 204
    resumed = subprocess.run([sys.executable, "-m", "fiqa_trt.cli", "score", str(many), "-m", str(random_model),
                              "-o", str(out), "--resume", *ARGS[:-1]], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    assert f"({kept} already in" in " ".join(resumed.stderr.split()), resumed.stderr
    final = rows(out)
    assert final == rows(reference)  # every image once, with the scores of one uninterrupted run
    assert not partial.exists()
    before = out.read_bytes()
    again = start(many, "-m", random_model, "-o", out, *ARGS)  # a new run into the same file, killed at once
    wait_for_rows(again, partial, grow=500)
    again.send_signal(signal.SIGKILL)
    again.communicate(timeout=60)
    assert out.read_bytes() == before  # the complete earlier result is untouched
    os.remove(partial)


def test_a_killed_parquet_run_keeps_its_rows_in_its_journal(many, random_model, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "scores.parquet"
    partial, journal = Path(str(out) + ".partial"), Path(str(out) + ".journal")
    first = start(many, "-m", random_model, "-o", out, *ARGS)
    wait_for_rows(first, partial, grow=2000)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    from fiqa_trt.engine.sinks import read_rows

    kept = {r["path"]: r for r in read_rows(journal, "jsonl")[1]}  # the footer-less file's rows, in the journal
    assert 0 < len(kept) < 204
    resumed = subprocess.run([sys.executable, "-m", "fiqa_trt.cli", "score", str(many), "-m", str(random_model),
                              "-o", str(out), "--resume", *ARGS[:-1]], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    assert f"({len(kept)} already in" in " ".join(resumed.stderr.split()), resumed.stderr
    final = {r["path"]: r for r in pq.read_table(out).to_pylist()}
    assert sorted(final) == sorted(str(p) for p in many.iterdir())  # every image once
    for path, row in kept.items():  # the killed run's rows carried over unchanged (float32 through JSON and back)
        assert {k: row[k] for k in ("quality", "score", "error")} == {k: final[path][k] for k in ("quality", "score",
                                                                                                "error")}
    assert not partial.exists() and not journal.exists() and not Path(str(out) + ".lock").exists()


def test_a_second_writer_is_refused_in_one_line_before_its_model_loads(random_model, tmp_path):
    from fiqa_trt.engine.sinks import OutputLock

    out = tmp_path / "scores.csv"
    held = OutputLock(out)  # a run writing OUT: this process
    try:
        second = subprocess.run([sys.executable, "-m", "fiqa_trt.cli", "score", str(EXAMPLES), "-m",
                                 str(random_model), "-o", str(out)], capture_output=True, text=True, timeout=300)
    finally:
        held.release()
    assert second.returncode == 2, second.stderr
    message = " ".join(second.stderr.split())
    assert message == (f"error: {out} is being written by another run (process {os.getpid()}): wait for it to end, "
                       "or give another --out")  # the whole output: refused before anything else was done
    assert not out.exists() and not Path(str(out) + ".partial").exists()


def test_sigterm_during_a_long_batch_ends_the_run_within_seconds(random_model, tmp_path):
    """The producer thread is inside a batch that takes minutes (96 photos of 48 megapixels, each decoded and
    searched for a face): SIGTERM ends the run without waiting for it, writing what is done."""
    pytest.importorskip("dlib")
    cv2 = pytest.importorskip("cv2")
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(tmp_path / "large.jpg"), np.full((6000, 8000, 3), (90, 120, 150), np.uint8))
    for i in range(96):
        (folder / f"p{i:02d}.jpg").symlink_to(tmp_path / "large.jpg")
    out = tmp_path / "s.csv"
    proc = subprocess.Popen([sys.executable, "-m", "fiqa_trt.cli", "score", str(folder), "-m", str(random_model),
                             "--align", "-b", "96", "-o", str(out)], stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # the run has started scoring once it names its items
        lines.append(line)
        if " items, model " in line:
            break
    else:
        pytest.fail("".join(lines))
    time.sleep(1)  # inside the first batch
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=25)  # the batch alone takes minutes on these cores
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("still running 25 s after SIGTERM")
    err = "".join(lines) + proc.stderr.read()
    assert code == 143 and "Traceback" not in err, err
    assert "interrupted" in err and out.read_text().splitlines() == [",".join(
        ["path", "quality", "score", "cos_flip_rot0.5_scale1.01", "det_score", "box_left", "box_top", "box_right", "box_bottom",
         "error"])]  # nothing was done: the header, renamed onto OUT (no earlier result to keep)


def test_a_signal_ends_the_run_when_the_main_thread_is_stuck_in_native_code(random_model, tmp_path):
    """Once the first rows are written, a model call in the main thread never returns to Python
    (tests/hooks/stuck_call.py: signals blocked there, as in native code that does not return): SIGTERM still ends
    the process, with 143, 10 s after the signal, naming what is kept; --resume then completes the run from the
    partial file."""
    out = tmp_path / "s.csv"
    partial = Path(str(out) + ".partial")
    command = [sys.executable, "-m", "fiqa_trt.cli", "score", str(EXAMPLES), "-m", str(random_model), "--backend",
               "onnxruntime", "-b", "2", "-o", str(out), "-q"]
    from tests.hooks import hooked
    from tests.hooks.stuck_call import MARK

    proc, seen = hooked(command, "stuck_call", MARK, env={"FIQA_STUCK_AFTER": str(partial)})
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=60)  # the stuck call alone sleeps ten minutes
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("still running 60 s after SIGTERM")
    ended = time.monotonic() - signalled
    rest = proc.stderr.read()
    assert code == 143 and "Traceback" not in seen + rest, seen + rest
    assert 9 < ended < 40 and "did not end within 10 s of the signal" in rest, (ended, rest)
    kept = rows(partial)
    assert len(kept) >= 2 and not out.exists()
    resumed = subprocess.run(command[:-1] + ["--resume", "-q"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert len(rows(out)) == 6 and all(rows(out)[p] == r for p, r in kept.items())


def test_absurd_batch_sizes_and_view_counts_are_refused_before_any_work(random_model):
    from tests.cli_runner import run_cli

    proc = run_cli("score", EXAMPLES, "-m", random_model, "--views", "100000", "--batch-size", "100000",
                   "-p", "affine:rot=-3:3")
    assert proc.returncode == 2, proc.stderr
    message = " ".join(proc.stderr.split())
    assert "--batch-size 100000 x (1 + 100000 views) = 10000100000 images per batch need about" in message
    assert "(lower --batch-size or --views)" in message and "Traceback" not in proc.stderr
